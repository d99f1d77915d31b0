"""TF-runtime latency backend: the Keras model in a `tf.function`, at a batch, on a device.

Server targets run TensorFlow itself, usually batched (the paper's GPU latency is at
batch 8), so this backend times `model(x, training=False)` compiled once as a
`tf.function` on the chosen device ('/CPU:0', '/GPU:0'), with warm-up calls first (tracing,
autotuning) and a host sync (`.numpy()`) after every call so asynchronous GPU work is
counted. Entries are per batch, in milliseconds.
"""

import os
import platform

import numpy as np

from proxyless_tf.errors import ConfigError
from proxyless_tf.latency.backends import Backend, _now, _version, host_cpu_model, time_calls


class TFRuntimeBackend(Backend):
    """Time a Keras model in the TF runtime.

    Args:
        batch_size: batch of the timed input (the latency is of the whole batch).
        device: TF device string, e.g. '/CPU:0' or '/GPU:0'.
        warmup_runs: untimed calls (the first traces the function).
        num_runs: timed calls; the stats are their median and p5/p95.
    """

    name = "tf"
    statistic = "p5"  # what new tables read: the fast tail repeats where the median drifts (docs/latency.md)

    def __init__(self, batch_size=1, device="/CPU:0", warmup_runs=10, num_runs=50):
        if batch_size < 1 or warmup_runs < 0 or num_runs < 1:
            raise ConfigError("<flags>", "backend", f"bad tf settings batch_size={batch_size} "
                              f"warmup_runs={warmup_runs} num_runs={num_runs}",
                              "use batch_size>=1, warmup_runs>=0, num_runs>=1")
        self.batch_size = int(batch_size)
        self.device = str(device)
        self.warmup_runs = int(warmup_runs)
        self.num_runs = int(num_runs)
        self._check_device()

    def _check_device(self):
        import tensorflow as tf

        try:
            spec = tf.DeviceSpec.from_string(self.device)
        except ValueError:
            spec = None
        kinds = {d.device_type for d in tf.config.list_logical_devices()}
        if spec is None or (spec.device_type or "CPU").upper() not in kinds:
            raise ConfigError("<flags>", "device", f"{self.device!r} is not a device of this machine "
                              f"(have {sorted(kinds)})", "use --device=/CPU:0 or a listed GPU")
        idx = spec.device_index or 0
        n = len(tf.config.list_logical_devices(spec.device_type.upper()))
        if idx >= n:
            raise ConfigError("<flags>", "device", f"{self.device!r}: only {n} {spec.device_type} device(s)",
                              f"use an index below {n}")

    def describe(self):
        import tensorflow as tf

        gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
        return {
            "backend": self.name,
            "runtime": "TensorFlow tf.function (graph), float32",
            "device": self.device,
            "batch_size": self.batch_size,
            "warmup_runs": self.warmup_runs,
            "num_runs": self.num_runs,
            "timer": "time.perf_counter (wall, host-synchronised)",
            "tensorflow": _version("tensorflow"),
            "keras": _version("keras"),
            "host_cpu": host_cpu_model(),
            "gpus": gpus,
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
            "hostname": platform.node(),
            "date": _now(),
        }

    def measure(self, keras_model):
        import tensorflow as tf

        from proxyless_tf.latency.table import LatencyStats

        shape = (self.batch_size,) + tuple(keras_model.input_shape[1:])
        with tf.device(self.device):
            x = tf.constant(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
            fn = tf.function(lambda t: keras_model(t, training=False))
            samples = time_calls(lambda: fn(x).numpy(), self.warmup_runs, self.num_runs)
        return LatencyStats.from_samples(samples)
