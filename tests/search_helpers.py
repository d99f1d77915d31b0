"""Tiny spaces and synthetic latency tables shared by the search tests (fast on 2 cores)."""

import numpy as np

from proxyless_tf.latency import keys as keys_lib
from proxyless_tf.latency.table import LatencyStats, LatencyTable
from proxyless_tf.space import SearchSpace

from latency_helpers import TINY_SPACE

# The latency tests' tiny space, as RGB with a strided stem and a third candidate.
TINY = dict(TINY_SPACE, input_shape=[16, 16, 3], stem={"out_channels": 8, "kernel": 3, "stride": 2},
            candidates=["mb_k3_e3", "mb_k5_e3", "mb_k3_e6"])


MICRO = dict(TINY, name="micro", input_shape=[12, 12, 3],
             stages=[{"width": 8, "depth": 1, "stride": 1}, {"width": 16, "depth": 1, "stride": 2}],
             candidates=["mb_k3_e3", "mb_k5_e3"])


def micro_space(**over):
    """Two searchable layers (one with `zero`), two MBConv candidates: the fastest graph to trace."""
    d = dict(MICRO)
    d.update(over)
    return SearchSpace.from_dict(d)


def tiny_space(**over):
    d = dict(TINY)
    d.update(over)
    return SearchSpace.from_dict(d)


def synthetic_ms(key):
    """A made-up but monotone latency: fixed parts 1 ms, blocks 0.1 * k * e / 9 ms."""
    p = keys_lib.parse_key(key)
    if p["kind"] != "block":
        return 1.0
    k, e = (float(v) for v in p["op"][4:].split("_e"))
    return 0.1 * k * e / 9.0


def synthetic_table(space, num_classes, drop=()):
    entries = {k: LatencyStats(synthetic_ms(k), synthetic_ms(k), synthetic_ms(k), 10)
               for k in keys_lib.required_keys(space, num_classes) if k not in drop}
    return LatencyTable({"backend": "synthetic"}, entries, num_classes, space.name, space.fingerprint())


def tiny_search_data(space, n=64, batch=16, num_classes=4, seed=0):
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n,) + tuple(space.input_shape)).astype(np.float32)
    y = rng.integers(0, num_classes, n).astype(np.int32)
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)
    valid = tf.data.Dataset.from_tensor_slices((x[::-1], y[::-1])).batch(batch).repeat()
    return tf.data.Dataset.zip((train, valid))
