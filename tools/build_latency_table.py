"""Measure every block of a search space on one backend and write the latency table.

Usage:
  python tools/build_latency_table.py --space=configs/spaces/fashion_mnist.json \
      --backend=litert --threads=1 --num_classes=10 --out=run/latency_fashion_mnist.json

The file is rewritten (atomically) after every block, so killing the run and starting
the same command again continues where it stopped. --noresume starts over.
"""

import os
import sys

from absl import flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import latency_flags  # noqa: E402  (tools/ is on sys.path when run as a script)
from proxyless_tf import space as space_lib  # noqa: E402
from proxyless_tf import cli  # noqa: E402
from proxyless_tf.errors import ConfigError  # noqa: E402

SPACE = flags.DEFINE_string("space", None, "search space JSON")
OUT = flags.DEFINE_string("out", None, "latency table JSON to write (resumed if it exists)")
NUM_CLASSES = flags.DEFINE_integer("num_classes", 10, "classifier width of the head entry")
RESUME = flags.DEFINE_bool("resume", True, "continue an existing table at --out")
PROGRESS = flags.DEFINE_bool("progress", True, "show a progress bar")


def main(argv):
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        raise ConfigError("<command line>", "args", f"unexpected arguments {argv[1:]}", "pass only --flags")
    if not SPACE.value:
        raise ConfigError("<flags>", "--space", "missing", "pass --space=configs/spaces/NAME.json")
    if not OUT.value:
        raise ConfigError("<flags>", "--out", "missing", "pass --out=PATH.json")
    if NUM_CLASSES.value < 1:
        raise ConfigError("<flags>", "--num_classes", f"must be positive, got {NUM_CLASSES.value}", "pass e.g. 10")
    space_lib.check_output_path(OUT.value)
    space = space_lib.SearchSpace.from_json(SPACE.value)
    if RESUME.value and os.path.exists(OUT.value):  # a broken or foreign table fails before TensorFlow loads
        from proxyless_tf.latency.table import LatencyTable

        existing, fix = LatencyTable.load(OUT.value), f"delete {OUT.value} or pass another --out"
        if existing.space_fingerprint != space.fingerprint():
            raise ConfigError(OUT.value, "space.fingerprint", f"existing table is for space "
                              f"{existing.space_name!r}, not {space.name!r}", fix)
        if existing.num_classes != NUM_CLASSES.value:
            raise ConfigError(OUT.value, "num_classes", f"existing table's head is for {existing.num_classes} "
                              f"classes, not {NUM_CLASSES.value}", fix)
    backend = latency_flags.make_backend_from_flags()
    from proxyless_tf.latency.builder import build_table

    table = build_table(space, backend, OUT.value, NUM_CLASSES.value, progress=PROGRESS.value,
                        resume=RESUME.value)
    lo, hi = table.latency_range(space)
    print(f"wrote {OUT.value}: {len(table)} entries; predicted range {lo:.3f}-{hi:.3f} ms "
          f"({'calibrated' if table.calibration else 'raw block sums'})")


if __name__ == "__main__":
    cli.run(main)
