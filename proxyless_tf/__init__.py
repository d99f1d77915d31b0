"""ProxylessNAS for Keras 3: search on the target task and hardware, retrain, ship as TFLite."""

import os

# oneDNN kernels: TF turns them on only for CPUs with AVX-512/AMX; on AVX2 they make a training
# step ~1.5x faster (proxyless_tf/layers/cpu_kernels.py). Takes effect only if TensorFlow is not yet loaded.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from proxyless_tf import console  # noqa: E402

console.install()  # TensorFlow's own log lines off until --verbosity asks (console.py)

from proxyless_tf.errors import ConfigError  # noqa: E402
from proxyless_tf.space import Arch, SearchSpace, parse_op  # noqa: E402

__all__ = ["Arch", "ConfigError", "LatencyTable", "SearchSpace", "SuperNet", "build_model", "count_macs",
           "derive_toward_target", "load_model", "parse_op"]


def __getattr__(name):
    # Heavier parts load on first use so `import proxyless_tf` (and so every entry point that
    # only reads a JSON file) stays quick and can reject a bad file before TensorFlow loads.
    # Plain import statements, so tools/gen_build.py reads the facade's dependencies from them.
    if name == "build_model":
        from proxyless_tf.models.nets import build_model
        return build_model
    if name == "count_macs":
        from proxyless_tf.space.macs import count_macs
        return count_macs
    if name == "load_model":  # a retrained .keras starts with our Normalize layer: this registers it first
        from proxyless_tf.export.tflite import load_keras_model
        return load_keras_model
    if name == "LatencyTable":
        from proxyless_tf.latency.table import LatencyTable
        return LatencyTable
    if name == "SuperNet":
        from proxyless_tf.search.supernet import SuperNet
        return SuperNet
    if name == "derive_toward_target":
        from proxyless_tf.search.toward_target import derive_toward_target
        return derive_toward_target
    raise AttributeError(f"module 'proxyless_tf' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
