"""What an app and a reviewer need next to every exported .tflite: checks and a sidecar.

`check_export` runs the converted model on real test images beside the Keras model
(agreement, accuracy, size); `sidecar` records how to feed it (input shape, dtype and
quantization, normalisation, labels) so an Android app needs nothing else.
"""

import numpy as np

from proxyless_tf.export import tflite as export


def check_export(content, keras_logits, x_test, y_test, source="<tflite>"):
    """Agreement of a TFLite flatbuffer with precomputed Keras logits on the same images."""
    interp = export.open_interpreter(content, source)
    tfl = export.predict_tflite(interp, x_test)
    res = export.agreement(keras_logits, tfl, y_test)
    res["size_bytes"] = len(content)
    res["accuracy_drop_points"] = 100.0 * (res["keras_accuracy"] - res["tflite_accuracy"])
    return res, export.io_description(interp)


def sidecar(model_file, mode, io, mean, std, labels, checks, dataset=None, raw_pixels=False):
    """The JSON an Android app reads: how to turn a photo into the input tensor, what comes out.

    `raw_pixels`: the model normalises itself (its first op is `Normalize`), so the app feeds
    pixel values 0..255 as they are; otherwise it applies the mean/std below first.
    """
    mean = [float(v) for v in np.atleast_1d(mean)]
    std = [float(v) for v in np.atleast_1d(std)]
    if raw_pixels:
        formula = ("x = pixel (0..255): the model normalises, (x / 255 - mean[c]) / std[c], itself; then, for "
                   "int8 input, q = round(x / input.quantization.scale + input.quantization.zero_point)")
    else:
        formula = ("x = (pixel / 255 - mean[c]) / std[c]; then, for int8 input, "
                   "q = round(x / input.quantization.scale + input.quantization.zero_point)")
    return {
        "model_file": model_file,
        "mode": mode,
        "input": dict(io["input"], pixels="raw 0..255" if raw_pixels else "normalised", mean=mean, std=std),
        "output": dict(io["output"], kind="logits"),
        "layout": "NHWC",
        "normalisation": {
            "in_model": bool(raw_pixels),
            "formula": formula,
            "pixel_range": [0, 255],
            "mean": mean,
            "std": std,
        },
        "labels": list(labels),
        "dataset": dataset,
        "checks": checks,
    }
