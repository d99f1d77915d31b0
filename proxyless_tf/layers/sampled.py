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
    """values[j] for an int32 tensor j: a Python value when every candidate has the same one."""
    if len(set(values)) == 1:
        return values[0]
    dtype = tf.bool if isinstance(values[0], bool) else tf.int32
    return tf.gather(tf.constant(values, dtype), j)


def sampled_bn(layers, h, j, training, fused):
    """BN of candidate j on h, as its own layer (`layers[j]`, None for a candidate without
    this BN) computes it, without a branch: γ, β and the statistics are slices of every
    candidate's concatenated; in training the concatenated statistics are updated where they
    are candidate j's (`where` on the concatenation, the batch's statistics padded to its
    place) and split back into every candidate's variable, so only candidate j's change, by
    the layer's formula, and the graph holds one update per statistic, not one per candidate.

    `fused`: the layers were given `cpu_kernels`' fused BN, so compute what it computes.
    """
    have = [c for c, b in enumerate(layers) if b is not None]
    bns = [layers[c] for c in have]
    sizes = [int(b.moving_mean.shape[0]) for b in bns]
    starts = dict(zip(have, [sum(sizes[:i]) for i in range(len(sizes))]))
    size_of = dict(zip(have, sizes))
    begin = lookup([starts.get(c, 0) for c in range(len(layers))], j)
    size = lookup([size_of.get(c, 0) for c in range(len(layers))], j)

    def joined(name):
        values = [getattr(b, name).value for b in bns]
        return values[0] if len(values) == 1 else tf.concat(values, 0)

    if isinstance(begin, int) and isinstance(size, int):
        window = None
    else:  # one (begin, size) pair for the four slices
        window = tf.reshape(begin, (1,)), tf.reshape(size, (1,))

    def pick(values):
        if len(bns) == 1:
            return values
        if window is None:
            return values[begin:begin + size]
        return tf.slice(values, *window)

    gamma, beta = pick(joined("gamma")), pick(joined("beta"))
    eps, momentum = bns[0].epsilon, bns[0].momentum
    if not training:
        moving_mean, moving_var = pick(joined("moving_mean")), pick(joined("moving_variance"))
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
    if len(bns) == 1:
        b = bns[0]
        b.moving_mean.assign(b.moving_mean.value * momentum + mean * (1.0 - momentum))
        b.moving_variance.assign(b.moving_variance.value * momentum + var * (1.0 - momentum))
        return y
    total = sum(sizes)
    channel = tf.range(total)
    mine = tf.logical_and(channel >= begin, channel < begin + size)  # candidate j's place
    pad = tf.reshape(tf.stack([begin, total - begin - size]), (1, 2))
    for name, batch in (("moving_mean", mean), ("moving_variance", var)):
        old = joined(name)
        new = tf.where(mine, old * momentum + tf.pad(batch, pad) * (1.0 - momentum), old)
        for b, part in zip(bns, tf.split(new, sizes)):
            getattr(b, name).assign(part)
    return y


def sampled_mbconv(x, j, specs, mids, stride, out_shape, kernels, bns, training, depthwise_fn=None, fused_bn=False):
    """MBConv candidate j (an int32 scalar tensor) of `specs` on x, traced once for all of them.

    Args:
        specs: the candidates' `OpSpec`s (MBConv only); mids: their expanded widths.
        out_shape: the block's static output shape.
        kernels: `fn(mid, kernel) -> (expand, depthwise, project)`, candidate j's kernels given
            its width and kernel size (ints when every candidate has the same, else int32
            tensors); `expand` is not used when j does not expand.
        bns: per candidate, {"expand": BN or None, "dw": BN, "project": BN}.
        depthwise_fn: `cpu_kernels.depthwise_conv` (x, kernel, stride, sizes), or None: tf.nn's.
        fused_bn: the BN layers compute through the fused op (`cpu_kernels.accelerate`).
    """
    mid = lookup(mids, j)
    kernel = lookup([s.kernel for s in specs], j)
    k_expand, k_dw, k_project = kernels(mid, kernel)
    h = x

    def expand(h):
        # tf.nn, not keras.ops: Keras compiles a conv with XLA when it cannot see matching channels
        h = tf.nn.conv2d(h, k_expand, 1, "SAME")
        return relu6(sampled_bn([b["expand"] for b in bns], h, j, training, fused_bn))

    expands = [s.expand != 1 for s in specs]
    if all(expands):
        h = expand(h)
    elif any(expands):  # only a mix of expanding and non-expanding candidates needs a branch
        h = tf.cond(lookup(expands, j), lambda: expand(h), lambda: h)
    if depthwise_fn is not None:
        h = depthwise_fn(h, k_dw, stride, sorted({s.kernel for s in specs}))
    else:
        h = tf.nn.depthwise_conv2d(h, k_dw, [1, stride, stride, 1], "SAME")
    h.set_shape(tuple(out_shape[:3]) + (mid if isinstance(mid, int) else None,))
    h = relu6(sampled_bn([b["dw"] for b in bns], h, j, training, fused_bn))
    h = tf.nn.conv2d(h, k_project, 1, "SAME")
    y = sampled_bn([b["project"] for b in bns], h, j, training, fused_bn)
    y.set_shape(out_shape)
    return y
