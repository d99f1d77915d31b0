"""Plain networks from an Arch: built-in Keras layers only, nothing of the search in them.

Because every layer is a stock Keras layer (plus, for a retrained model, the constant
`Normalize` layer in front, `layers/preprocessing.py`), the model exports to TFLite, loads
from `.keras` with safe_mode on and can be rebuilt layer-for-layer in `tf_keras` for
quantization-aware training (`ns=tf_keras`).
"""

import keras

from proxyless_tf.layers import blocks
from proxyless_tf import space as space_lib


def _stem(ns, space, x):
    st = space.stem
    return blocks.apply_layers(
        blocks.conv_bn_act_layers(ns, st["out_channels"], st["kernel"], st["stride"], space.bn_eps, "stem"), x)


def _mbconv(ns, x, in_ch, out_ch, op, stride, bn_eps, name):
    spec = space_lib.parse_op(op)
    y = blocks.apply_layers(
        blocks.mbconv_layers(ns, in_ch, out_ch, spec.kernel, spec.expand, stride, bn_eps, name), x)
    if stride == 1 and in_ch == out_ch:
        y = ns.layers.Add(name=f"{name}_add")([x, y])
    return y


def _head(ns, space, x, num_classes, dropout):
    x = blocks.apply_layers(
        blocks.conv_bn_act_layers(ns, space.head["out_channels"], 1, 1, space.bn_eps, "head"), x)
    x = ns.layers.GlobalAveragePooling2D(name="pool")(x)
    if dropout:
        x = ns.layers.Dropout(dropout, name="dropout")(x)
    return ns.layers.Dense(num_classes, name="classifier")(x)


def build_model(arch, num_classes, dropout=0.0, ns=keras, name=None, normalization=None):
    """The network an Arch describes, as a functional model returning logits.

    Args:
        arch: a `proxyless_tf.Arch`.
        num_classes: classifier width.
        dropout: dropout rate before the classifier (official nets: 0 at search, 0.1 at retrain).
        ns: the Keras namespace to build with (`keras`, or `tf_keras` for the QAT twin).
        name: model name; defaults to the space name.
        normalization: (mean, std) per channel of [0, 1] pixels: a `Normalize` layer first, so
            the model takes raw pixels 0..255 (retrained models); None: normalised input.
            Keras 3 only (the QAT child adds the same two ops to its twin itself).
    """
    space = arch.space
    inputs = ns.Input(shape=space.input_shape, name="image")
    x = inputs
    if normalization is not None:
        if ns is not keras:
            raise ValueError("normalization= builds a Keras 3 layer; the tf_keras twin takes normalised input")
        from proxyless_tf.layers.preprocessing import Normalize

        x = Normalize(*normalization, name="normalize")(x)
    x = _stem(ns, space, x)
    fb = space.first_block
    x = _mbconv(ns, x, space.stem["out_channels"], fb["out_channels"], fb["op"], 1, space.bn_eps, "block0")
    for layer, op in zip(space.layers, arch.ops):
        if op == space_lib.ZERO:
            continue  # identity: the residual block without its branch
        x = _mbconv(ns, x, layer.in_channels, layer.out_channels, op, layer.stride, space.bn_eps,
                    f"layer{layer.index}")
    logits = _head(ns, space, x, num_classes, dropout)
    return ns.Model(inputs, logits, name=name or f"{space.name}_net")


# ---- single pieces, for measuring latency block by block ---------------------------------

def build_block_model(in_hw, in_channels, op, stride, out_channels, bn_eps=1e-3, ns=keras):
    """One MBConv block (with its residual where shapes allow) as a tiny model of batch 1."""
    inputs = ns.Input(shape=(in_hw[0], in_hw[1], in_channels), batch_size=1, name="x")
    y = _mbconv(ns, inputs, in_channels, out_channels, op, stride, bn_eps, "block")
    return ns.Model(inputs, y, name="block")


def build_stem_model(space, ns=keras):
    inputs = ns.Input(shape=space.input_shape, batch_size=1, name="image")
    return ns.Model(inputs, _stem(ns, space, inputs), name="stem")


def build_head_model(space, num_classes, ns=keras):
    h, w = space.final_hw
    inputs = ns.Input(shape=(h, w, space.final_channels), batch_size=1, name="x")
    return ns.Model(inputs, _head(ns, space, inputs, num_classes, 0.0), name="head")
