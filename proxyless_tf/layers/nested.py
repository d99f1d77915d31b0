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


BN_PARAMS = (("gamma", "ones", True), ("beta", "zeros", True), ("moving_mean", "zeros", False),
             ("moving_variance", "ones", False))


class ConcatBN:
    """One batch-norm role (expand, dw or project) of every candidate of a `NestedMBConv`: per
    parameter one variable, the concatenation of the candidates' segments (`sizes`, 0 for a
    candidate without this BN). What `sampled.sampled_bn` reads and writes."""

    def __init__(self, variables, sizes, epsilon, momentum=blocks.BN_MOMENTUM):
        self.variables, self.sizes, self.epsilon, self.momentum = variables, list(sizes), epsilon, momentum

    def read(self, name):
        return self.variables[name].value

    def write(self, name, value):
        self.variables[name].assign(value)


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
        # per BN role, each candidate's width (0: the candidate has no such BN)
        self.bn_sizes = {"expand": [m if s.expand != 1 else 0 for m, s in zip(self.mids, self.specs)],
                         "dw": list(self.mids), "project": [self.out_channels] * len(self.specs)}
        self.bn_roles = [r for r in ("expand", "dw", "project") if any(self.bn_sizes[r])]
        self.bns = {}  # role -> ConcatBN, made in build
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
        for role in self.bn_roles:
            variables = {name: self.add_weight(name=f"{role}_bn_{name}", shape=(sum(self.bn_sizes[role]),),
                                               initializer=init_name, trainable=trainable)
                         for name, init_name, trainable in BN_PARAMS}
            self.bns[role] = ConcatBN(variables, self.bn_sizes[role], self.bn_eps)
        self.built = True

    def shared_variables(self):
        return [v for v in (getattr(self, "expand_kernel", None), self.dw_kernel, self.project_kernel) if v is not None]

    def bn_segments(self):
        """(variable, per-candidate segment sizes) of every trainable concatenated BN parameter:
        what the weight step updates on the sampled candidate's segment only."""
        return [(bn.variables[name], bn.sizes) for bn in self.bns.values() for name in ("gamma", "beta")]

    def candidate_variables(self, j):
        """What candidate j trains: the shared kernels and the concatenated BN parameters holding
        its segment (the other candidates' segments in them are not its)."""
        return self.shared_variables() + [v for v, sizes in self.bn_segments() if sizes[j]]

    def run(self, x, j, training=None):
        """Candidate j (a Python int) on x: its slices of the shared kernels, its segment of the BN."""
        return self.run_sampled(x, int(j), training=training)

    def run_sampled(self, x, j, training=None, live=None):
        """Candidate `j` (an int32 scalar tensor, an index into `op_names`, or a Python int) on x, as
        one traced block (`sampled.sampled_mbconv`), on kernel slices and BN segments sized by j."""
        def kernels(mid, kernel):
            off = (self.max_kernel - kernel) // 2
            expand = self.expand_kernel.value[:, :, :, :mid] if self.has_expand else None
            if isinstance(kernel, int) and isinstance(mid, int):
                dw = self.dw_kernel.value[off:off + kernel, off:off + kernel, :mid, :]
            else:
                dw = tf.slice(self.dw_kernel.value, tf.stack([off, off, 0, 0]), tf.stack([kernel, kernel, mid, 1]))
            return expand, dw, self.project_kernel.value[:, :, :mid, :]

        return sampled.sampled_mbconv(x, j, self.specs, self.mids, self.stride, self.output_shape_of(tuple(x.shape)),
                                      kernels, {r: self.bns.get(r) for r in ("expand", "dw", "project")}, training,
                                      self.depthwise_fn, self.fused_bn, live)

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
