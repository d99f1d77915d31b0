"""Print trainable parameters and multiply-adds of architectures (default: the four published nets).

Usage: python tools/count_macs.py [ARCH.json ...] [--num_classes=1000] [--params]

The paper reports 320.4M / 465.3M / 439.2M / 580.9M multiply-adds for ProxylessNAS
mobile / GPU / CPU / mobile_14 at 224x224; this prints ours next to them.
"""

import glob
import os
import sys

from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from proxyless_tf import space as space_lib  # noqa: E402
from proxyless_tf import cli  # noqa: E402
from proxyless_tf.space.macs import count_macs  # noqa: E402

PUBLISHED_MMACS = {"proxyless_mobile": 320.4, "proxyless_gpu": 465.3, "proxyless_cpu": 439.2,
                   "proxyless_mobile_14": 580.9}

NUM_CLASSES = flags.DEFINE_integer("num_classes", 1000, "classifier width")
PARAMS = flags.DEFINE_bool("params", False, "also build each model and count trainable parameters")


def main(argv):
    space_lib.check_num_classes(NUM_CLASSES.value)
    paths = argv[1:] or sorted(glob.glob(os.path.join(ROOT, "configs", "archs", "proxyless_*.json")))
    print(f"{'architecture':28s} {'MMACs':>9s} {'published':>9s} {'diff %':>7s}" + (
        f" {'params':>11s}" if PARAMS.value else ""))
    for p in paths:
        arch = space_lib.Arch.from_json(p)
        mmacs = count_macs(arch, NUM_CLASSES.value) / 1e6
        name = os.path.splitext(os.path.basename(p))[0]
        pub = PUBLISHED_MMACS.get(name) if NUM_CLASSES.value == 1000 else None
        diff = f"{100 * (mmacs - pub) / pub:+7.2f}" if pub else f"{'':>7s}"
        line = f"{name:28s} {mmacs:9.1f} {pub if pub else '':>9} {diff}"
        if PARAMS.value:
            from proxyless_tf.models.nets import build_model
            model = build_model(arch, NUM_CLASSES.value)
            line += f" {sum(int(w.numpy().size) for w in model.trainable_weights):11,d}"
        print(line)


if __name__ == "__main__":
    cli.run(main)
