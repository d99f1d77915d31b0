"""`Normalize`: the dataset's normalisation as the first layer of a retrained network.

Why a layer and not a note in the sidecar: an app (and `tools/export_tflite.py`) then feeds
the `.keras` and the `.tflite` raw pixels, 0..255, and cannot get the mean/std wrong. The
formula is `proxyless_tf.data.preprocess.normalize`'s, `(x / 255 - mean) / std`, folded
into one multiply and one add per channel (what TFLite runs fastest, and what full-integer
quantization calibrates as two ordinary ops). The constants are Python floats in the
config, not weights: parameter counts, checkpoints and the `tf_keras` twin of QAT are those
of the network without it.
"""

import keras
import numpy as np

from proxyless_tf.errors import ConfigError


def check_normalization(mean, std, channels=None, source="<normalization>"):
    """(mean, std) as tuples of finite floats, std > 0, one per channel: one error line otherwise."""
    try:
        mean = tuple(float(v) for v in np.atleast_1d(np.asarray(mean, np.float64)))
        std = tuple(float(v) for v in np.atleast_1d(np.asarray(std, np.float64)))
    except (TypeError, ValueError):
        raise ConfigError(source, "mean/std", "expected numbers, one per channel",
                          "pass (mean, std) as lists of floats") from None
    if len(mean) != len(std) or not mean:
        raise ConfigError(source, "mean/std", f"{len(mean)} means and {len(std)} stds",
                          "give one mean and one std per channel")
    if channels is not None and len(mean) not in (1, channels):
        raise ConfigError(source, "mean/std", f"{len(mean)} values for {channels} channels",
                          "give one mean and one std per channel")
    if not all(np.isfinite(mean)) or not all(np.isfinite(std)) or min(std) <= 0:
        raise ConfigError(source, "mean/std", f"mean {mean}, std {std}: need finite values and std > 0",
                          "compute them from the training images")
    return mean, std


@keras.saving.register_keras_serializable(package="proxyless_tf")
class Normalize(keras.layers.Layer):
    """Raw pixels (float, 0..255) in, `(x / 255 - mean[c]) / std[c]` out, per channel."""

    def __init__(self, mean, std, **kwargs):
        super().__init__(**kwargs)
        self.mean, self.std = check_normalization(mean, std, source=f"<layer {self.name}>")
        std = np.asarray(self.std, np.float64)
        self._scale = (1.0 / (255.0 * std)).astype(np.float32)
        self._offset = (-np.asarray(self.mean, np.float64) / std).astype(np.float32)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is not None and len(self.mean) not in (1, channels):
            raise ConfigError(f"<layer {self.name}>", "mean/std", f"{len(self.mean)} values for "
                              f"{channels} input channels", "give one mean and one std per channel")

    def call(self, x):
        x = keras.ops.cast(x, self.compute_dtype)
        return x * keras.ops.cast(self._scale, x.dtype) + keras.ops.cast(self._offset, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return dict(super().get_config(), mean=list(self.mean), std=list(self.std))
