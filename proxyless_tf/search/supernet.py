"""`SuperNet`: the supernet of `proxyless_tf.models.supernet` with the train step that searches it.

One `fit` step on a batch ((x, y), (x_val, y_val)):

1. weight step on (x, y) (`weight_step.py`): one path sampled per layer, cross-entropy, the
   weight optimizer applied to the shared weights and to the weights of the ops that ran —
   only those (and a sandwich's fixed paths, when there is one).
2. every `arch_every` steps (after `warmup_epochs`), an architecture step on (x_val, y_val):
   two paths per layer (`two`, binary gates, `MixedOp`), loss = CE ⊕ expected latency
   (`mul#log`, `add#linear`, `add#abs` or `add#hinge`; E over softmax(α) as the paper, or over
   the sampled pair as the official code with `latency_probs="pair"`), the architecture optimizer (Adam,
   β1 = 0) on α only, then the pair rescale of every layer. The argmax network is evaluated
   on the same validation batch for the `valid_acc` metric.

In `full` mode (DARTS baseline) both steps use the softmax-weighted sum of all ops.
In `full_v2` mode the architecture step runs one sampled path per layer and recomputes the
other ops' outputs in the backward pass, so α gets the gate gradient of every op with one
path's activation memory (`MixedOp` explains how).
In `reinforce` mode (Proxyless-R) the architecture step samples K architectures and moves α by
REINFORCE (`reinforce.py`). Under a `tf.distribute` strategy the step is `replica_step.py`.
The derived network: `toward_target.py` (and `derive.py`, the run's last stage); `compile` and the architecture loss: `compile.py`.

Both optimizers are built on their variables in `compile`, so they exist under any strategy
scope and are written to (and restored from) `.weights.h5` checkpoints, `BackupAndRestore`
and `.keras` files: `get_config` holds the latency table by value and `get_compile_config` what
`compile` was given, so a reloaded `.keras` is compiled, with α, weights and optimizer state.
"""

import keras
import tensorflow as tf

from proxyless_tf.errors import ConfigError
from proxyless_tf.latency.table import LatencyTable
from proxyless_tf.models.supernet import SuperNetBase
from proxyless_tf.search import toward_target
from proxyless_tf.search.compile import SearchCompile
from proxyless_tf.search.config import (SANDWICH, SEARCH_MODES, WARMUP_PATHS, WEIGHT_SAMPLING,  # noqa: F401
                                        check_algorithm)
from proxyless_tf.search.toward_target import derive_toward_target  # noqa: F401  (public here too)
from proxyless_tf.search.metrics import LastValue
from proxyless_tf.search.reinforce import ReinforceSteps
from proxyless_tf.search.weight_step import WeightSteps, largest_op, smallest_op  # noqa: F401

BATCH_HINT = ("pass a dataset of ((x, y), (x_val, y_val)) batches, a training and a validation batch per step, "
              "e.g. tf.data.Dataset.zip((train_ds, valid_ds))")


class _ArchPhase(keras.callbacks.Callback):
    """Turns the architecture step on once the warm-up epochs are over."""

    def on_epoch_begin(self, epoch, logs=None):
        self.model.arch_enabled.assign(1 if epoch >= self.model.warmup_epochs else 0)


@keras.saving.register_keras_serializable(package="proxyless_tf")
class SuperNet(SearchCompile, ReinforceSteps, WeightSteps, SuperNetBase):
    """The supernet with its search step, as one Keras model (`compile`, then `fit`).

    Args (besides those of `SuperNetBase`: space, num_classes, latency_table, seed,
    latency_space, latency_num_classes, weight_sharing; `latency_table` may also be its dict):
        mode: `two` (ProxylessNAS binary gates, one path per weight step), `full`
            (DARTS: every op in every step; the memory baseline), `full_v2` (gate gradients
            of every op, one path's memory, recomputation in the backward) or `reinforce`
            (Proxyless-R: REINFORCE on a sampled architecture's reward).
        weight_sampling: the path of a weight step: `alpha` (the paper: drawn from softmax(α),
            so the ops α favours get the most weight updates) or `uniform` (every op as often,
            whatever α says; α still learns from the binary gates on validation batches). The
            paper's sampling lets the supernet score its favourites higher because it trained
            them more; uniform paths remove that feedback at the price of training the
            eventual choice less.
        sandwich: fixed paths every weight step trains besides the sampled one: `none` (the
            paper), `largest` or `largest_smallest` (`weight_step.py`; `largest_op`,
            `smallest_op`). Why: with nested weights the channels beyond the narrowest
            expansion are trained only when a wide op is sampled, so the supernet scores wide
            layers no better than narrow ones; the largest path trains them every step, and the
            smallest trains every layer to work after skipped ones. Each fixed path costs one
            more forward and backward per weight step and keeps its activations for the
            backward; the fixed paths are traced as plain networks (no `switch_case`), so the
            graph hardly grows.
        distill: with a sandwich that runs the largest path, the weight w of its soft labels in
            the other paths' loss: (1 − w) · CE(labels) + w · CE(largest's softmax), 1 being
            BigNAS's in-place distillation. Why: a child that imitates the largest network on
            every batch learns the function the wide channels compute, so the supernet may score
            a network by how near it comes to the largest rather than by how often it was sampled.
        warmup_path: the path of the warm-up epochs' weight steps: `sampled` (the paper: as
            after the warm-up) or `largest` (the largest network only, once-for-all's first
            stage: train the full network, then let the sub-networks share its weights). Why:
            a narrow op's nested channels are then a slice of a trained wide layer, so cutting
            them away costs accuracy in the supernet as it does in a retrained network.
            Only the sampled path is replaced: a sandwich's fixed paths still run in the warm-up
            (with `largest_smallest` the smallest trains too and the largest's gradient counts
            twice, as the sampled and as the fixed path).
    """

    def __init__(self, space, num_classes, latency_table=None, mode="two", seed=None, latency_space=None,
                 latency_num_classes=None, weight_sharing="independent", weight_sampling="alpha", sandwich="none",
                 distill=0.0, warmup_path="sampled", **kwargs):
        distill = float(distill)
        check_algorithm(mode=mode, sandwich=sandwich, distill=distill, warmup_path=warmup_path,
                        weight_sampling=weight_sampling, source="<supernet>", prefix="")
        if isinstance(latency_table, dict):  # from get_config: the table by value
            latency_table = LatencyTable.from_dict(latency_table, source="<SuperNet config: latency_table>")
        super().__init__(space, num_classes, latency_table, seed=seed, latency_space=latency_space,
                         latency_num_classes=latency_num_classes, weight_sharing=weight_sharing, **kwargs)
        space = self.space
        self.mode = mode
        self.weight_sampling = weight_sampling
        self.sandwich = sandwich
        self.distill = distill
        self.warmup_path = warmup_path
        # per layer, the candidate index of the largest op: the sandwich's first fixed path and
        # the warm-up path of warmup_path="largest"
        self.largest_path = [l.candidates.index(largest_op(l.candidates)) for l in space.layers]
        picks = {"none": (), "largest": (largest_op,), "largest_smallest": (largest_op, smallest_op)}[sandwich]
        # per fixed path, per layer: the candidate index (constants of the traced step)
        self.sandwich_paths = [[l.candidates.index(pick(l.candidates)) for l in space.layers] for pick in picks]
        self.arch_enabled = keras.Variable(1, dtype="int32", trainable=False, name="arch_enabled")
        self.warmup_epochs = 0
        self.arch_every = 1
        self.arch_optimizer = None
        self._compile_args = None
        self.latency_probs = "softmax"
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

    @property
    def metrics(self):
        return list(self._metric_list)

    def _metric(self, name):
        return next(m for m in self._metric_list if m.name == name)

    # ---- training -------------------------------------------------------------------------------
    def fit(self, x=None, y=None, *args, callbacks=None, **kwargs):
        """Keras `fit` on search batches ((x, y), (x_val, y_val)): a dataset (or generator) of them, or
        that nested tuple of arrays. `fit(x, y)` with arrays is refused in one line: which half of
        them is the validation data is the caller's choice, not ours."""
        if y is not None or hasattr(x, "shape"):  # an array or tensor of images, with or without labels
            raise ConfigError("<fit>", "x", "a SuperNet step needs a training and a validation batch, "
                              f"((x, y), (x_val, y_val)); got x={type(x).__name__}"
                              f"{'' if y is None else f', y={type(y).__name__}'}", BATCH_HINT)
        kwargs.setdefault("shuffle", False)  # search batches come pre-shuffled; Keras warns that it ignores it
        return super().fit(x, None, *args, callbacks=list(callbacks or []) + [_ArchPhase()], **kwargs)

    @staticmethod
    def split_search_batch(data):
        """((x, y), (x_val, y_val)) of one search batch, or one ConfigError naming that structure."""
        if isinstance(data, tuple) and len(data) == 1:  # arrays: Keras hands the batch over as (x,)
            data = data[0]
        if not (isinstance(data, (tuple, list)) and len(data) == 2
                and all(isinstance(d, (tuple, list)) and len(d) == 2 for d in data)):
            raise ConfigError("<fit>", "x", "a SuperNet step needs a training and a validation batch, "
                              f"((x, y), (x_val, y_val)); got {type(data).__name__}", BATCH_HINT)
        return data

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
            loss = self.arch_loss(ce, self.arch_latency(samples))
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
        (x, y), (x_val, y_val) = self.split_search_batch(data)
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

        With `target_ms`, a latency-aware derivation (`toward_target.derive_toward_target`): when
        the argmax network's predicted latency is outside target ± tolerance, swaps that move it
        toward the target are made greedily, cheapest first in lost log-probability per ms
        gained, until it is inside (or no single or paired swap helps); with `ceiling`, only
        when it is above target x (1 + tolerance). `self.derive_changes` records how many layers
        were changed, so reports can say whether the argmax alone met the target.
        `start` (op indices per layer): the network the edits begin from instead of the argmax.
        """
        arch, self.derive_changes = toward_target.derive_arch(self, target_ms, tolerance, ceiling, start)
        return arch

    def get_config(self):
        config = dict(super().get_config(), mode=self.mode)
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
