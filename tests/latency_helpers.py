"""Tiny search spaces and tables for the latency tests (fast to build and measure)."""

import json
import os

import proxyless_tf as pt

# 16x16x1 input, 3 searchable layers (two with 'zero'), 2 candidates: 7 table keys.
TINY_SPACE = {
    "name": "tiny",
    "input_shape": [16, 16, 1],
    "stem": {"out_channels": 8, "kernel": 3, "stride": 1},
    "first_block": {"op": "mb_k3_e1", "out_channels": 8},
    "stages": [{"width": 8, "depth": 2, "stride": 1}, {"width": 16, "depth": 1, "stride": 2}],
    "head": {"out_channels": 32},
    "candidates": ["mb_k3_e3", "mb_k5_e3"],
    "allow_zero": True,
    "bn_eps": 0.001,
}


def write_space(tmp_path, d=None, name="tiny_space.json"):
    path = os.path.join(str(tmp_path), name)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(d or TINY_SPACE, f)
    return path


def tiny_space(**changes):
    d = dict(TINY_SPACE, **changes)
    return pt.SearchSpace.from_dict(d, source="<tiny>")
