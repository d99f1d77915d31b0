"""A tiny Fashion-MNIST network, trained for seconds, shared by the train and export tests."""

import json
import os

TINY_FM_SPACE = {"name": "tiny_fm", "input_shape": [28, 28, 1], "stem": {"out_channels": 8, "kernel": 3, "stride": 2},
                 "first_block": {"op": "mb_k3_e1", "out_channels": 8},
                 "stages": [{"width": 16, "depth": 2, "stride": 2}], "head": {"out_channels": 32},
                 "candidates": ["mb_k3_e3", "mb_k5_e3"], "allow_zero": True, "bn_eps": 0.001}
TINY_FM_OPS = ["mb_k3_e3", "mb_k5_e3"]


def write_tiny_arch(directory):
    path = os.path.join(directory, "arch.json")
    with open(path, "w") as f:
        json.dump({"space": TINY_FM_SPACE, "ops": TINY_FM_OPS}, f)
    return path
