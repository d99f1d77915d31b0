"""Nested weight sharing: every MBConv candidate of a layer cut from one set of kernels.

Why: with independent candidates (the paper's supernet) each op of a 7-way layer is trained
on about a seventh of the weight steps, and the path changes every step, so on a small
budget the supernet barely learns (measured here on Fashion-MNIST, eager, batch 64, lr 0.05:
uniform single paths 11-13 % train accuracy after 100 steps against 78 % for one fixed
path), and α then follows the latency term alone. Cutting the candidates from shared
"superkernels" (Single-Path NAS, Stamoulis et al. 2019; once-for-all, Cai et al. 2020) lets
every weight step train the weights every path uses: a k×k depthwise kernel is the centre
of the largest one, an expansion e uses the first round(C·e) channels of the widest
expansion and the matching input rows of the projection. Batch norm stays private to each
candidate (switchable BN, Yu et al. 2019): statistics of a 3-wide and a 6-wide expansion
differ, and private BN keeps every candidate's normalisation exact.

This is a departure from ProxylessNAS (independent weights per op); it is opt-in through
`weight_sharing="nested"` and changes nothing of the architecture steps' formulas, the
latency terms or the derived network, which is built and retrained from scratch as before.

A sampled candidate (an index known only when the step runs) is one traced block
(`NestedMBConv.run_sampled`, `sampled.py`), its kernel slices sized by the index.
"""

import keras
import tensorflow as tf

from proxyless_tf.layers import blocks
from proxyless_tf.layers import sampled
from proxyless_tf import space as space_lib

WEIGHT_SHARING = ("independent", "nested")


def _relu6(x):
    return keras.ops.minimum(keras.ops.relu(x), 6.0)


def _bn(name, bn_eps):
    return keras.layers.BatchNormalization(epsilon=bn_eps, momentum=blocks.BN_MOMENTUM, name=name)


@keras.saving.register_keras_serializable(package="proxyless_tf")
class NestedMBConv(keras.layers.Layer):
    """The MBConv candidates of one layer, sharing their convolution kernels (see module doc).

    Args:
        in_channels, out_channels, stride: of the layer.
        ops: the MBConv op names (`mb_k{k}_e{e}`, no `zero`), in candidate order.
        bn_eps: batch-norm epsilon.
    """

    def __init__(self, in_channels, out_channels, stride, ops, bn_eps=1e-3, **kwargs):
        super().__init__(**kwargs)
        self.in_channels, self.out_channels, self.stride = int(in_channels), int(out_channels), int(stride)
        self.op_names = tuple(str(o) for o in ops)
        self.bn_eps = float(bn_eps)
        self.specs = [space_lib.parse_op(o) for o in self.op_names]
        if not self.specs or any(s.is_zero for s in self.specs):
            raise ValueError(f"{self.name}: NestedMBConv takes MBConv ops only, got {self.op_names}")
        self.mids = [space_lib.expanded_channels(self.in_channels, s.expand) for s in self.specs]
        self.max_kernel = max(s.kernel for s in self.specs)
        self.max_mid = max(self.mids)
        self.has_expand = any(s.expand != 1 for s in self.specs)
        self.bns = []
        for op, s in zip(self.op_names, self.specs):
            self.bns.append({
                "expand": _bn(f"{self.name}_{op}_expand_bn", bn_eps) if s.expand != 1 else None,
                "dw": _bn(f"{self.name}_{op}_dw_bn", bn_eps),
                "project": _bn(f"{self.name}_{op}_project_bn", bn_eps),
            })
        # a flat list so Keras tracks (and saves) every BN under a stable path
        self.bn_layers = [b for d in self.bns for b in (d["expand"], d["dw"], d["project"]) if b is not None]
        # `cpu_kernels.accelerate` puts its depthwise conv (x, kernel, stride, sizes) here; None: keras.ops'
        self.depthwise_fn = None
        # and sets this when it routes the candidates' BN through the fused op: the sampled
        # candidate's BN (`sampled.sampled_bn`) must then compute what that op computes
        self.fused_bn = False

    def build(self, input_shape):
        init = lambda: keras.initializers.VarianceScaling(2.0, "fan_out", "truncated_normal")  # noqa: E731
        if self.has_expand:
            self.expand_kernel = self.add_weight(name="expand_kernel", shape=(1, 1, self.in_channels, self.max_mid),
                                                 initializer=init())
        self.dw_kernel = self.add_weight(name="dw_kernel", shape=(self.max_kernel, self.max_kernel, self.max_mid, 1),
                                         initializer=init())
        self.project_kernel = self.add_weight(name="project_kernel", shape=(1, 1, self.max_mid, self.out_channels),
                                              initializer=init())
        out = self.output_shape_of(input_shape)
        for mid, bn in zip(self.mids, self.bns):
            if bn["expand"] is not None:
                bn["expand"].build(tuple(input_shape[:3]) + (mid,))
            bn["dw"].build(out[:3] + (mid,))
            bn["project"].build(out)
        self.built = True

    def shared_variables(self):
        return [v for v in (getattr(self, "expand_kernel", None), self.dw_kernel, self.project_kernel) if v is not None]

    def candidate_variables(self, j):
        """What candidate j trains: the shared kernels and its own BN parameters."""
        bn = [b for b in self.bns[j].values() if b is not None]
        return self.shared_variables() + [v for b in bn for v in b.trainable_variables]

    def run(self, x, j, training=None):
        """Candidate j on x: its slices of the shared kernels, its own BN."""
        s, mid, bn = self.specs[j], self.mids[j], self.bns[j]
        h = x
        if s.expand != 1:
            h = keras.ops.conv(h, self.expand_kernel[:, :, :, :mid], padding="same")
            h = _relu6(bn["expand"](h, training=training))
        off = (self.max_kernel - s.kernel) // 2
        dw = self.dw_kernel[off:off + s.kernel, off:off + s.kernel, :mid, :]
        if self.depthwise_fn is not None:
            h = self.depthwise_fn(h, dw, self.stride)
        else:
            h = keras.ops.depthwise_conv(h, dw, strides=self.stride, padding="same")
        h = _relu6(bn["dw"](h, training=training))
        h = keras.ops.conv(h, self.project_kernel[:, :, :mid, :], padding="same")
        return bn["project"](h, training=training)

    def run_sampled(self, x, j, training=None):
        """Candidate `j` (an int32 scalar tensor, an index into `op_names`) on x, as one traced block
        (`sampled.sampled_mbconv`): at run time what `run(x, int(j))` computes, on kernel slices
        sized by j."""
        def kernels(mid, kernel):
            off = (self.max_kernel - kernel) // 2
            expand = self.expand_kernel.value[:, :, :, :mid] if self.has_expand else None
            if isinstance(kernel, int) and isinstance(mid, int):
                dw = self.dw_kernel.value[off:off + kernel, off:off + kernel, :mid, :]
            else:
                dw = tf.slice(self.dw_kernel.value, tf.stack([off, off, 0, 0]), tf.stack([kernel, kernel, mid, 1]))
            return expand, dw, self.project_kernel.value[:, :, :mid, :]

        return sampled.sampled_mbconv(x, j, self.specs, self.mids, self.stride, self.output_shape_of(tuple(x.shape)),
                                      kernels, self.bns, training, self.depthwise_fn, self.fused_bn)

    def output_shape_of(self, input_shape):
        return blocks.strided_shape(input_shape, self.stride, self.out_channels)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(in_channels=self.in_channels, out_channels=self.out_channels, stride=self.stride,
                   ops=list(self.op_names), bn_eps=self.bn_eps)
        return cfg


class NestedCandidate:
    """Candidate j of a `NestedMBConv`, callable like an independent candidate layer.

    A plain object, not a layer: the kernels belong to the `NestedMBConv` (one owner, saved
    once); this view only selects the slice.
    """

    def __init__(self, owner, j):
        self.owner, self.j = owner, j
        self.name = f"{owner.name}_{owner.op_names[j]}"

    def __call__(self, x, training=None):
        return self.owner.run(x, self.j, training=training)

    def build(self, input_shape):
        if not self.owner.built:
            self.owner.build(input_shape)

    @property
    def trainable_variables(self):
        return self.owner.candidate_variables(self.j)

    def compute_output_shape(self, input_shape):
        return self.owner.output_shape_of(input_shape)
