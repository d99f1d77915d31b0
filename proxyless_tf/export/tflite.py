"""TFLite conversion of plain networks and the checks that the converted model agrees.

Models are converted with a fixed batch size, the one shape that both LiteRT on this
machine and `benchmark_model` on a phone run. Every quantization mode a phone app may
want is here (float32, float16, dynamic-range, full int8 with int8 or float I/O); the
quantization-aware path lives in `proxyless_tf.export.qat` because TFMOT needs Keras 2.
"""

import contextlib
import io
import os
import warnings

import keras
import numpy as np
import tensorflow as tf

from proxyless_tf.errors import ConfigError

MODES = ("float32", "float16", "dynamic", "int8")
TFLITE_IDENTIFIER = b"TFL3"
MAX_TFLITE_BYTES = 2 << 30  # a flatbuffer cannot be larger


def load_keras_model(path):
    """A saved .keras network, safe_mode on: stock layers and our registered `Normalize`, no code runs."""
    from proxyless_tf import readers
    from proxyless_tf.layers.preprocessing import Normalize  # the retrained models' first layer

    path = os.fspath(path)
    fix = "pass the .keras file saved by proxyless_tf.train"
    readers.check_regular(path, "model", fix=fix)
    if path.endswith(".keras"):  # keras would say "File not found" for a non-zip, and unpack a zip bomb
        readers.check_zip(path, ".keras archive", fix)
    try:
        # safe_mode explicit: never run code from a model file
        return keras.saving.load_model(path, safe_mode=True, custom_objects={"Normalize": Normalize})
    except Exception as e:  # keras raises many types for bad archives; the user needs one line
        first = str(e).splitlines()[0][:160] if str(e) else ""
        if "arbitrary code execution" in str(e):
            raise ConfigError(path, "<file>", "holds Python code (a Lambda layer) that safe_mode refuses to run",
                              "rebuild the network with proxyless_tf.build_model; our networks need no code") from None
        raise ConfigError(path, "<file>", f"cannot be loaded as a .keras model ({type(e).__name__}: {first})",
                          "re-save it with model.save()") from None


def _fixed_batch(model, batch_size):
    if model.input_shape[0] == batch_size:
        return model
    # Pin the batch dimension: benchmark_model and our timings run one fixed shape.
    inp = keras.Input(batch_shape=(batch_size,) + tuple(model.input_shape[1:]), name="image")
    return keras.Model(inp, model(inp, training=False), name=model.name)


def _run_converter(conv):
    # Converting a Keras 3 model goes through `model.export`, which prints its serving
    # signature and every captured variable (hundreds of lines for a searched network) to
    # stdout, in the middle of the tools' own reports; errors still surface as exceptions.
    # Full int8 adds a line the quantizer prints to fd 2 and, with int8 I/O, a UserWarning about
    # input statistics it does not need (the representative data calibrates them): both are
    # TensorFlow's own chatter, shown again with --verbosity (console.py).
    from proxyless_tf import console

    with contextlib.redirect_stdout(io.StringIO()), console.native_quiet(), warnings.catch_warnings():
        if console.is_quiet():
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        return conv.convert()


def to_tflite(model, batch_size=1):
    """Float32 TFLite flatbuffer (bytes) of a Keras model at a fixed batch size."""
    return _run_converter(tf.lite.TFLiteConverter.from_keras_model(_fixed_batch(model, batch_size)))


def convert(model, mode="float32", batch_size=1, representative=None, int8_io=False):
    """TFLite flatbuffer (bytes) of `model` in one quantization mode.

    Args:
        model: a plain Keras model (logits out).
        mode: "float32", "float16" (fp16 weights, float compute on CPU), "dynamic" (int8
            weights, float activations) or "int8" (full integer: weights and activations).
        batch_size: the fixed batch of the flatbuffer.
        representative: for "int8", float32 NHWC images from the *training* set whose
            ranges calibrate the activation quantization (a few hundred are enough).
        int8_io: for "int8", int8 input and output tensors (what NPUs/DSPs want) instead of
            float ones with quantize/dequantize ops at the edges.
    """
    if mode not in MODES:
        raise ConfigError("<export>", "mode", f"unknown mode {mode!r}", f"use one of {MODES}")
    if mode == "float32":
        return to_tflite(model, batch_size)
    conv = tf.lite.TFLiteConverter.from_keras_model(_fixed_batch(model, batch_size))
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        conv.target_spec.supported_types = [tf.float16]
    elif mode == "int8":
        if representative is None or len(representative) < batch_size:
            raise ConfigError("<export>", "representative", "full int8 needs representative training images",
                              "pass images from the training split")
        rep = np.asarray(representative, np.float32)

        def gen():
            for i in range(0, len(rep) - batch_size + 1, batch_size):
                yield [rep[i:i + batch_size]]

        conv.representative_dataset = gen
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
    return _run_converter(conv)


def check_flatbuffer(content, source="<tflite>"):
    """Reject what is not a TFLite flatbuffer before LiteRT sees it (garbage can crash it)."""
    if len(content) < 8 or content[4:8] != TFLITE_IDENTIFIER:
        raise ConfigError(source, "<file>", "is not a TFLite model (no TFL3 identifier; truncated or corrupt?)",
                          "re-export it with tools/export_tflite.py")


def read_tflite(path):
    """Bytes of a .tflite file, with one clear line for a missing or corrupt file."""
    from proxyless_tf import readers

    path = os.fspath(path)
    content = readers.read_bytes(path, "TFLite model", max_bytes=MAX_TFLITE_BYTES)
    check_flatbuffer(content, path)
    return content


def load_interpreter(model_content=None, model_path=None, num_threads=1):
    """LiteRT interpreter (XNNPACK) with tensors allocated."""
    from ai_edge_litert.interpreter import Interpreter

    from proxyless_tf import console

    with console.native_quiet():  # the runtime's "Created TensorFlow Lite XNNPACK delegate" line
        interp = Interpreter(model_content=model_content, model_path=model_path, num_threads=num_threads)
        interp.allocate_tensors()
    return interp


def open_interpreter(content, source="<tflite>", num_threads=1):
    """load_interpreter for user files: a flatbuffer LiteRT refuses becomes one ConfigError line."""
    check_flatbuffer(content, source)
    try:
        return load_interpreter(model_content=content, num_threads=num_threads)
    except (ValueError, RuntimeError) as e:
        raise ConfigError(source, "<file>", f"LiteRT cannot load it ({str(e).splitlines()[0][:200]})",
                          "re-export it with tools/export_tflite.py") from None


def run_tflite(interp, x):
    """One inference on a LiteRT interpreter whose input batch matches x."""
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    interp.set_tensor(inp["index"], x.astype(inp["dtype"]))
    interp.invoke()
    return interp.get_tensor(out["index"])


def _quantize(x, detail):
    scale, zp = detail["quantization"]
    if detail["dtype"] in (np.int8, np.uint8) and scale:
        info = np.iinfo(detail["dtype"])
        return np.clip(np.round(x / scale + zp), info.min, info.max).astype(detail["dtype"])
    return x.astype(detail["dtype"])


def _dequantize(y, detail):
    scale, zp = detail["quantization"]
    if detail["dtype"] in (np.int8, np.uint8) and scale:
        return (y.astype(np.float32) - zp) * scale
    return y.astype(np.float32)


def predict_tflite(interp, x):
    """Float logits for all of x (N may be any multiple of the model's batch), int8 I/O handled."""
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    b = int(inp["shape"][0])
    if len(x) % b:
        raise ValueError(f"{len(x)} images is not a multiple of the model batch {b}")
    outs = []
    for i in range(0, len(x), b):
        interp.set_tensor(inp["index"], _quantize(np.asarray(x[i:i + b], np.float32), inp))
        interp.invoke()
        outs.append(_dequantize(interp.get_tensor(out["index"]), out))
    return np.concatenate(outs)


def agreement(keras_logits, tflite_logits, labels=None):
    """How far a converted model is from Keras: max |logit diff|, top-1 agreement, accuracies."""
    k, t = np.asarray(keras_logits, np.float32), np.asarray(tflite_logits, np.float32)
    kt, tt = k.argmax(-1), t.argmax(-1)
    res = {"n": int(len(k)), "max_abs_logit_diff": float(np.abs(k - t).max()),
           "top1_agreement": float((kt == tt).mean())}
    if labels is not None:
        labels = np.asarray(labels)
        res["keras_accuracy"] = float((kt == labels).mean())
        res["tflite_accuracy"] = float((tt == labels).mean())
    return res


def io_description(interp):
    """Input/output tensor facts an app needs (shape, dtype, quantization), from the interpreter."""
    def one(d):
        scale, zp = d["quantization"]
        q = {"scale": float(scale), "zero_point": int(zp)} if scale else None
        return {"name": d["name"], "shape": [int(v) for v in d["shape"]],
                "dtype": np.dtype(d["dtype"]).name, "quantization": q}
    return {"input": one(interp.get_input_details()[0]), "output": one(interp.get_output_details()[0])}
