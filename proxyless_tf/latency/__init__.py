"""Latency tables: per-block measurements on a target device, prediction and its calibration."""

from proxyless_tf.latency.keys import arch_keys, block_key, head_key, required_keys, stem_key
from proxyless_tf.latency.table import LatencyStats, LatencyTable

__all__ = ["LatencyStats", "LatencyTable", "arch_keys", "block_key", "head_key", "required_keys", "stem_key"]
