"""The weight step of the search: one sampled path (plus a sandwich's fixed paths) per batch.

On (x, y): one path sampled per layer (`single`), cross-entropy, the weight optimizer applied
to the shared weights and to the weights of the ops that ran — only those. In graph mode the
untaken branches of `tf.switch_case` get a gradient of zero, not None, and momentum / Adam /
weight decay would still move them (unlike the official PyTorch code, where they have no
gradient and are skipped). So each layer applies the optimizer inside its own
`tf.switch_case` on the sampled index: the other candidates' weights and slots are never
touched. Kernels that nested candidates share are updated once, under a `tf.cond` on "an
op that uses them ran" (`apply_groups`), rather than in every candidate's branch: the same
update, traced once. Nested candidates' batch norms are one concatenated variable per parameter
(`nested.ConcatBN`): updated once, then put back outside the ran candidates' segments, slots
included (`apply_segments`). The learning rate is evaluated once per step and every update of the step
uses it (the step counter is held, so Adam's bias correction sees the same step, and it advances
once per step); inside the branches each update is the optimizer's own `update_step` after
Keras' decay and clipping (`update_variables`), not a whole `apply`. Because the optimizer is applied per group,
options that need one view of every gradient at once (`global_clipnorm`, EMA, gradient
accumulation) are refused at compile (`refuse_optimizer_options`, shared with the
distributed step).

With a `sandwich` (BigNAS, Yu et al. 2020; OFA's sandwich rule) the step also runs fixed
paths on the same batch — the largest network (every layer's widest, largest-kernel op) and
optionally the smallest (every skippable layer skipped, the narrowest op elsewhere) — and
applies the summed gradient once: their ops' weights are applied unconditionally, the
sampled op's through its `tf.switch_case` as above. With `distill` > 0 (BigNAS's in-place
distillation) the largest path learns from the labels and the others partly or wholly from
the largest's softmax on the same batch (held constant), at no extra forward pass.
"""

import keras
import tensorflow as tf

from proxyless_tf import space as space_lib
from proxyless_tf.errors import ConfigError
from proxyless_tf.layers import sampled

# optimizer options that need every gradient of a step in one apply
GLOBAL_OPTIONS = ("global_clipnorm", "use_ema", "gradient_accumulation_steps")


def refuse_optimizer_options(opt, which, options, step, fix):
    """One ConfigError naming the `options` set on optimizer `opt` that `step` does not apply."""
    unsupported = [n for n in options if getattr(opt, n, None)]
    if unsupported:
        raise ConfigError("<compile>", which, f"{', '.join(unsupported)} is not applied by {step}", fix)


def update_variables(opt, grads, variables, lr):
    """What `opt.apply(grads, variables)` does to `variables` and their slots on one device, with the
    learning rate `lr` given and the step counter left alone.

    Why: the per-candidate updates of a step run inside a `tf.switch_case`, one branch per
    candidate; Keras' `apply` would trace in every branch its bookkeeping and, per variable, the
    learning-rate schedule again (for the weight decay): most of the branch. The arithmetic is
    Keras': gradients unscaled and clipped per variable, decay `v -= v * wd * lr`, then the
    optimizer's own `update_step`, then constraints.
    """
    pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
    if not pairs:
        return
    grads, variables = [g for g, _ in pairs], [v for _, v in pairs]
    if opt.loss_scale_factor is not None:
        grads = [g / opt.loss_scale_factor for g in grads]
    grads = opt._clip_gradients(grads)
    for g, v in zip(grads, variables):
        var = v.value  # as Keras' TF optimizer: the tf.Variable under the keras.Variable
        if opt.weight_decay is not None and opt._use_weight_decay(var):
            var.assign_sub(var * tf.cast(opt.weight_decay, var.dtype) * tf.cast(lr, var.dtype))
        opt.update_step(g, var, lr)
        if v.constraint is not None:
            v.assign(v.constraint(v))


def optimizer_slots(opt, variable):
    """The optimizer's slot variables of `variable` (momentum, Adam's moments, ...).

    Why: Keras has no public map from a variable to its slots; every built-in optimizer keeps
    each kind of slot in a list indexed like its trainable variables, so those lists are it."""
    opt = getattr(opt, "inner_optimizer", opt)
    i = opt._get_variable_index(variable)
    n = len(opt._trainable_variables)
    slots = []
    for name, value in vars(opt).items():
        if name != "_trainable_variables" and isinstance(value, (list, tuple)) and len(value) == n:
            slot = value[i]
            if isinstance(slot, keras.Variable) and tuple(slot.shape) == tuple(variable.shape):
                slots.append(slot)
    return slots


def apply_segments(opt, segments, js, update):
    """`update(variables)` for the concatenated BN parameters of one nested layer (`segments`:
    (variable, segment size per candidate)), keeping every element outside the segments of
    candidates `js` (the sampled index, a sandwich's fixed ones) and of their optimizer slots as
    it was: one update per parameter, exact for optimizers that update element by element
    (Lamb, Adafactor and Muon are refused at compile)."""
    if not segments:
        return
    kept = []
    for v, sizes in segments:
        mask = sampled.segment_mask(sizes, js)
        kept += [(t, tf.identity(t.value), mask) for t in [v] + optimizer_slots(opt, v)]
    update([v for v, _ in segments])
    for target, before, mask in kept:
        target.assign(tf.where(mask, target.value, before))


def largest_op(candidates):
    """The widest op of a layer, the largest kernel among the widest (never `zero`)."""
    ops = [space_lib.parse_op(c) for c in candidates if c != space_lib.ZERO]
    return max(ops, key=lambda o: (o.expand, o.kernel)).name


def smallest_op(candidates):
    """`zero` where the layer may be skipped, else its narrowest op with the smallest kernel."""
    if space_lib.ZERO in candidates:
        return space_lib.ZERO
    return min((space_lib.parse_op(c) for c in candidates), key=lambda o: (o.expand, o.kernel)).name


class WeightSteps:
    """The weight step of `SuperNet` (a mixin: it reads the net's layers, options and optimizer)."""

    @staticmethod
    def _ce(y, logits):
        return keras.ops.mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))

    def _student_loss(self, ce, logits, teacher):
        """A non-largest path's weight-step loss from its label CE: with a teacher (`distill`),
        mixed with the CE against the largest path's softmax."""
        if teacher is None:
            return ce
        soft = keras.ops.mean(keras.losses.categorical_crossentropy(teacher, logits, from_logits=True))
        return (1.0 - self.distill) * ce + self.distill * soft

    def weight_update_groups(self, wvars):
        """The weights every weight step moves (shared ones and the sandwich paths' ops, once each:
        nested candidates share kernels) and, per layer, the rest as (users, variables) groups:
        variables moved only when the sampled op is one of `users` (candidate indices). Each
        candidate's own weights form a group of one user; weights several candidates use (the
        kernels of nested candidates) form one group, so their update is traced once, not once
        per candidate. Both the one-device and the distributed step update by these groups, so
        both move the same variables."""
        cand = {id(v) for m in self.mixed_ops for v in m.trainable_variables}
        segmented = {id(v) for m in self.mixed_ops for v, _ in m.bn_segments()}  # by `apply_segments`
        always = [v for v in wvars if id(v) not in cand]
        for path in self.sandwich_paths:
            for m, j in zip(self.mixed_ops, path):
                always += [v for v in m.candidate_variables(j) if id(v) not in segmented]
        always = list({id(v): v for v in always}.values())
        applied = {id(v) for v in always} | segmented
        per_layer = []
        for m in self.mixed_ops:
            users, var_of = {}, {}
            for j in range(m.num_candidates):
                for v in m.candidate_variables(j):
                    if id(v) not in applied:
                        users.setdefault(id(v), []).append(j)
                        var_of[id(v)] = v
            groups = {}
            for key, js in users.items():
                groups.setdefault(tuple(js), []).append(var_of[key])
            per_layer.append(sorted(groups.items(), key=lambda g: (len(g[0]) == 1, g[0])))
        return always, per_layer

    @staticmethod
    def apply_groups(groups, index, num_candidates, update):
        """`update(variables)` for the groups of one layer (`weight_update_groups`) whose users
        include the sampled `index`: a shared group under one `tf.cond` (none when every candidate
        uses it), the candidates' own weights in one `tf.switch_case` on the index."""
        def run(vs):
            def branch():
                if vs:
                    update(vs)
                return tf.constant(0)
            return branch

        index = tf.convert_to_tensor(index)
        own = [[] for _ in range(num_candidates)]
        for users, vs in groups:
            if len(users) == 1:
                own[users[0]] = vs
            elif len(users) == num_candidates:
                update(vs)
            else:
                ran = tf.reduce_any(tf.equal(index, tf.constant(users, index.dtype)))
                tf.cond(ran, run(vs), lambda: tf.constant(0))
        tf.switch_case(index, [run(vs) for vs in own])

    def _apply_weight_step(self, grads, wvars, samples):
        """Shared weights and the sandwich paths' ops always; of the sampled op only its weights and slots."""
        opt = self.optimizer
        grad_of = {id(v): g for g, v in zip(grads, wvars)}
        always, per_layer = self.weight_update_groups(wvars)
        step = tf.identity(opt.iterations)
        lr = tf.identity(opt.learning_rate)  # the schedule at this step, for every update below
        opt.apply([grad_of[id(v)] for v in always], always)
        opt.iterations.assign(step)  # every update of the step sees the same step (Adam's bias correction)
        direct = not isinstance(opt, keras.optimizers.LossScaleOptimizer)

        def update(vs):
            if direct:
                update_variables(opt, [grad_of[id(v)] for v in vs], vs, lr)
            else:  # a wrapper's own apply (its scaling and checks), rewound to the step's schedule point
                opt.iterations.assign(step)
                opt.apply([grad_of[id(v)] for v in vs], vs)

        for k, (m, groups, index) in enumerate(zip(self.mixed_ops, per_layer, samples)):
            self.apply_groups(groups, index, m.num_candidates, update)
            apply_segments(opt, m.bn_segments(), [index] + [path[k] for path in self.sandwich_paths], update)
        opt.iterations.assign(step + 1)

    def weight_loss(self, x, y, samples, mode="single"):
        """The weight step's loss on (x, y) with the sampled path `samples` (and the sandwich's fixed
        paths), and the sampled path's CE and logits (what the metrics show). Called under a tape."""
        logits = self._forward(x, True, mode, samples)
        ce = self._ce(y, logits)  # what the metrics show, whatever the path learns from
        # Python ints: each fixed path is traced as a plain network, not through every layer's
        # C-way switch_case (tools/bench_search.py: 0.43x the tracing, 0.59x the graph's RSS)
        fixed = [self._forward(x, True, "single", list(path)) for path in self.sandwich_paths]
        # the largest (first fixed path) learns from the labels and teaches the others
        teacher = tf.stop_gradient(keras.ops.softmax(fixed[0])) if self.distill else None
        loss = self._student_loss(ce, logits, teacher)
        for k, fixed_logits in enumerate(fixed):  # summed, as BigNAS accumulates its children's gradients
            fixed_ce = self._ce(y, fixed_logits)
            loss = loss + (fixed_ce if k == 0 else self._student_loss(fixed_ce, fixed_logits, teacher))
        return loss, ce, logits

    def weight_samples(self, wmode):
        """Each layer's op of a weight step (None per layer in `full`): drawn by `weight_sampling`,
        or during the warm-up with `warmup_path='largest'` the largest op."""
        samples = [m.sample(wmode, uniform=self.weight_sampling == "uniform") for m in self.mixed_ops]
        if self.warmup_path == "largest":
            warm = tf.equal(self.arch_enabled, 0)  # drawn either way: the same draws follow the warm-up
            samples = [tf.where(warm, tf.constant(j, s.dtype), s) for s, j in zip(samples, self.largest_path)]
        return samples

    def weight_step(self, x, y):
        """One weight step; returns the sampled path's loss and logits (what the metrics show) and samples."""
        wmode = "full" if self.mode == "full" else "single"
        samples = self.weight_samples(wmode)
        wvars = self.weight_variables
        with tf.GradientTape() as tape:
            loss, ce, logits = self.weight_loss(x, y, samples, wmode)
        grads = tape.gradient(loss, wvars)
        if wmode == "full":
            self.optimizer.apply(grads, wvars)
        else:
            self._apply_weight_step(grads, wvars, samples)
        return ce, logits, samples
