"""Quantization-aware training through tensorflow-model-optimization, in a child process.

TFMOT accepts only `tf_keras` (Keras 2) models, and importing it flips `tf.keras` to
Keras 2 for the whole process. So the parent (Keras 3) hands the child a bundle: the
architecture, the trained weights by layer name, and a few training images. The child
builds the `tf_keras` twin with the same `nets.build_model(..., ns=tf_keras)` (same layer
names and weight shapes), copies the weights, wraps it with `quantize_model`, fine-tunes
briefly and writes an int8 TFLite model. The parent process never imports TFMOT.

    python -m proxyless_tf.export.qat BUNDLE.npz OUT.tflite   (the child; not meant for users)
"""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from proxyless_tf.errors import ConfigError

CHILD_FAILED_FIX = "run the command again with --verbose to see the QAT process's log"


def _dropout_of(model):
    for layer in model.layers:
        if layer.__class__.__name__ == "Dropout":
            return float(layer.rate)
    return 0.0


def write_bundle(path, model, arch, x_train, y_train, settings, normalization=None):
    """Everything the child needs, in one .npz: weights by layer name, data, arch, settings.

    `normalization`: the (mean, std) of the model's `Normalize` layer (x_train then holds raw
    pixels), or None (x_train is normalised)."""
    arrays = {"x_train": np.asarray(x_train, np.float32), "y_train": np.asarray(y_train, np.int32)}
    names = []
    for layer in model.layers:
        for i, w in enumerate(layer.get_weights()):
            arrays[f"w/{layer.name}/{i}"] = w
        if layer.get_weights():
            names.append(layer.name)
    meta = {"arch": arch.to_dict(), "num_classes": int(model.output_shape[-1]), "dropout": _dropout_of(model),
            "layers": names, "settings": settings,
            "normalization": None if normalization is None else [list(map(float, normalization[0])),
                                                                 list(map(float, normalization[1]))]}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(path, **arrays)


def qat_tflite(model, arch, x_train, y_train, epochs=1, batch_size=64, lr=1e-3, label_smoothing=0.1,
               batch=1, seed=0, freeze_bn=True, verbose=False, timeout=3600, normalization=None):
    """Fine-tune `model` quantization-aware on (x_train, y_train) and return int8 TFLite bytes.

    The input and output stay float32 (quantize/dequantize at the edges), like PTQ int8
    with float I/O, so the two are directly comparable. With `freeze_bn` the BN layers
    keep their trained moving statistics (inference mode) during the short fine-tune:
    on Fashion-MNIST, re-estimating them from ~150 batches of 64 made QAT lose 0.12-0.17
    points against float where post-training int8 lost 0.10; frozen, QAT gained 0.13.

    `normalization` (mean, std): the model starts with `Normalize` and `x_train` holds raw
    pixels. The `tf_keras` twin has no such layer (TFMOT quantizes stock layers only): the
    child fine-tunes it on normalised images and puts the same multiply-add in front of the
    quantized model, so the `.tflite` takes raw pixels like every other export of the model.
    """
    settings = {"epochs": int(epochs), "batch_size": int(batch_size), "lr": float(lr),
                "label_smoothing": float(label_smoothing), "batch": int(batch), "seed": int(seed),
                "freeze_bn": bool(freeze_bn)}
    with tempfile.TemporaryDirectory(prefix="proxyless_qat_") as d:
        bundle, out = os.path.join(d, "bundle.npz"), os.path.join(d, "qat.tflite")
        write_bundle(bundle, model, arch, x_train, y_train, settings, normalization)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        proc = subprocess.run([sys.executable, "-m", "proxyless_tf.export.qat", bundle, out], env=env,
                              stdout=None if verbose else subprocess.PIPE,
                              stderr=None if verbose else subprocess.STDOUT, text=True, timeout=timeout)
        if proc.returncode != 0 or not os.path.exists(out):
            tail = (proc.stdout or "").strip().splitlines()[-1:] or ["no output"]
            raise ConfigError("<qat>", "tensorflow-model-optimization",
                              f"QAT child process failed (exit {proc.returncode}): {tail[0][:300]}", CHILD_FAILED_FIX)
        with open(out, "rb") as f:
            return f.read()


# ---- the child --------------------------------------------------------------------------

def _child(bundle_path, out_path):
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot  # flips tf.keras to Keras 2: child only
    import tf_keras

    from proxyless_tf.models.nets import build_model
    from proxyless_tf.space import Arch

    data = np.load(bundle_path)
    meta = json.loads(bytes(data["meta"]).decode())
    s = meta["settings"]
    tf_keras.utils.set_random_seed(s["seed"])
    arch = Arch.from_dict(meta["arch"])
    twin = build_model(arch, meta["num_classes"], dropout=meta["dropout"], ns=tf_keras)  # no Normalize layer
    copied = 0
    for name in meta["layers"]:
        layer = twin.get_layer(name)  # same builder, same names: a miss is a bug, so let it raise
        ws = [data[f"w/{name}/{i}"] for i in range(len(layer.get_weights()))]
        layer.set_weights(ws)
        copied += 1
    print(f"copied weights of {copied} layers into the tf_keras twin")
    if s.get("freeze_bn", True):
        for layer in twin.layers:
            if isinstance(layer, tf_keras.layers.BatchNormalization):
                layer.trainable = False  # tf_keras: a frozen BN also runs in inference mode

    q = tfmot.quantization.keras.quantize_model(twin)
    nc = meta["num_classes"]
    q.compile(optimizer=tf_keras.optimizers.SGD(s["lr"], momentum=0.9, nesterov=True),
              loss=tf_keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=s["label_smoothing"]),
              metrics=["accuracy"])
    x, y = data["x_train"], tf_keras.utils.to_categorical(data["y_train"], nc)
    norm = meta.get("normalization")
    if norm:  # the same folded formula as layers/preprocessing.py's Normalize
        std = np.asarray(norm[1], np.float64)
        scale = (1.0 / (255.0 * std)).astype(np.float32)
        offset = (-np.asarray(norm[0], np.float64) / std).astype(np.float32)
        x = (x * scale + offset).astype(np.float32)
    if s["epochs"] > 0:
        q.fit(x, y, batch_size=s["batch_size"], epochs=s["epochs"], verbose=2, shuffle=True)

    # Pin the batch, as the float exports do, by calling the QAT model on a fixed-shape input.
    inp = tf_keras.Input(batch_size=s["batch"], shape=x.shape[1:], name="image")
    h = inp * tf.constant(scale) + tf.constant(offset) if norm else inp  # raw pixels in, like the Keras model
    fixed = tf_keras.Model(inp, q(h, training=False))
    conv = tf.lite.TFLiteConverter.from_keras_model(fixed)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    content = conv.convert()
    with open(out_path, "wb") as f:
        f.write(content)
    print(f"wrote {out_path} ({len(content)} bytes)")


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2])
