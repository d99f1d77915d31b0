"""`MixedOp`: every candidate of one searchable layer plus its architecture logits α.

The modes live in one class, next to the sampling they belong to (as in the official
`mix_op.py`):

- `single`: one op drawn from softmax(α) runs, so time and memory are those of one path. Used
  for the weight step. An op chosen by a tensor (drawn when the step runs) is one traced MBConv
  block whatever the number of candidates (`sampled.py`: its kernels and BN looked up by the
  index), `zero` that block run on one image and dropped (no `tf.cond`, whose gradient would
  copy the block); a Python int (a fixed path) is that op alone.
- `two`: binary gates for the architecture step. Two ops are drawn without replacement from
  softmax(α) (Gumbel top-2), the active one from the softmax over just that pair. Both
  outputs are computed (the α gradient needs them) and y = Σ_j g_j o_j with a one-hot g.
  The α gradient over the pair is Σ_j ∂L/∂g_j p_j (δ_ij − p_i), ∂L/∂g_j = <∂L/∂y, o_j>;
  it is produced exactly by the gate g + p − stop_gradient(p): its value is g, its
  derivative in α is that of p = softmax(α_pair). This layer gives the unsampled α no
  gradient; the supernet's latency term does (with `latency_probs="softmax"`, the default,
  E[latency] weighs every op by softmax(α) over all of them). The inactive op's gate value is
  0, so the input gradient flows through the active op alone and the inactive op runs under
  stop_gradient (no backward graph is traced for it).
- `full`: DARTS softmax-weighted sum of every op; the memory-hungry baseline.
- `full_v2` (the official code's mode of that name): the forward runs ONE op, drawn from
  softmax(α) over all candidates, and keeps only its activations, like `single`; the
  backward still gives α the full binary-gate gradient Σ_j ∂L/∂g_j p_j (δ_ij − p_i) over
  ALL ops, because ∂L/∂g_j = <∂L/∂y, o_j> is formed in the backward pass by recomputing
  each other op's output there (one at a time) instead of storing it from the forward.
  The input gradient flows through the active op only, as in the official code.
- `argmax`: the op with the largest α; the derived network.

The sampled indices are drawn by `sample()` and handed to `call()` by the caller, so the
supernet can apply the weight optimizer to exactly the ops that ran. α is a variable of
this layer (`self.alpha`, path ending in `alpha`) that the supernet keeps out of the
weight optimizer. The shortcut is added here when the layer has one (stride 1, equal
channels), so `zero` makes the layer identity.

Differences from the official code (`search/modules/mix_op.py`, `nas_manager.py`) in mode
`two`; its gradients were matched to 1e-6 otherwise:

- `zero` active: the official `set_arch_param_grad` sets that layer's α gradient to None, so
  Adam skips the layer (its latency gradient included) and the rescale does nothing. Here the
  layer is updated like any other: the formula above holds for `zero` too (o_zero = 0, so
  ∂L/∂g_zero = 0, while the inactive op's ∂L/∂g is not 0 and says whether skipping the layer
  beat it). We keep the formula: dropping a step whenever `zero` is drawn active is a choice
  of the official code, not of the paper, and it would slow the skip decisions down.
- latency term: the official expected latency uses each layer's probabilities renormalised
  over its sampled pair (its `current_prob_over_ops`), so only the pair's α get a latency
  gradient; the paper writes E[latency] over softmax(α) of every op, which is our default.
  `SuperNet.compile(latency_probs="pair")` is the official variant.
- the rescale after the Adam step shifts only the pair, as the official one; with the full
  softmax latency term the other α of the layer have moved by their latency gradient too, so
  their probabilities are kept only up to that pull.

`weight_sharing="nested"` cuts the MBConv candidates from one set of kernels
(`nested.NestedMBConv`, opt-in, a departure from the paper explained there); the modes and
their formulas are the same.
"""

import keras

from proxyless_tf.layers import blocks
from proxyless_tf.layers import nested
from proxyless_tf.layers import sampled
from proxyless_tf import space as space_lib

MODES = ("single", "two", "full", "full_v2", "argmax")
# per weight sharing: whether a sampled op (an index known when the step runs) is one traced block
# (`sampled.py`) rather than a `tf.switch_case` over every candidate
SAMPLED_BLOCK = {"independent": True, "nested": True}


def _mbconv_parts(op):
    """The layers of an independent `blocks.MBConv` by role: expand / dw / project and their BN."""
    parts, role = {"expand": None, "expand_bn": None}, "expand"
    for layer in op.branch:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            parts["dw"], role = layer, "dw"
        elif isinstance(layer, keras.layers.Conv2D):
            role = "expand" if "dw" not in parts else "project"
            parts[role] = layer
        elif isinstance(layer, keras.layers.BatchNormalization):
            parts[f"{role}_bn"] = layer
    return parts


def _check_mode(mode):
    if mode not in MODES:
        raise ValueError(f"unknown MixedOp mode {mode!r}; use one of {MODES}")
    return mode


@keras.saving.register_keras_serializable(package="proxyless_tf")
class MixedOp(keras.layers.Layer):
    """All candidate ops of one searchable layer and their architecture logits.

    Args:
        in_hw: (H, W) of the input (used for latency keys; the layer accepts any size).
        in_channels: input channels.
        out_channels: output channels.
        stride: stride of every candidate.
        candidates: op names (`mb_k{k}_e{e}`, `zero`), in the order of α.
        bn_eps: batch-norm epsilon of the candidates.
        mode: default mode of `call` when none is passed: single, two, full or argmax.
        seed: seed of the layer's `keras.random.SeedGenerator` (None: random).
        weight_sharing: `independent` (the paper: own weights per op) or `nested` (the
            MBConv candidates share kernels, `nested.NestedMBConv`).
    """

    def __init__(self, in_hw, in_channels, out_channels, stride, candidates, bn_eps=1e-3,
                 mode="single", seed=None, weight_sharing="independent", **kwargs):
        super().__init__(**kwargs)
        self.in_hw = tuple(int(v) for v in in_hw)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.stride = int(stride)
        self.candidates = tuple(str(c) for c in candidates)
        self.bn_eps = float(bn_eps)
        self.mode = _check_mode(mode)
        self.seed = seed
        if not self.candidates:
            raise ValueError("a MixedOp needs at least one candidate")
        self.spec = space_lib.LayerSpec(0, 0, self.in_hw, self.in_channels, self.out_channels,
                                        self.stride, self.candidates)
        self.has_residual = self.spec.has_residual
        if weight_sharing not in nested.WEIGHT_SHARING:
            raise ValueError(f"unknown weight_sharing {weight_sharing!r}; use one of {nested.WEIGHT_SHARING}")
        self.weight_sharing = weight_sharing
        if weight_sharing == "nested":
            mb = [op for op in self.candidates if not space_lib.parse_op(op).is_zero]
            self.nested = nested.NestedMBConv(self.in_channels, self.out_channels, self.stride, mb, self.bn_eps,
                                              name=f"{self.name}_nested") if mb else None
            self.ops = [nested.NestedCandidate(self.nested, mb.index(op)) if op in mb
                        else blocks.make_candidate(op, self.spec, self.bn_eps, name=f"{self.name}_{op}")
                        for op in self.candidates]
        else:
            self.nested = None
            self.ops = [blocks.make_candidate(op, self.spec, self.bn_eps, name=f"{self.name}_{op}")
                        for op in self.candidates]
        self.seed_generator = keras.random.SeedGenerator(seed, name=f"{self.name}_seed")
        # set by `cpu_kernels.accelerate` for the independent candidates' sampled block (`sampled.py`)
        self.depthwise_fn = None
        self.fused_bn = False

    @classmethod
    def from_layer_spec(cls, layer, bn_eps=1e-3, mode="single", seed=None, name=None, weight_sharing="independent"):
        return cls(layer.in_hw, layer.in_channels, layer.out_channels, layer.stride, layer.candidates,
                   bn_eps=bn_eps, mode=mode, seed=seed, name=name or f"layer{layer.index}",
                   weight_sharing=weight_sharing)

    @property
    def num_candidates(self):
        return len(self.candidates)

    def build(self, input_shape):
        self.alpha = self.add_weight(name="alpha", shape=(self.num_candidates,), initializer="zeros",
                                     trainable=True)
        for op in self.ops:
            op.build(tuple(input_shape))
        self.built = True

    def bn_segments(self):
        """(variable, segment size per candidate, 0 for `zero`) of the nested candidates'
        concatenated BN parameters (`nested.ConcatBN`); none with independent candidates."""
        if self.nested is None:
            return []
        mb = list(self.nested.op_names)
        return [(v, [sizes[mb.index(c)] if c in mb else 0 for c in self.candidates])
                for v, sizes in self.nested.bn_segments()]

    def candidate_variables(self, j):
        """Trainable weights of candidate j (empty for `zero`; shared kernels included when nested)."""
        return list(self.ops[j].trainable_variables)

    # ---- sampling -------------------------------------------------------------------------
    def probs(self):
        return keras.ops.softmax(self.alpha)

    def sample(self, mode=None, uniform=False):
        """Draw what `call(mode)` needs: an index (single, full_v2), (pair, active slot) (two), None otherwise.

        `uniform`: a single path drawn uniformly instead of from softmax(α) (the supernet's
        `weight_sampling="uniform"` weight steps)."""
        mode = _check_mode(mode or self.mode)
        n = self.num_candidates
        if mode in ("single", "full_v2"):
            logits = keras.ops.zeros_like(self.alpha) if uniform else self.alpha
            return keras.ops.cast(
                keras.random.categorical(logits[None, :], 1, seed=self.seed_generator)[0, 0], "int32")
        if mode == "argmax":
            return keras.ops.cast(keras.ops.argmax(self.alpha), "int32")
        if mode == "two":
            if n < 2:
                raise ValueError(f"{self.name}: mode 'two' needs at least two candidates")
            # Gumbel top-2 == drawing two without replacement from softmax(alpha).
            u = keras.random.uniform((n,), minval=1e-9, maxval=1.0, seed=self.seed_generator)
            gumbel = -keras.ops.log(-keras.ops.log(u))
            _, pair = keras.ops.top_k(keras.ops.stop_gradient(self.alpha) + gumbel, 2)
            pair = keras.ops.cast(pair, "int32")
            pair_logits = keras.ops.take(self.alpha, pair)[None, :]
            active = keras.random.categorical(keras.ops.stop_gradient(pair_logits), 1,
                                              seed=self.seed_generator)[0, 0]
            return pair, keras.ops.cast(active, "int32")
        return None

    # ---- forward --------------------------------------------------------------------------
    def _run(self, index, x, training):
        if isinstance(index, int):  # a fixed path (the sandwich's): that op alone, no switch_case in the graph
            return self.ops[index](x, training=training)
        if SAMPLED_BLOCK[self.weight_sharing]:
            return self._run_sampled(index, x, training)
        branches = [lambda v, op=op: op(v, training=training) for op in self.ops]
        return keras.ops.switch(index, branches, x)

    def _run_sampled(self, index, x, training):
        """The op `index` (a tensor) as one traced MBConv block (`sampled.py`) whatever the number of
        candidates. `zero`, when a candidate, is the block run on one image and dropped (its output
        sliced to no images and padded back to the batch with zeros, no statistics moved), not the
        other side of a `tf.cond`: a differentiated `tf.cond` makes every intermediate of the block
        an output of the cond and gives the `zero` side a dummy for each, which was a quarter of
        the search step's graph (docs/startup.md). Whole-batch slices and zero paddings forward
        their input, so a sampled MBConv op costs what it costs alone."""
        import tensorflow as tf

        mb_ops = [op for op in self.candidates if op != space_lib.ZERO]
        if not mb_ops:
            return self.ops[0](x, training=training)
        mb_index = tf.gather(tf.constant([mb_ops.index(op) if op in mb_ops else 0 for op in self.candidates],
                                         tf.int32), index)
        block = self.nested.run_sampled if self.nested is not None else self._independent_sampled
        if space_lib.ZERO not in self.candidates:
            return block(x, mb_index, training=training)
        live = tf.not_equal(index, self.candidates.index(space_lib.ZERO))
        batch = tf.shape(x)[0]
        keep = tf.where(live, batch, 0)
        y = block(x[:tf.where(live, batch, tf.minimum(batch, 1))], mb_index, training=training, live=live)
        y = tf.pad(y[:keep], tf.stack([tf.stack([0, batch - keep]), [0, 0], [0, 0], [0, 0]]))
        y.set_shape(x.shape[:1] + y.shape[1:])
        return y

    def _independent_sampled(self, x, j, training=None, live=None):
        """MBConv candidate j (index among the MBConv candidates) with independent weights: its
        kernels selected by a switch over variable reads only, the block traced once."""
        import tensorflow as tf

        mb = [(c, op) for c, op in zip(self.candidates, self.ops) if isinstance(op, blocks.MBConv)]
        parts = [_mbconv_parts(op) for _, op in mb]
        specs = [space_lib.parse_op(c) for c, _ in mb]
        mids = [space_lib.expanded_channels(self.in_channels, s.expand) for s in specs]

        def read(p):
            expand = p["expand"].kernel if p["expand"] is not None else tf.zeros((1, 1, self.in_channels, 1))
            return tuple(tf.convert_to_tensor(k) for k in (expand, p["dw"].kernel, p["project"].kernel))

        def kernels(mid, kernel):
            if len(parts) == 1:
                return read(parts[0])
            return tf.switch_case(j, [lambda p=p: read(p) for p in parts])

        bns = {role: sampled.LayerBNs([p[f"{role}_bn"] for p in parts])
               if any(p[f"{role}_bn"] is not None for p in parts) else None for role in ("expand", "dw", "project")}
        out = self.ops[0].compute_output_shape(tuple(x.shape))
        return sampled.sampled_mbconv(x, j, specs, mids, self.stride, out, kernels, bns, training,
                                      self.depthwise_fn, self.fused_bn, live)

    def call(self, inputs, training=None, mode=None, sample=None):
        mode = _check_mode(mode or self.mode)
        if sample is None:
            sample = self.sample(mode)
        if mode in ("single", "argmax"):
            y = self._run(sample, inputs, training)
        elif mode == "full_v2":
            y = self._run(sample, inputs, training)
            # value 0; in the backward it hands α the gate gradients of every op (see _gate_grads)
            y = y + self._gate_grads(self.probs(), keras.ops.stop_gradient(inputs),
                                     keras.ops.stop_gradient(y), sample, training)
        elif mode == "two":
            pair, active = sample
            inactive = 1 - active
            # The inactive op's gate is 0, so no gradient flows into its output: it is computed
            # under stop_gradient and its block gets no backward graph (one of the step's two
            # per layer); its value still forms ∂L/∂g of its gate.
            o_active = self._run(keras.ops.take(pair, active), inputs, training)
            o_inactive = keras.ops.stop_gradient(self._run(keras.ops.take(pair, inactive), inputs, training))
            p = keras.ops.softmax(keras.ops.take(self.alpha, pair))
            g = keras.ops.one_hot(active, 2, dtype=p.dtype)
            gate = g + p - keras.ops.stop_gradient(p)  # value g, derivative dp/dalpha
            y = keras.ops.take(gate, active) * o_active + keras.ops.take(gate, inactive) * o_inactive
        else:  # full
            p = keras.ops.softmax(self.alpha)
            y = sum(p[j] * op(inputs, training=training) for j, op in enumerate(self.ops))
        return inputs + y if self.has_residual else y

    def _gate_grads(self, p, x, o_active, index, training):
        """Zeros whose gradient in p is ∂L/∂g_j = <∂L/∂y, o_j> for every op j (`full_v2`).

        The other ops' outputs are recomputed inside the gradient function, one after the
        other (control dependencies chain them), each reduced to a scalar at once, so the
        backward holds one extra op's activations at a time, never all of them. The active
        op's output is the (already live) forward value, not recomputed.
        """
        import tensorflow as tf

        ops = self.ops

        @tf.custom_gradient
        def gates(p, x, o_active, index):
            def grad(dy):
                dg, prev = [], tf.zeros((), dy.dtype)
                for j, op in enumerate(ops):
                    with tf.control_dependencies([prev]):
                        prev = tf.cond(tf.equal(index, j),
                                       lambda: tf.reduce_sum(dy * o_active),
                                       lambda op=op: tf.reduce_sum(dy * op(tf.identity(x), training=training)))
                    dg.append(prev)
                return tf.cast(tf.stack(dg), p.dtype), None, None, None

            return tf.zeros_like(o_active), grad

        return gates(p, x, o_active, index)

    # ---- after the architecture step ---------------------------------------------------------
    def rescale(self, alpha_before, pair):
        """Shift the pair's α by log(Σexp α_new / Σexp α_old) so unsampled ops keep their probability
        (exactly when only the pair's α moved: with the full-softmax latency term the others moved too)."""
        old = keras.ops.take(alpha_before, pair)
        new = keras.ops.take(self.alpha, pair)
        offset = keras.ops.logsumexp(new) - keras.ops.logsumexp(old)
        self.alpha.assign(keras.ops.scatter_update(self.alpha, pair[:, None], new - offset))

    def compute_output_shape(self, input_shape):
        return self.ops[0].compute_output_shape(input_shape)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(in_hw=list(self.in_hw), in_channels=self.in_channels, out_channels=self.out_channels,
                   stride=self.stride, candidates=list(self.candidates), bn_eps=self.bn_eps,
                   mode=self.mode, seed=self.seed, weight_sharing=self.weight_sharing)
        return cfg
