"""Turn the official ProxylessNAS Pixel 1 latency table into our LatencyTable JSON.

    python tools/import_proxyless_lut.py \
        --yaml=../shared/data/proxylessnas/mobile_trim.yaml \
        --space=configs/spaces/proxyless_mobile.json --out=configs/latency/pixel1_official.json

The result predicts, for any architecture of the mobile space, the official estimator's
sum of means (see proxyless_tf/latency/official.py for the key translation). Its output
for the defaults is committed as configs/latency/pixel1_official.json (the table
configs/mobile.flags names); tests/test_import_lut.py checks it equals a fresh import.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402

from proxyless_tf import cli  # noqa: E402

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS
flags.DEFINE_string("yaml", os.path.join(os.path.dirname(_ROOT), "shared", "data", "proxylessnas", "mobile_trim.yaml"),
                    "Official latency table (mobile_trim.yaml).")
flags.DEFINE_string("space", os.path.join(_ROOT, "configs", "spaces", "proxyless_mobile.json"), "Search space JSON.")
flags.DEFINE_integer("num_classes", 1000, "Classifier width of the head entry (the official table: 1000).")
flags.DEFINE_string("out", None, "Output LatencyTable JSON.")


def main(argv):
    if len(argv) > 1:
        from proxyless_tf.errors import ConfigError
        raise ConfigError("<command line>", "arguments", f"unexpected arguments {argv[1:]}", "pass only --flags")
    from proxyless_tf.errors import ConfigError
    from proxyless_tf.latency.official import import_table
    from proxyless_tf.space import SearchSpace, check_num_classes

    if not FLAGS.out:
        raise ConfigError("<flags>", "--out", "missing", "pass --out=TABLE.json")
    from proxyless_tf.files import check_output_path

    check_output_path(FLAGS.out)
    check_num_classes(FLAGS.num_classes)
    space = SearchSpace.from_json(FLAGS.space)
    table = import_table(FLAGS.yaml, space, FLAGS.num_classes)
    table.save(FLAGS.out)
    print(f"wrote {FLAGS.out}: {len(table)} entries for space {space.name!r}; "
          f"predicted range {table.latency_range(space)[0]:.2f}..{table.latency_range(space)[1]:.2f} ms")


if __name__ == "__main__":
    cli.run(main)
