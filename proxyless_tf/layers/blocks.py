"""The layers every network is made of: conv-BN-ReLU6, MBConv and the zero op.

The layer lists are built by functions that take the Keras namespace (`keras` or
`tf_keras`) as an argument, so the plain network, the supernet's candidates and the
`tf_keras` twin used for quantization-aware training are made by one piece of code and
carry identical layer names and weight shapes.
"""

import keras

from proxyless_tf import space as space_lib

BN_MOMENTUM = 0.9  # PyTorch momentum 0.1 in the official code


def _conv_init(ns):
    # Kaiming fan-out, as the official ProxylessNAS code initialises convolutions.
    return ns.initializers.VarianceScaling(scale=2.0, mode="fan_out", distribution="truncated_normal")


def conv_bn_act_layers(ns, filters, kernel, stride, bn_eps, name, act=True):
    """[Conv2D, BN, (ReLU6)] for the stem and the 1x1 feature-mix head."""
    out = [
        ns.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                         kernel_initializer=_conv_init(ns), name=f"{name}_conv"),
        ns.layers.BatchNormalization(epsilon=bn_eps, momentum=BN_MOMENTUM, name=f"{name}_bn"),
    ]
    if act:
        out.append(ns.layers.ReLU(max_value=6.0, name=f"{name}_relu"))
    return out


def mbconv_layers(ns, in_channels, out_channels, kernel, expand, stride, bn_eps, name):
    """The inverted-residual branch: expand 1x1 -> depthwise kxk -> project 1x1 (no residual).

    With expand ratio 1 there is no expansion conv, as in MobileNetV2 and the official code.
    """
    mid = space_lib.expanded_channels(in_channels, expand)
    out = []
    if expand != 1:
        out += [
            ns.layers.Conv2D(mid, 1, use_bias=False, kernel_initializer=_conv_init(ns),
                             name=f"{name}_expand"),
            ns.layers.BatchNormalization(epsilon=bn_eps, momentum=BN_MOMENTUM, name=f"{name}_expand_bn"),
            ns.layers.ReLU(max_value=6.0, name=f"{name}_expand_relu"),
        ]
    out += [
        ns.layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                                  depthwise_initializer=_conv_init(ns), name=f"{name}_dw"),
        ns.layers.BatchNormalization(epsilon=bn_eps, momentum=BN_MOMENTUM, name=f"{name}_dw_bn"),
        ns.layers.ReLU(max_value=6.0, name=f"{name}_dw_relu"),
        ns.layers.Conv2D(out_channels, 1, use_bias=False, kernel_initializer=_conv_init(ns),
                         name=f"{name}_project"),
        ns.layers.BatchNormalization(epsilon=bn_eps, momentum=BN_MOMENTUM, name=f"{name}_project_bn"),
    ]
    return out


def strided_shape(input_shape, stride, out_channels):
    """(B, H, W, C) after a 'same'-padded op of `stride` with `out_channels` (unknown sizes stay None)."""
    b, h, w, _ = input_shape
    h = None if h is None else space_lib.conv_output_size(h, stride)
    w = None if w is None else space_lib.conv_output_size(w, stride)
    return (b, h, w, out_channels)


def apply_layers(layer_list, x, training=None):
    for layer in layer_list:
        if isinstance(layer, keras.layers.BatchNormalization):
            x = layer(x, training=training)
        else:
            x = layer(x)
    return x


@keras.saving.register_keras_serializable(package="proxyless_tf")
class MBConv(keras.layers.Layer):
    """An MBConv op as one layer, for the supernet where each candidate must be one object.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel: depthwise kernel size.
        expand: expansion ratio; the depthwise width is round(in_channels * expand).
        stride: depthwise stride (1 or 2).
        bn_eps: batch-norm epsilon.
        residual: add the input to the output (only valid for stride 1 and equal channels).
            The supernet's MixedOp adds the shortcut itself and passes False.
    """

    def __init__(self, in_channels, out_channels, kernel, expand, stride, bn_eps=1e-3,
                 residual=False, **kwargs):
        super().__init__(**kwargs)
        if residual and not (stride == 1 and in_channels == out_channels):
            raise ValueError("residual needs stride 1 and in_channels == out_channels")
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel = int(kernel)
        self.expand = float(expand)
        self.stride = int(stride)
        self.bn_eps = float(bn_eps)
        self.residual = bool(residual)
        self.branch = mbconv_layers(keras, self.in_channels, self.out_channels, self.kernel,
                                    self.expand, self.stride, self.bn_eps, self.name)

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.branch:
            layer.build(shape)
            shape = tuple(layer.compute_output_shape(shape))
        self.built = True

    def call(self, inputs, training=None):
        y = apply_layers(self.branch, inputs, training)
        return inputs + y if self.residual else y

    def compute_output_shape(self, input_shape):
        return strided_shape(input_shape, self.stride, self.out_channels)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(in_channels=self.in_channels, out_channels=self.out_channels, kernel=self.kernel,
                   expand=self.expand, stride=self.stride, bn_eps=self.bn_eps, residual=self.residual)
        return cfg


@keras.saving.register_keras_serializable(package="proxyless_tf")
class ZeroOp(keras.layers.Layer):
    """The `zero` candidate: outputs zeros, so with the shortcut the block is identity.

    Args:
        out_channels: channels of the (zero) output.
        stride: spatial stride of the layer it stands in for.
    """

    def __init__(self, out_channels, stride=1, **kwargs):
        super().__init__(**kwargs)
        self.out_channels = int(out_channels)
        self.stride = int(stride)

    def call(self, inputs):
        x = inputs[:, ::self.stride, ::self.stride, :] if self.stride > 1 else inputs
        shape = keras.ops.shape(x)
        return keras.ops.zeros((shape[0], shape[1], shape[2], self.out_channels), dtype=inputs.dtype)

    def compute_output_shape(self, input_shape):
        return strided_shape(input_shape, self.stride, self.out_channels)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(out_channels=self.out_channels, stride=self.stride)
        return cfg


def make_candidate(op, layer_spec, bn_eps, name):
    """One candidate op of a searchable layer as a layer object (residual left to the caller)."""
    spec = space_lib.parse_op(op)
    if spec.is_zero:
        return ZeroOp(layer_spec.out_channels, layer_spec.stride, name=name)
    return MBConv(layer_spec.in_channels, layer_spec.out_channels, spec.kernel, spec.expand,
                  layer_spec.stride, bn_eps, residual=False, name=name)
