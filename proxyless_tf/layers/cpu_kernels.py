"""Faster CPU training steps for MBConv networks, without changing the networks.

Why this exists: on 2 AVX2 cores (this project's reference machine, TF 2.21) a
training step of a searched Fashion-MNIST network spent most of its time in two
places that have nothing to do with the architecture:

* TensorFlow leaves its oneDNN kernels off on CPUs without AVX-512 / AMX, so
  convolutions and batch norm run on the slower Eigen kernels. `proxyless_tf`
  turns oneDNN on (`TF_ENABLE_ONEDNN_OPTS=1`, set in the package's `__init__`
  before TensorFlow loads, unless the user set the variable).
* oneDNN's depthwise filter gradient is slow when the kernel is larger than
  the feature map (a 7x7 kernel on the 4x4 maps of the last stages):
  45 ms per layer at batch 128 where the same sum written as one depthwise
  convolution over (batch x channels) takes 11 ms.
  `accelerate(model)` gives those layers a custom gradient that does that.
* Keras 3's `BatchNormalization` runs as separate moments/normalise ops;
  `accelerate` routes it through `tf.nn.fused_batch_norm` (same maths, moving
  statistics updated with the biased variance exactly as Keras does).

Nothing is added to the model: `accelerate` only rebinds `call` on layer
instances, so the saved `.keras` file, `get_config`, the weights and TFLite
export are those of the plain layers. `tools/bench_train_step.py` measures the
gain (a ratio per change, in one run).
"""

import os
import types

import keras
import tensorflow as tf

ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"


def onednn_enabled():
    """Whether TensorFlow's oneDNN kernels are on in this process.

    TF reads the variable once, when it loads: a program that imported TensorFlow before
    `proxyless_tf` runs without oneDNN whatever the variable says now, so ask TF itself.
    """
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:  # the private module moved: trust the environment
        return os.environ.get(ONEDNN_ENV, "") not in ("0", "false", "False")
    return bool(_pywrap_util_port.IsMklEnabled())


def _same_pads(size, kernel, stride):
    """TF's 'same' padding (before, after) along one axis (`kernel` an int or an int32 tensor)."""
    out = -(-size // stride)
    if isinstance(kernel, int):
        total = max((out - 1) * stride + kernel - size, 0)
    else:
        total = tf.maximum((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def depthwise_filter_grad(x, dy, kernel, stride):
    """d(loss)/d(depthwise kernel) of a 'same' depthwise conv, as one depthwise conv.

    dW[i, j, c] = sum_{b, oh, ow} xpad[b, s*oh + i, s*ow + j, c] * dy[b, oh, ow, c]: every
    (image, channel) pair is a channel of a single "image" xpad, correlated with its own
    dy map (dilated by the stride); the k x k result is then summed over the batch.
    Cheap exactly when the feature map is small and the kernel large. Returns (k, k, C, 1).
    `kernel` (the size k) may be an int32 tensor and C unknown when traced (a nested
    supernet's sampled candidate); the spatial sizes must be known.
    """
    _, h, w, c = x.shape
    if c is None:
        c = tf.shape(x)[3]
    oh, ow = dy.shape[1], dy.shape[2]
    ph, pw = _same_pads(h, kernel, stride), _same_pads(w, kernel, stride)
    xp = tf.pad(x, [[0, 0], list(ph), list(pw), [0, 0]])
    batch = tf.shape(x)[0]
    hp, wp = h + ph[0] + ph[1], w + pw[0] + pw[1]
    image = tf.reshape(tf.transpose(xp, [1, 2, 0, 3]), (1, hp, wp, batch * c))
    maps = tf.reshape(tf.transpose(dy, [1, 2, 0, 3]), (oh, ow, batch * c, 1))
    out = tf.nn.depthwise_conv2d(image, maps, [1, 1, 1, 1], "VALID", dilations=[stride, stride])
    out = tf.reshape(out[:, :kernel, :kernel, :], (kernel, kernel, batch, c))
    return tf.reduce_sum(out, axis=2)[..., None]


def depthwise_conv(x, kernel, stride, sizes=None):
    """'same' NHWC depthwise conv; where the kernel exceeds the output map (known when traced),
    its filter gradient is `depthwise_filter_grad` instead of TF's kernel.

    A kernel whose size is unknown when traced (a nested supernet's sampled candidate) is one
    of `sizes`: when only some of them exceed the map, the gradient picks the filter gradient
    by the size at run time (a `tf.cond`), so each candidate gets the one it would get alone."""
    k = kernel.shape[0]
    strides = [1, stride, stride, 1]
    h, w = x.shape[1], x.shape[2]
    if h is None or w is None:
        return tf.nn.depthwise_conv2d(x, kernel, strides, "SAME")
    oh, ow = -(-h // stride), -(-w // stride)
    exceeds = [s > oh and s > ow for s in ([k] if k is not None else sizes)]
    if not any(exceeds):
        return tf.nn.depthwise_conv2d(x, kernel, strides, "SAME")

    @tf.custom_gradient
    def conv(x, kernel):
        def grad(dy):
            dx = tf.nn.depthwise_conv2d_backprop_input(tf.shape(x), kernel, dy, strides, "SAME")
            if k is not None:
                return dx, depthwise_filter_grad(x, dy, k, stride)
            size = tf.shape(kernel)[0]
            if all(exceeds):
                return dx, depthwise_filter_grad(x, dy, size, stride)
            dw = tf.cond(tf.logical_and(size > oh, size > ow),
                         lambda: depthwise_filter_grad(x, dy, size, stride),
                         lambda: tf.nn.depthwise_conv2d_backprop_filter(x, tf.shape(kernel), dy, strides, "SAME"))
            return dx, dw

        return tf.nn.depthwise_conv2d(x, kernel, strides, "SAME"), grad

    return conv(x, tf.convert_to_tensor(kernel))  # a tensor, not the variable: the tape reaches it through the read


def _depthwise_call(self, inputs):
    return depthwise_conv(inputs, self.kernel, self.strides[0])


def _fused_bn_call(self, inputs, training=None, mask=None):
    """BatchNormalization.call through FusedBatchNormV3 (NHWC float32, no mask/renorm)."""
    if mask is not None or len(inputs.shape) != 4 or inputs.dtype != tf.float32:
        return type(self).call(self, inputs, training=training, mask=mask)
    c = inputs.shape[-1]
    gamma = self.gamma if self.scale else tf.ones((c,), inputs.dtype)
    beta = self.beta if self.center else tf.zeros((c,), inputs.dtype)
    if training and self.trainable:
        y, mean, var, *_ = tf.compat.v1.nn.fused_batch_norm(
            inputs, gamma, beta, epsilon=self.epsilon, is_training=True)
        n = tf.cast(tf.size(inputs) // c, inputs.dtype)
        var = var * (n - 1.0) / n  # the op returns the unbiased variance; Keras averages the biased one
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + var * (1.0 - self.momentum))
        return y
    y, _, _ = tf.compat.v1.nn.fused_batch_norm(
        inputs, gamma, beta, mean=self.moving_mean, variance=self.moving_variance,
        epsilon=self.epsilon, is_training=False)
    return y


def _depthwise_eligible(layer):
    k, st = layer.kernel_size, layer.strides
    return (layer.padding == "same" and layer.data_format == "channels_last" and k[0] == k[1]
            and st[0] == st[1] and tuple(layer.dilation_rate) == (1, 1) and layer.depth_multiplier == 1
            and not layer.use_bias and layer.activation in (None, keras.activations.linear))


def _bn_eligible(layer):
    return (layer.axis in (-1, 3) and not layer.renorm
            and not layer.synchronized and layer.dtype_policy.compute_dtype == "float32"
            and layer.epsilon >= 1.001e-5)


def accelerate(model):
    """Rebind `call` of the model's depthwise and BN layers (nested ones too); returns how many of each.

    Works on a supernet too: its candidates' BN layers are rebound and each `NestedMBConv`
    gets `depthwise_conv` for its kernel slices; each `MixedOp` is told which of the two its
    sampled block (`sampled.py`) must use. Besides the speed, the fused BN makes the supernet's
    traced graph smaller (one op for the statistics and one for their gradient per BN: 5 % of
    the step since the sampled op is one block, ~25 % when it was a switch over candidates).

    Depthwise layers keep TF's gradient unless the kernel exceeds their output map, which is
    decided from the static shapes when the step is traced. Only on CPU-only hosts with oneDNN on: on the Eigen
    kernels the fused BN gradient is the slow one (the same net: 586 ms a step plain, 780 ms
    accelerated; with oneDNN 489 and 380, `tools/bench_train_step.py`).
    """
    from proxyless_tf.layers import blocks, mixed_op, nested

    counts = {"depthwise": 0, "batchnorm": 0, "nested": 0}
    if not onednn_enabled() or tf.config.list_logical_devices("GPU"):  # CPU-only hosts: a GPU runs its own kernels
        return counts
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, mixed_op.MixedOp) and layer.nested is None:
            # the sampled block of its independent candidates (`sampled.py`) computes as their layers will
            parts = [mixed_op._mbconv_parts(op) for op in layer.ops if isinstance(op, blocks.MBConv)]
            if parts and all(type(p["dw"]) is keras.layers.DepthwiseConv2D and _depthwise_eligible(p["dw"])
                             for p in parts):
                layer.depthwise_fn = depthwise_conv
            layer.fused_bn = bool(parts) and all(
                type(b) is keras.layers.BatchNormalization and _bn_eligible(b)
                for p in parts for b in (p["expand_bn"], p["dw_bn"], p["project_bn"]) if b is not None)
        if isinstance(layer, nested.NestedMBConv):  # its candidates' depthwise convs, on kernel slices
            layer.depthwise_fn = depthwise_conv
            # its candidates' BN (concatenated variables, no BN layers) as the fused op computes it
            layer.fused_bn = layer.dtype_policy.compute_dtype == "float32" and layer.bn_eps >= 1.001e-5
            counts["nested"] += 1
        elif type(layer) is keras.layers.DepthwiseConv2D and _depthwise_eligible(layer):
            layer.call = types.MethodType(_depthwise_call, layer)
            counts["depthwise"] += 1
        elif type(layer) is keras.layers.BatchNormalization and _bn_eligible(layer):
            layer.call = types.MethodType(_fused_bn_call, layer)
            counts["batchnorm"] += 1
    return counts
