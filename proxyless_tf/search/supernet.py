"""`SuperNet`: the over-parameterised network and the train step that searches it.

One `fit` step on a batch ((x, y), (x_val, y_val)):

1. weight step on (x, y): one path sampled per layer (`single`), cross-entropy, the weight
   optimizer applied to the shared weights and to the weights of the ops that ran — only
   those. In graph mode the untaken branches of `tf.switch_case` get a gradient of zero,
   not None, and momentum / Adam / weight decay would still move them (unlike the official
   PyTorch code, where they have no gradient and are skipped). So each layer applies the
   optimizer inside its own `tf.switch_case` on the sampled index: the other candidates'
   weights and slots are never touched. The optimizer's step counter is held so every
   apply of the step sees the same learning rate and it advances once per step.
2. every `arch_every` steps (after `warmup_epochs`), an architecture step on (x_val, y_val):
   two paths per layer (`two`, binary gates), loss = CE ⊕ expected latency (`mul#log`,
   `add#linear`, `add#abs` or `add#hinge`), the architecture optimizer (Adam, β1 = 0) on α only, then
   the pair rescale of every layer. The argmax network is evaluated on the same
   validation batch for the `valid_acc` metric.

With a `sandwich` (BigNAS, Yu et al. 2020; OFA's sandwich rule) the weight step also runs
fixed paths on the same batch — the largest network (every layer's widest, largest-kernel
op) and optionally the smallest (every skippable layer skipped, the narrowest op elsewhere) —
and applies the summed gradient once: their ops' weights are applied unconditionally, the
sampled op's through its `tf.switch_case` as above. With `distill` > 0 (BigNAS's in-place
distillation) the largest path learns from the labels and the others partly or wholly from
the largest's softmax on the same batch (held constant), at no extra forward pass.

In `full` mode (DARTS baseline) both steps use the softmax-weighted sum of all ops.
In `full_v2` mode the architecture step runs one sampled path per layer and recomputes the
other ops' outputs in the backward pass, so α gets the gate gradient of every op with one
path's activation memory (`MixedOp` explains how).
In `reinforce` mode (Proxyless-R) the architecture step samples K architectures, runs them
on the validation batch without any gradient, and moves α by REINFORCE with the reward
acc × (T / lat)^w against a baseline (`reinforce.py`: the moving average for K = 1, the
batch's mean reward for K > 1, as the official code's 10); the moving baseline and its
step count are non-trainable variables, so checkpoints keep them.

Both optimizers are built on their variables in `compile`, so they exist under any
strategy scope and are written to (and restored from) `.weights.h5` checkpoints and
`BackupAndRestore`.
"""

import math

import keras
import numpy as np
import tensorflow as tf

from proxyless_tf.layers import blocks
from proxyless_tf.search import reinforce
from proxyless_tf import space as space_lib
from proxyless_tf.errors import ConfigError
from proxyless_tf.search.latency_losses import DEFAULT_LOSS_PARAMS, LATENCY_LOSSES
from proxyless_tf.layers.mixed_op import MixedOp
from proxyless_tf.layers.nested import WEIGHT_SHARING

WEIGHT_SAMPLING = ("alpha", "uniform")
SANDWICH = ("none", "largest", "largest_smallest")
WARMUP_PATHS = ("sampled", "largest")
SEARCH_MODES = ("two", "full", "full_v2", "reinforce")


def largest_op(candidates):
    """The widest op of a layer, the largest kernel among the widest (never `zero`)."""
    ops = [space_lib.parse_op(c) for c in candidates if c != space_lib.ZERO]
    return max(ops, key=lambda o: (o.expand, o.kernel)).name


def smallest_op(candidates):
    """`zero` where the layer may be skipped, else its narrowest op with the smallest kernel."""
    if space_lib.ZERO in candidates:
        return space_lib.ZERO
    return min((space_lib.parse_op(c) for c in candidates), key=lambda o: (o.expand, o.kernel)).name


def derive_toward_target(logp, costs, fixed_cost, target_ms, tolerance, ceiling=False, start=None):
    """Op indices: the argmax (or `start`), then the cheapest edits (in lost log-probability per ms of error
    removed) until the predicted latency is within target ± tolerance.

    With `ceiling` the target is a budget: only latency above it is an error (the argmax is
    kept when it is faster than target x (1 + tolerance), and edits that overshoot downward
    cost nothing extra). Without, it is a band reached from both sides, which is what
    comparing networks at one latency needs; a search below its band then buys latency
    whether or not that buys accuracy.

    `costs`/`fixed_cost` are the table's calibrated per-candidate costs
    (`LatencyTable.layer_costs`, per-block term included), so the band is the one
    `LatencyTable.predict` reports. Single-layer swaps first; when none reduces the error
    (each overshoots: a space's smallest latency step can be wider than the band), a pair
    of swaps in two layers is tried. The argmax is returned unchanged when inside the band.
    `start` (op indices): begin from this network instead of the argmax (`sampled_derivation`).
    """
    cost = [np.asarray(r, np.float64) for r in costs]
    idx = [int(np.argmax(lp)) for lp in logp] if start is None else [int(i) for i in start]
    pred = fixed_cost + sum(cost[l][i] for l, i in enumerate(idx))
    moves = [(l, j) for l in range(len(idx)) for j in range(len(cost[l]))]

    def delta(l, j):  # (change of the prediction, log-probability lost)
        return cost[l][j] - cost[l][idx[l]], logp[l][idx[l]] - logp[l][j]

    def miss(err):
        return max(err, 0.0) if ceiling else abs(err)

    for _ in range(4 * len(idx)):
        err = pred - target_ms
        if miss(err) <= tolerance * target_ms:
            break
        best = None
        for l, j in moves:
            if j != idx[l]:
                d, lost = delta(l, j)
                gain = miss(err) - miss(err + d)
                if gain > 1e-12 and (best is None or lost / gain < best[0]):
                    best = (lost / gain, [(l, j)])
        if best is None:
            for a, (l1, j1) in enumerate(moves):
                if j1 == idx[l1]:
                    continue
                d1, lost1 = delta(l1, j1)
                for l2, j2 in moves[a + 1:]:
                    if l2 != l1 and j2 != idx[l2]:
                        d2, lost2 = delta(l2, j2)
                        gain = miss(err) - miss(err + d1 + d2)
                        if gain > 1e-12 and (best is None or (lost1 + lost2) / gain < best[0]):
                            best = ((lost1 + lost2) / gain, [(l1, j1), (l2, j2)])
        if best is None:
            break
        for l, j in best[1]:
            pred += delta(l, j)[0]
            idx[l] = j
    return idx


class LastValue(keras.metrics.Metric):
    """A metric that reports the latest value (e.g. the expected latency at the end of the epoch)."""

    def __init__(self, name, **kwargs):
        super().__init__(name=name, **kwargs)
        # "mean": every replica holds the same value, and a cross-replica read must not sum them
        self.value = self.add_variable(shape=(), initializer="zeros", name="value", aggregation="mean")

    def update_state(self, value):
        self.value.assign(keras.ops.cast(value, self.value.dtype))

    def result(self):
        return keras.ops.convert_to_tensor(self.value)

    def reset_state(self):
        pass  # keep the last value across epochs: it is a state, not an average


class _ArchPhase(keras.callbacks.Callback):
    """Turns the architecture step on once the warm-up epochs are over."""

    def on_epoch_begin(self, epoch, logs=None):
        self.model.arch_enabled.assign(1 if epoch >= self.model.warmup_epochs else 0)


@keras.saving.register_keras_serializable(package="proxyless_tf")
class SuperNet(keras.Model):
    """Every candidate of every searchable layer, with architecture logits, as one Keras model.

    Args:
        space: a `SearchSpace` (or its dict).
        num_classes: classifier width.
        latency_table: a `LatencyTable` covering every block of `space` (None: accuracy only).
        mode: `two` (ProxylessNAS binary gates, one path per weight step), `full`
            (DARTS: every op in every step; the memory baseline), `full_v2` (gate gradients
            of every op, one path's memory, recomputation in the backward) or `reinforce`
            (Proxyless-R: REINFORCE on a sampled architecture's reward).
        seed: seed of the path sampling (layer i uses seed + i); None: random.
        latency_space: the space the latency term is looked up in (None: `space`). A search at
            a proxy resolution passes the same space at the deployment resolution here: the
            network runs at `space`'s input size, while `expected_latency`, `argmax_latency`,
            the target's range and `derive_arch`'s latency-aware swaps use the table's keys at
            `latency_space`'s. Both must have the same searchable layers and candidates.
        latency_num_classes: classifier width of the table's head entry (None: `num_classes`);
            the head is a constant of every architecture, so this moves no choice, only the
            absolute milliseconds (e.g. a table measured for 1000 classes, searched on 10).
        weight_sharing: `independent` (the paper) or `nested` (MBConv candidates of a layer
            cut from shared kernels, `nested.py`: the supernet learns within a small budget).
        weight_sampling: the path of a weight step: `alpha` (the paper: drawn from softmax(α),
            so the ops α favours get the most weight updates) or `uniform` (every op as often,
            whatever α says; α still learns from the binary gates on validation batches). The
            paper's sampling lets the supernet score its favourites higher because it trained
            them more (see research/tools/experiment_supernet_ranking.py); uniform paths remove that
            feedback at the price of training the eventual choice less.
        sandwich: fixed paths every weight step trains besides the sampled one: `none` (the
            paper), `largest` or `largest_smallest` (see module doc; `largest_op`,
            `smallest_op`). Why: with nested weights the channels beyond the narrowest
            expansion are trained only when a wide op is sampled, so the supernet scores wide
            layers no better than narrow ones (the width column of
            research/tools/experiment_supernet_ranking.py); the largest path trains them every step,
            and the smallest trains every layer to work after skipped ones. Each fixed path
            costs one more forward and backward per weight step and keeps its activations
            for the backward; the fixed paths are traced as plain networks (no `switch_case`),
            so the graph hardly grows (`[ls_v2]`: peak RSS 3.7–4.1 GiB, as the plain search;
            5.5–5.8 when they went through every layer's `switch_case`).
        distill: with a sandwich that runs the largest path, the weight w of its soft labels in
            the other paths' loss: (1 − w) · CE(labels) + w · CE(largest's softmax), 1 being
            BigNAS's in-place distillation. Why: a child that imitates the largest network on
            every batch learns the function the wide channels compute, so the supernet may score
            a network by how near it comes to the largest rather than by how often it was sampled.
            Measured at w = 0.5 (research/RESULTS.md `[kd05]`): the aware networks got worse.
        warmup_path: the path of the warm-up epochs' weight steps: `sampled` (the paper: as
            after the warm-up) or `largest` (the largest network only, once-for-all's first
            stage: train the full network, then let the sub-networks share its weights). Why:
            a narrow op's nested channels are then a slice of a trained wide layer, so cutting
            them away costs accuracy in the supernet as it does in a retrained network, where
            a supernet trained on sampled paths from the start scores wide layers no better.
            Only the sampled path is replaced: a sandwich's fixed paths still run in the warm-up
            (with `largest_smallest` the smallest trains too and the largest's gradient counts
            twice, as the sampled and as the fixed path).
    """

    def __init__(self, space, num_classes, latency_table=None, mode="two", seed=None, latency_space=None,
                 latency_num_classes=None, weight_sharing="independent", weight_sampling="alpha", sandwich="none",
                 distill=0.0, warmup_path="sampled", **kwargs):
        kwargs.setdefault("name", "supernet")
        super().__init__(**kwargs)
        if isinstance(space, dict):
            space = space_lib.SearchSpace.from_dict(space)
        if mode not in SEARCH_MODES:
            raise ConfigError("<supernet>", "mode", f"unknown search mode {mode!r}", f"use one of {SEARCH_MODES}")
        self.space = space
        self.num_classes = int(num_classes)
        self.mode = mode
        self.seed = seed
        if weight_sharing not in WEIGHT_SHARING:
            raise ConfigError("<supernet>", "weight_sharing", f"unknown weight sharing {weight_sharing!r}",
                              f"use one of {WEIGHT_SHARING}")
        self.weight_sharing = weight_sharing
        if weight_sampling not in WEIGHT_SAMPLING:
            raise ConfigError("<supernet>", "weight_sampling", f"unknown weight-step sampling {weight_sampling!r}",
                              f"use one of {WEIGHT_SAMPLING}")
        self.weight_sampling = weight_sampling
        if sandwich not in SANDWICH:
            raise ConfigError("<supernet>", "sandwich", f"unknown sandwich {sandwich!r}", f"use one of {SANDWICH}")
        self.sandwich = sandwich
        # per layer, the candidate index of the largest op: the sandwich's first fixed path and
        # the warm-up path of warmup_path="largest"
        self.largest_path = [l.candidates.index(largest_op(l.candidates)) for l in space.layers]
        picks = {"none": (), "largest": (largest_op,), "largest_smallest": (largest_op, smallest_op)}[sandwich]
        # per fixed path, per layer: the candidate index (constants of the traced step)
        self.sandwich_paths = [[l.candidates.index(pick(l.candidates)) for l in space.layers] for pick in picks]
        distill = float(distill)
        if not 0.0 <= distill <= 1.0:
            raise ConfigError("<supernet>", "distill", f"{distill} is not in [0, 1]",
                              "0 trains every path on the labels, 1 the non-largest paths on the largest's softmax")
        if distill and not sandwich.startswith("largest"):
            raise ConfigError("<supernet>", "distill", f"needs the largest path as the teacher, but sandwich={sandwich!r}",
                              "pass sandwich='largest' or 'largest_smallest', or distill=0")
        self.distill = distill
        if warmup_path not in WARMUP_PATHS:
            raise ConfigError("<supernet>", "warmup_path", f"unknown warm-up path {warmup_path!r}",
                              f"use one of {WARMUP_PATHS}")
        if warmup_path != "sampled" and mode == "full":
            raise ConfigError("<supernet>", "warmup_path", f"{warmup_path!r} needs one path per weight step, but "
                              "mode='full' runs every op", "use mode='two' (or full_v2, reinforce) or "
                              "warmup_path='sampled'")
        self.warmup_path = warmup_path
        self.latency_table = latency_table
        if isinstance(latency_space, dict):
            latency_space = space_lib.SearchSpace.from_dict(latency_space)
        self.latency_space = latency_space if latency_space is not None else space
        if [l.candidates for l in self.latency_space.layers] != [l.candidates for l in space.layers]:
            raise ConfigError("<supernet>", "latency_space",
                              f"space {self.latency_space.name!r} does not have the searchable layers and candidates "
                              f"of {space.name!r}", "pass the same space at another resolution")
        self.latency_num_classes = int(latency_num_classes) if latency_num_classes else self.num_classes
        if latency_table is not None:
            latency_table.check_space(self.latency_space, self.latency_num_classes)
        st, fb = space.stem, space.first_block
        self.stem_layers = blocks.conv_bn_act_layers(keras, st["out_channels"], st["kernel"], st["stride"],
                                                     space.bn_eps, "stem")
        fbs = space_lib.parse_op(fb["op"])
        self.block0 = blocks.MBConv(st["out_channels"], fb["out_channels"], fbs.kernel, fbs.expand, 1,
                                    space.bn_eps, residual=st["out_channels"] == fb["out_channels"],
                                    name="block0")
        self.mixed_ops = [
            MixedOp.from_layer_spec(l, space.bn_eps, mode="single",
                                    seed=None if seed is None else int(seed) + l.index, name=f"layer{l.index}",
                                    weight_sharing=weight_sharing)
            for l in space.layers]
        self.head_layers = blocks.conv_bn_act_layers(keras, space.head["out_channels"], 1, 1, space.bn_eps, "head")
        self.pool = keras.layers.GlobalAveragePooling2D(name="pool")
        self.classifier = keras.layers.Dense(self.num_classes, name="classifier")
        self.arch_enabled = keras.Variable(1, dtype="int32", trainable=False, name="arch_enabled")
        self._path_fns = None  # traced on first use (`_path_functions`)
        self.warmup_epochs = 0
        self.arch_every = 1
        self.arch_optimizer = None
        self._metric_list = [
            keras.metrics.Mean(name="loss"),
            keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
            keras.metrics.SparseCategoricalAccuracy(name="valid_acc"),
            keras.metrics.Mean(name="arch_loss"),
            LastValue("expected_ms"),
            LastValue("argmax_ms"),
            LastValue("entropy"),
        ]
        if mode == "reinforce":
            self._init_reinforce()
        self.build((None,) + tuple(space.input_shape))

    # ---- structure --------------------------------------------------------------------------
    def build(self, input_shape):
        if self.built:
            return
        # One forward of every op (batch 1, inference) creates every variable before compile.
        self._forward(keras.ops.zeros((1,) + tuple(input_shape[1:])), False, "full")
        self.built = True

    def _forward(self, x, training, mode, samples=None):
        x = blocks.apply_layers(self.stem_layers, x, training)
        x = self.block0(x, training=training)
        for i, m in enumerate(self.mixed_ops):
            x = m(x, training=training, mode=mode, sample=None if samples is None else samples[i])
        x = blocks.apply_layers(self.head_layers, x, training)
        return self.classifier(self.pool(x))

    def call(self, inputs, training=None):
        """The current argmax network (what `predict` and `evaluate` see)."""
        return self._forward(inputs, training, "argmax")

    @property
    def arch_variables(self):
        return [m.alpha for m in self.mixed_ops]

    @property
    def weight_variables(self):
        arch = {id(v) for v in self.arch_variables}
        return [v for v in self.trainable_variables if id(v) not in arch]

    @property
    def metrics(self):
        return list(self._metric_list)

    def _metric(self, name):
        return next(m for m in self._metric_list if m.name == name)

    # ---- latency ----------------------------------------------------------------------------
    def expected_latency(self):
        """E[latency] under softmax(α), calibrated; differentiable in α. 0 without a table."""
        if self.latency_table is None:
            return keras.ops.zeros(())
        total = keras.ops.convert_to_tensor(self._fixed_cost, "float32")
        for m, cost in zip(self.mixed_ops, self._costs):
            total = total + keras.ops.sum(keras.ops.softmax(m.alpha) * cost)
        return total

    def argmax_latency(self):
        if self.latency_table is None:
            return keras.ops.zeros(())
        total = keras.ops.convert_to_tensor(self._fixed_cost, "float32")
        for m, cost in zip(self.mixed_ops, self._costs):
            total = total + keras.ops.take(cost, keras.ops.argmax(m.alpha))
        return total

    @property
    def _costs(self):
        """Calibrated per-candidate costs (per-block term included): the numbers `predict` adds up.

        Read from the table on use, so a calibration refitted after the net was built counts.
        """
        return self.latency_table.layer_costs(self.latency_space)

    @property
    def _fixed_cost(self):
        return self.latency_table.fixed_cost(self.latency_space, self.latency_num_classes)

    def latency_arch(self, arch):
        """`arch` (of `space`) as an `Arch` of `latency_space`: what the table predicts."""
        return space_lib.Arch(self.latency_space, list(arch.ops))

    def mean_entropy(self):
        ent = [-keras.ops.sum(keras.ops.softmax(m.alpha) * keras.ops.log_softmax(m.alpha)) for m in self.mixed_ops]
        return keras.ops.mean(keras.ops.stack(ent))

    # ---- Proxyless-R (mode `reinforce`) ------------------------------------------------------
    def _init_reinforce(self):
        """Baseline state as non-trainable variables (saved with the weights) and two metrics."""
        self.reward_baseline = keras.Variable(0.0, dtype="float32", trainable=False, name="reward_baseline")
        self.reward_steps = keras.Variable(0, dtype="int32", trainable=False, name="reward_steps")
        self._metric_list += [keras.metrics.Mean(name="reward"), LastValue("baseline")]
        self.reinforce_w, self.baseline_decay, self.latency_fn, self.reinforce_samples = 0.1, 0.99, None, 1
        self.reinforce_w_under = None

    def sampled_latency(self, samples):
        """Latency (ms) of the architecture `samples` (one index per layer), no gradient.

        `latency_fn(arch) -> ms` from `compile` when given (any Python code: a device
        measurement, a model), else the table's calibrated prediction.
        """
        if self.latency_fn is not None:
            idx = keras.ops.stack([keras.ops.cast(s, "int32") for s in samples])

            def measure(a):
                arch = space_lib.Arch(self.latency_space, [m.candidates[int(i)] for m, i in zip(self.mixed_ops, a)])
                return np.float32(self.latency_fn(arch))

            ms = tf.numpy_function(measure, [idx], tf.float32, stateful=True)
            return tf.reshape(ms, ())
        total = keras.ops.convert_to_tensor(self._fixed_cost, "float32")
        for cost, s in zip(self._costs, samples):
            total = total + keras.ops.take(cost, s)
        return total

    def reinforce_rollouts(self, x_val, y_val, samples=None):
        """The K draws of one update: (correct predictions, latencies, op indices K × layers).

        Each architecture is drawn (each layer's SeedGenerator) and run forward on the same
        batch without a tape (no gradient reaches the weights). The K forwards are a
        `tf.while_loop`, so the traced graph holds one copy of the network whatever K is.
        Counts, not accuracies, so replicas can sum them (`replica_step`).
        `samples` (tests): one index per layer (K = 1) or K such lists, used instead of draws.
        """
        k = self.reinforce_samples
        fixed = None
        if samples is not None:
            fixed = tf.reshape(tf.cast(tf.stack(samples) if k == 1 else samples, tf.int32),
                               (k, len(self.mixed_ops)))
        use_lat = self._reinforce_uses_latency()

        def body(j, correct, lats, drawn):
            s = [m.sample("single") for m in self.mixed_ops] if fixed is None else tf.unstack(fixed[j])
            logits = keras.ops.stop_gradient(self._forward(x_val, True, "single", s))
            n = reinforce.batch_correct(y_val, logits)
            lat = self.sampled_latency(s) if use_lat else keras.ops.zeros(())
            return (j + 1, correct.write(j, n), lats.write(j, lat),
                    drawn.write(j, tf.stack([tf.cast(i, tf.int32) for i in s])))

        arrays = [tf.TensorArray(tf.float32, size=k), tf.TensorArray(tf.float32, size=k),
                  tf.TensorArray(tf.int32, size=k)]
        _, correct, lats, drawn = tf.while_loop(lambda j, *_: j < k, body, [tf.constant(0)] + arrays)
        return correct.stack(), lats.stack(), drawn.stack()

    def _reinforce_uses_latency(self):
        return self.latency_loss is not None and (self.latency_table is not None or self.latency_fn is not None)

    def reinforce_gradients(self, accs, lats, drawn):
        """α's gradients of one update from its K accuracies, latencies and draws; changes nothing.

        Rewards R_j = acc_j × (T / lat_j)^w (`reinforce.reward`); the surrogate
        −(1/K)·Σ_j (R_j − b)·Σ_l log p_l(a_jl) is minimised. K = 1: b is the moving-average
        baseline from before this update. K > 1 (the official code's `rl_batch_size`, 10): b is
        the mean of the K rewards, which the official baseline rule `b += 0.99·(mean R − b)`
        also lands on to 1 %; R_j − mean R is (K − 1)/K × the leave-one-out advantage, so the
        gradient stays unbiased up to a constant scale that Adam removes.
        Returns (grads, rewards, advantages, new moving baseline, surrogate loss).
        """
        use_lat = self._reinforce_uses_latency()
        rewards = reinforce.reward(accs, lats if use_lat else None, self.target_ms if use_lat else None,
                                   self.reinforce_w, self.reinforce_w_under)
        if self.reinforce_samples == 1:
            adv, b_new = reinforce.advantage_and_baseline(rewards[0], self.reward_baseline, self.reward_steps,
                                                          self.baseline_decay)
            advantages = adv[None]
        else:
            advantages, b_new = reinforce.batch_advantages_and_baseline(rewards, self.reward_baseline,
                                                                        self.reward_steps, self.baseline_decay)
        alphas = [a.value for a in self.arch_variables]
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(alphas)
            loss = reinforce.batch_surrogate_loss(advantages, alphas, drawn)
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, alphas)]
        return grads, rewards, advantages, b_new, loss

    def reinforce_step(self, x_val, y_val, samples=None):
        """One REINFORCE update of α on a validation batch (one device); returns the step's numbers.

        `reinforce_rollouts` draws and runs the K architectures, `reinforce_gradients` turns
        them into α's gradients, Adam (the architecture optimizer) applies them.
        """
        correct, lats, drawn = self.reinforce_rollouts(x_val, y_val, samples)
        accs = correct / tf.cast(tf.shape(y_val)[0], tf.float32)
        grads, rewards, advantages, b_new, loss = self.reinforce_gradients(accs, lats, drawn)
        self.arch_optimizer.apply(grads, self.arch_variables)
        self.reward_baseline.assign(b_new)
        self.reward_steps.assign_add(1)
        mean_r = keras.ops.mean(rewards)
        self._metric("reward").update_state(mean_r)
        self._metric("baseline").update_state(b_new)
        return {"loss": loss, "reward": mean_r, "rewards": rewards, "advantage": advantages,
                "acc": keras.ops.mean(accs), "samples": drawn, "latency_ms": keras.ops.mean(lats)}

    # ---- compile ------------------------------------------------------------------------------
    def compile(self, weight_optimizer=None, arch_optimizer=None, latency_loss="mul#log", target_ms=None,
                loss_params=None, arch_every=1, warmup_epochs=0, reinforce_w=0.1, baseline_decay=0.99,
                latency_fn=None, reinforce_samples=1, reinforce_w_under=None, **kwargs):
        """Set both optimizers (built here), the latency loss and the schedule of arch steps.

        Args:
            weight_optimizer: optimizer of the network weights (default SGD Nesterov 0.9, lr 0.025).
            arch_optimizer: optimizer of α (default Adam lr 1e-3, betas (0, 0.999), as the paper).
            latency_loss: `mul#log` α·CE·(log E / log T)^β, `add#linear` CE + λ(E − T)/T,
                `add#abs` CE + λ|E − T|/T (pulls toward T from both sides), `add#hinge`
                CE + λ·max(0, E − T)/T (a budget: no pull at all once E is under T, so there the
                choice is left to CE alone), or None (CE only).
            target_ms: T, the latency reference; must lie inside the space's reachable range.
            loss_params: overrides of {alpha, beta} / {lambda}.
            arch_every: an architecture step every this many weight steps.
            warmup_epochs: epochs of weight-only training first.
            reinforce_w: `reinforce` mode: w of the reward acc × (T / lat)^w. There any
                latency_loss but None means this latency-weighted reward (None: accuracy).
            baseline_decay: `reinforce` mode: decay of the moving-average reward baseline.
            latency_fn: `reinforce` mode: optional `fn(arch) -> ms` used instead of the table
                (non-differentiable: a measurement on a device, say). Under a strategy every
                replica calls it for every draw (concurrently, from its own thread) and the
                results are averaged: a device measurement there is timed under that load.
            reinforce_samples: `reinforce` mode: architectures drawn per update (K; the
                official code's `rl_batch_size` is 10, and so is the search CLI's default;
                1 here keeps the library's one-draw rule), their gradients averaged against
                the batch's mean reward.
            reinforce_w_under: `reinforce` mode: the reward's exponent at or under the target
                (None: reinforce_w; 0 with reinforce_w=1: MnasNet's hard constraint).
        """
        weight_optimizer = weight_optimizer or keras.optimizers.SGD(0.025, momentum=0.9, nesterov=True)
        super().compile(optimizer=weight_optimizer, **kwargs)
        self.arch_optimizer = arch_optimizer or keras.optimizers.Adam(1e-3, beta_1=0.0, beta_2=0.999)
        if latency_loss is not None and latency_loss not in LATENCY_LOSSES:
            raise ConfigError("<compile>", "latency_loss", f"unknown latency loss {latency_loss!r}",
                              f"use one of {LATENCY_LOSSES}")
        reinforce_fn = self.mode == "reinforce" and latency_fn is not None
        if latency_loss is not None and self.latency_table is None and not reinforce_fn:
            raise ConfigError("<compile>", "latency_table", "a latency loss needs a latency table",
                              "pass latency_table= to SuperNet, or latency_loss=None")
        if int(arch_every) < 1 or int(warmup_epochs) < 0:
            raise ConfigError("<compile>", "arch_every/warmup_epochs",
                              f"arch_every={arch_every}, warmup_epochs={warmup_epochs}",
                              "use arch_every >= 1 and warmup_epochs >= 0")
        self.latency_loss = latency_loss
        self.loss_params = dict(DEFAULT_LOSS_PARAMS.get(latency_loss, {}))
        self.loss_params.update(loss_params or {})
        if self.mode == "reinforce":
            if int(reinforce_samples) != reinforce_samples or int(reinforce_samples) < 1:
                raise ConfigError("<compile>", "reinforce_samples", f"got {reinforce_samples}",
                                  "draw at least one architecture per update, a whole number (the official code: 10)")
            if reinforce_w_under is not None and float(reinforce_w_under) < 0:
                raise ConfigError("<compile>", "reinforce_w_under", f"{reinforce_w_under} would reward a slower "
                                  "network under the target", "pass 0 (MnasNet's hard constraint) or a positive exponent")
            self.reinforce_w, self.baseline_decay, self.latency_fn = float(reinforce_w), float(baseline_decay), latency_fn
            self.reinforce_samples = int(reinforce_samples)
            self.reinforce_w_under = None if reinforce_w_under is None else float(reinforce_w_under)
        if latency_loss is not None and self.mode == "reinforce" and self.latency_table is None:
            self.target_ms = self._check_target_value(target_ms)
        elif latency_loss is not None:
            self.target_ms = self._check_target(target_ms, "reward" if self.mode == "reinforce" else latency_loss)
        else:
            self.target_ms = target_ms
        self.arch_every = int(arch_every)
        self.warmup_epochs = int(warmup_epochs)
        self.arch_enabled.assign(1 if self.warmup_epochs == 0 else 0)
        self.optimizer.build(self.weight_variables)
        self.arch_optimizer.build(self.arch_variables)

    @staticmethod
    def _check_target_value(target_ms):
        if target_ms is None or not math.isfinite(float(target_ms)) or float(target_ms) <= 0:
            raise ConfigError("target_ms", "value", f"needs a positive target latency, got {target_ms!r}",
                              "pass target_ms (the reward's reference latency)")
        return float(target_ms)

    def _check_target(self, target_ms, latency_loss):
        lo, hi = self.latency_table.latency_range(self.latency_space, self.latency_num_classes)
        src = self.latency_table.path or "<latency table>"
        if target_ms is None or not math.isfinite(float(target_ms)) or float(target_ms) <= 0:
            raise ConfigError("target_ms", "value", f"needs a positive target latency, got {target_ms!r}",
                              f"pick a target inside the reachable range [{lo:.4g}, {hi:.4g}] ms of {src}")
        t = float(target_ms)
        if not lo <= t <= hi:
            raise ConfigError("target_ms", "value", f"{t:g} ms is outside the reachable range "
                              f"[{lo:.4g}, {hi:.4g}] ms of this space on {src}",
                              f"pick a target between {lo:.4g} and {hi:.4g} ms")
        if latency_loss == "mul#log" and lo <= 1.0:
            raise ConfigError("latency_loss", "mul#log", f"log-latency ratio is undefined for latencies <= 1 ms "
                              f"(this space reaches {lo:.4g} ms)", "use add#linear, add#abs or add#hinge")
        return t

    def arch_loss(self, ce, expected_ms):
        """CE ⊕ latency term, as in the paper (`mul#log`, `add#linear`) plus `add#abs` and `add#hinge`.

        `add#hinge` exists because the paper's terms price every millisecond, under the target
        too: where CE cannot tell the candidates apart (width, in the supernets of RESULTS.md),
        that steady pull alone decides, and it picks the cheapest op per layer."""
        if self.latency_loss is None:
            return ce
        t = self.target_ms
        if self.latency_loss == "mul#log":
            p = self.loss_params
            return p["alpha"] * ce * (keras.ops.log(expected_ms) / math.log(t)) ** p["beta"]
        rel = (expected_ms - t) / t
        if self.latency_loss == "add#abs":
            rel = keras.ops.abs(rel)
        elif self.latency_loss == "add#hinge":
            rel = keras.ops.relu(rel)
        return ce + self.loss_params["lambda"] * rel

    # ---- training -------------------------------------------------------------------------------
    def fit(self, *args, callbacks=None, **kwargs):
        return super().fit(*args, callbacks=list(callbacks or []) + [_ArchPhase()], **kwargs)

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
        nested candidates share kernels) and, per layer and candidate, the rest of its weights —
        moved only when that candidate is the sampled one. Both the one-device and the
        distributed step update by these groups, so both move the same variables."""
        cand = {id(v) for m in self.mixed_ops for v in m.trainable_variables}
        always = [v for v in wvars if id(v) not in cand]
        for path in self.sandwich_paths:
            for m, j in zip(self.mixed_ops, path):
                always += m.candidate_variables(j)
        always = list({id(v): v for v in always}.values())
        applied = {id(v) for v in always}
        per_layer = [[[v for v in m.candidate_variables(j) if id(v) not in applied] for j in range(m.num_candidates)]
                     for m in self.mixed_ops]
        return always, per_layer

    def _apply_weight_step(self, grads, wvars, samples):
        """Shared weights and the sandwich paths' ops always; of the sampled op only its weights and slots."""
        opt = self.optimizer
        grad_of = {id(v): g for g, v in zip(grads, wvars)}
        always, per_layer = self.weight_update_groups(wvars)
        step = tf.identity(opt.iterations)
        opt.apply([grad_of[id(v)] for v in always], always)
        for groups, index in zip(per_layer, samples):
            branches = []
            for vs in groups:
                def branch(vs=vs):
                    if vs:
                        opt.iterations.assign(step)  # same lr schedule point for every apply
                        opt.apply([grad_of[id(v)] for v in vs], vs)
                    return tf.constant(0)

                branches.append(branch)
            tf.switch_case(index, branches)
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

    def arch_step(self, x_val, y_val):
        """Binary-gate (two, full_v2), full or REINFORCE step of α on a validation batch."""
        if self.mode == "reinforce":
            return self.reinforce_step(x_val, y_val)["loss"]
        amode = self.mode
        alphas = self.arch_variables
        samples = [m.sample(amode) for m in self.mixed_ops]
        before = [tf.identity(a) for a in alphas]
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch([a.value for a in alphas])
            logits = self._forward(x_val, True, amode, samples)
            ce = self._ce(y_val, logits)
            loss = self.arch_loss(ce, self.expected_latency())
        grads = tape.gradient(loss, [a.value for a in alphas])
        grads = [tf.convert_to_tensor(g) for g in grads]
        self.arch_optimizer.apply(grads, alphas)
        if amode == "two":
            for m, (pair, _), b in zip(self.mixed_ops, samples, before):
                m.rescale(b, pair)
        return loss

    def train_step(self, data):
        if tf.distribute.has_strategy():  # Mirrored / MultiWorker: sync points outside control flow
            from proxyless_tf.search import replica_step

            return replica_step.train_step(self, data)
        (x, y), (x_val, y_val) = data
        ce, logits, _ = self.weight_step(x, y)
        step = self.optimizer.iterations - 1
        do_arch = tf.logical_and(tf.equal(self.arch_enabled, 1), tf.equal(step % self.arch_every, 0))

        def arch_branch():
            loss = self.arch_step(x_val, y_val)
            self._metric("arch_loss").update_state(loss)
            self._metric("valid_acc").update_state(y_val, self._forward(x_val, False, "argmax"))
            return tf.constant(0)

        tf.cond(do_arch, arch_branch, lambda: tf.constant(0))
        return self.step_metrics(ce, y, logits)

    def step_metrics(self, ce, y, logits):
        """Update the per-step metrics after a weight step; the logs `fit` shows (also under a strategy)."""
        self._metric("loss").update_state(ce)
        self._metric("accuracy").update_state(y, logits)
        self._metric("expected_ms").update_state(self.expected_latency())
        self._metric("argmax_ms").update_state(self.argmax_latency())
        self._metric("entropy").update_state(self.mean_entropy())
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        if isinstance(data[0], tuple) and len(data) == 2 and isinstance(data[1], tuple):
            data = data[1]  # a search batch: evaluate on its validation half
        x, y = data[0], data[1]
        logits = self._forward(x, False, "argmax")
        self._metric("loss").update_state(self._ce(y, logits))
        self._metric("accuracy").update_state(y, logits)
        return {m.name: m.result() for m in self._metric_list[:2]}

    # ---- results ----------------------------------------------------------------------------------
    def derive_arch(self, target_ms=None, tolerance=0.1, ceiling=False, start=None):
        """The argmax architecture as a plain `Arch` of `space` (`latency_arch` rebases it).

        With `target_ms`, a latency-aware derivation (`derive_toward_target`): when the
        argmax network's predicted latency is outside target ± tolerance, swaps that move it
        toward the target are made greedily, cheapest first in lost log-probability per ms
        gained, until it is inside (or no single or paired swap helps); with `ceiling`, only
        when it is above target x (1 + tolerance). `self.derive_changes` records how many layers
        were changed, so reports can say whether the argmax alone met the target.
        `start` (op indices per layer): the network the edits begin from instead of the argmax.
        """
        logp = self.alpha_logp()
        if target_ms is not None and self.latency_table is not None:
            idx = derive_toward_target(logp, self._costs, self._fixed_cost, target_ms, tolerance, ceiling, start)
        else:
            idx = [int(np.argmax(lp)) for lp in logp] if start is None else [int(i) for i in start]
        self.derive_changes = sum(int(i != int(np.argmax(lp))) for i, lp in zip(idx, logp))
        ops = [m.candidates[i] for m, i in zip(self.mixed_ops, idx)]
        return space_lib.Arch(self.space, ops)

    def predicted_ms_of(self, indices):
        """The table's prediction (what `LatencyTable.predict` reports) of many networks at once:
        `indices` is (networks, layers) of op indices; returns one float per network."""
        indices = np.asarray(indices)
        return self._fixed_cost + sum(np.asarray(c, np.float64)[indices[:, l]] for l, c in enumerate(self._costs))

    def arch_of(self, indices):
        """The `Arch` of `space` with op `indices[l]` in searchable layer l."""
        return space_lib.Arch(self.space, [m.candidates[int(i)] for m, i in zip(self.mixed_ops, indices)])

    def alpha_logp(self):
        """Per layer, log softmax(α) as float64 numpy: what the derivations rank ops by."""
        return [keras.ops.convert_to_numpy(keras.ops.log_softmax(m.alpha)).astype(np.float64)
                for m in self.mixed_ops]

    def _path_functions(self):
        """(BN re-estimation forward, inference forward) of one path given as an int32 vector of op
        indices, traced once: scoring many networks (`sampled_derivation`, `supernet_eval`) would
        otherwise retrace the whole supernet for each one."""
        if self._path_fns is None:
            def fn(training):
                return tf.function(lambda x, s: self._forward(x, training, "single",
                                                              tf.unstack(s, num=len(self.mixed_ops))))

            self._path_fns = (fn(True), fn(False))
        return self._path_fns

    def evaluate_argmax(self, valid_ds, train_ds=None, recalibration_steps=0, arch=None):
        """Accuracy of the argmax network (or of `arch`, with the supernet's weights) on (x, y) batches.

        Its BN statistics are first re-estimated on `recalibration_steps` training batches
        (inference forwards in training mode, no weight update): the moving averages of the
        shared supernet mix every path that ran, as the official code's reset of running
        statistics before validation acknowledges.
        """
        if arch is None:
            recal = tf.function(lambda x: self._forward(x, True, "argmax"))
            infer = tf.function(lambda x: self._forward(x, False, "argmax"))
        else:
            path = tf.constant([m.candidates.index(op) for m, op in zip(self.mixed_ops, arch.ops)], tf.int32)
            recal_path, infer_path = self._path_functions()
            recal, infer = (lambda x: recal_path(x, path)), (lambda x: infer_path(x, path))
        if train_ds is not None and recalibration_steps:
            for batch in train_ds.take(recalibration_steps):
                recal(batch[0][0] if isinstance(batch[0], tuple) else batch[0])
        acc = keras.metrics.SparseCategoricalAccuracy()
        for x, y in valid_ds:
            acc.update_state(y, infer(x))
        return float(acc.result())

    def alpha_probs(self):
        """Per layer, {op: probability}: what the α history records."""
        out = []
        for m in self.mixed_ops:
            p = keras.ops.convert_to_numpy(keras.ops.softmax(m.alpha))
            out.append({op: round(float(v), 6) for op, v in zip(m.candidates, p)})
        return out

    def get_config(self):
        config = {"space": self.space.to_dict(), "num_classes": self.num_classes, "mode": self.mode,
                  "seed": self.seed, "name": self.name}
        if self.latency_space is not self.space:
            config["latency_space"] = self.latency_space.to_dict()
        if self.latency_num_classes != self.num_classes:
            config["latency_num_classes"] = self.latency_num_classes
        if self.weight_sharing != "independent":
            config["weight_sharing"] = self.weight_sharing
        if self.weight_sampling != "alpha":
            config["weight_sampling"] = self.weight_sampling
        if self.sandwich != "none":
            config["sandwich"] = self.sandwich
        if self.distill:
            config["distill"] = self.distill
        if self.warmup_path != "sampled":
            config["warmup_path"] = self.warmup_path
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)
