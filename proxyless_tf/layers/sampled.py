"""The sampled MBConv candidate of a searchable layer as one traced block.

Why: the search step runs one candidate per layer, chosen by an index drawn when the step
runs. Written as a `tf.switch_case` over the C candidates, the step's graph holds C copies of
every block (forward, and again in the gradient), each traced in Python, optimised by
grappler and instantiated, while one runs: that was most of the search's start-up time and
of its peak memory (docs/startup.md). Here the block is traced once: its kernels are the
sampled candidate's (looked up by the index: slices of the shared kernels when nested,
`nested.py`; each candidate's own variables otherwise, selected by a switch over variable
reads only), and each batch norm reads the sampled candidate's own parameters and
statistics out of the concatenation of every candidate's.

At run time the block computes what the sampled candidate computes alone: the same
convolutions on the same kernels, the same batch-norm formula (Keras' or, after
`cpu_kernels.accelerate`, the fused op's), only that candidate's moving statistics moved.
"""

import keras
import tensorflow as tf


def relu6(x):
    return keras.ops.minimum(keras.ops.relu(x), 6.0)


def lookup(values, j):
    """values[j] for an int32 tensor j: a Python value when every candidate has the same one, or
    when j is a Python int (a candidate named when the graph is traced)."""
    if isinstance(j, int):
        return values[j]
    if len(set(values)) == 1:
        return values[0]
    dtype = tf.bool if isinstance(values[0], bool) else tf.int32
    return tf.gather(tf.constant(values, dtype), j)


class LayerBNs:
    """One batch norm of every candidate, held by the candidates' own `BatchNormalization` layers
    (independent candidates; None for a candidate without it): read as the concatenation of
    their variables, written by splitting it back."""

    def __init__(self, layers):
        have = [b for b in layers if b is not None]
        self.layers = have
        self.sizes = [0 if b is None else int(b.moving_mean.shape[0]) for b in layers]
        self.epsilon, self.momentum = have[0].epsilon, have[0].momentum

    def read(self, name):
        values = [getattr(b, name).value for b in self.layers]
        return values[0] if len(values) == 1 else tf.concat(values, 0)

    def write(self, name, value):
        parts = [value] if len(self.layers) == 1 else tf.split(value, [s for s in self.sizes if s])
        for b, part in zip(self.layers, parts):
            getattr(b, name).assign(part)


def sampled_bn(bns, h, j, training, fused, live=None):
    """BN of candidate j on h, as candidate j alone computes it, without a branch: γ, β and the
    statistics are candidate j's slice of every candidate's concatenated (`bns`: `LayerBNs`, or
    `nested.ConcatBN`, whose variables are that concatenation); in training the concatenated
    statistics are updated where they are candidate j's (`where` on the concatenation, the
    batch's statistics padded to its place), so only candidate j's change, by the layer's
    formula, and the graph holds one update per statistic, not one per candidate.

    `fused`: the layers were given `cpu_kernels`' fused BN, so compute what it computes.
    `live`: a bool tensor, False when the block runs only to be dropped (the layer's `zero` was
    sampled, `mixed_op`): then no candidate's statistics move.
    """
    sizes = bns.sizes
    starts = [sum(sizes[:c]) for c in range(len(sizes))]
    total = sum(sizes)
    begin, size = lookup(starts, j), lookup(sizes, j)
    if isinstance(begin, int) and isinstance(size, int):
        window = None
    else:  # one (begin, size) pair for the four slices
        window = tf.reshape(begin, (1,)), tf.reshape(size, (1,))

    def pick(values):
        if window is None:
            return values if (begin, size) == (0, total) else values[begin:begin + size]
        return tf.slice(values, *window)

    gamma, beta = pick(bns.read("gamma")), pick(bns.read("beta"))
    eps, momentum = bns.epsilon, bns.momentum
    if not training:
        moving_mean, moving_var = pick(bns.read("moving_mean")), pick(bns.read("moving_variance"))
        if fused:
            return tf.compat.v1.nn.fused_batch_norm(h, gamma, beta, mean=moving_mean, variance=moving_var,
                                                    epsilon=eps, is_training=False)[0]
        return keras.ops.batch_normalization(h, moving_mean, moving_var, axis=-1, offset=beta, scale=gamma,
                                             epsilon=eps)
    if fused:  # as cpu_kernels._fused_bn_call
        y, mean, var, *_ = tf.compat.v1.nn.fused_batch_norm(h, gamma, beta, epsilon=eps, is_training=True)
        if None in h.shape[1:3]:
            n = tf.cast(tf.size(h) // tf.shape(h)[-1], h.dtype)
        else:  # the same count, batch x H x W
            n = tf.cast(tf.shape(h)[0] * (h.shape[1] * h.shape[2]), h.dtype)
        var = var * (n - 1.0) / n
    else:  # as keras.layers.BatchNormalization.call
        mean, var = keras.ops.moments(h, axes=[0, 1, 2])
        y = keras.ops.batch_normalization(h, mean, var, axis=-1, offset=beta, scale=gamma, epsilon=eps)
    if isinstance(size, int) and size == total and live is None:  # candidate j's statistics are all there is
        for name, batch in (("moving_mean", mean), ("moving_variance", var)):
            bns.write(name, bns.read(name) * momentum + batch * (1.0 - momentum))
        return y
    mine = segment_mask(sizes, [j])  # candidate j's place
    if live is not None:
        mine = tf.logical_and(mine, live)
    pad = tf.reshape(tf.stack([begin, total - begin - size]), (1, 2))
    for name, batch in (("moving_mean", mean), ("moving_variance", var)):
        old = bns.read(name)
        bns.write(name, tf.where(mine, old * momentum + tf.pad(batch, pad) * (1.0 - momentum), old))
    return y


def segment_mask(sizes, js):
    """Where in a concatenation of the candidates' segments (`sizes`, 0 for a candidate without
    one) the segments of candidates `js` (ints or int32 tensors) are: a bool vector."""
    starts = [sum(sizes[:c]) for c in range(len(sizes))]
    channel = tf.range(sum(sizes))
    mask = None
    for j in js:
        begin, size = lookup(starts, j), lookup(sizes, j)
        mine = tf.logical_and(channel >= begin, channel < begin + size)
        mask = mine if mask is None else tf.logical_or(mask, mine)
    return mask


def sampled_mbconv(x, j, specs, mids, stride, out_shape, kernels, bns, training, depthwise_fn=None, fused_bn=False,
                   live=None):
    """MBConv candidate j (an int32 scalar tensor, or a Python int) of `specs` on x, traced once for all of them.

    Args:
        specs: the candidates' `OpSpec`s (MBConv only); mids: their expanded widths.
        out_shape: the block's static output shape.
        kernels: `fn(mid, kernel) -> (expand, depthwise, project)`, candidate j's kernels given
            its width and kernel size (ints when every candidate has the same, else int32
            tensors); `expand` is not used when j does not expand.
        bns: {"expand": `LayerBNs` or `nested.ConcatBN` (None when no candidate expands), "dw": ...,
            "project": ...}: each role's batch norm of every candidate.
        depthwise_fn: `cpu_kernels.depthwise_conv` (x, kernel, stride, sizes), or None: tf.nn's.
        fused_bn: the BN layers compute through the fused op (`cpu_kernels.accelerate`).
        live: None, or a bool tensor: False moves no batch-norm statistics (`sampled_bn`).
    """
    mid = lookup(mids, j)
    kernel = lookup([s.kernel for s in specs], j)
    k_expand, k_dw, k_project = kernels(mid, kernel)
    h = x

    def expand(h):
        # tf.nn, not keras.ops: Keras compiles a conv with XLA when it cannot see matching channels
        h = tf.nn.conv2d(h, k_expand, 1, "SAME")
        return relu6(sampled_bn(bns["expand"], h, j, training, fused_bn, live))

    expands = lookup([s.expand != 1 for s in specs], j)
    if isinstance(expands, bool):
        h = expand(h) if expands else h
    else:  # only a mix of expanding and non-expanding candidates needs a branch
        h = tf.cond(expands, lambda: expand(h), lambda: h)
    if depthwise_fn is not None:
        h = depthwise_fn(h, k_dw, stride, sorted({s.kernel for s in specs}))
    else:
        h = tf.nn.depthwise_conv2d(h, k_dw, [1, stride, stride, 1], "SAME")
    h.set_shape(tuple(out_shape[:3]) + (mid if isinstance(mid, int) else None,))
    h = relu6(sampled_bn(bns["dw"], h, j, training, fused_bn, live))
    h = tf.nn.conv2d(h, k_project, 1, "SAME")
    y = sampled_bn(bns["project"], h, j, training, fused_bn, live)
    y.set_shape(tuple(x.shape[:1]) + tuple(out_shape[1:]))
    return y
