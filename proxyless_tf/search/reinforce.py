"""Proxyless-R: the REINFORCE pieces of the architecture step, as small pure functions.

The formulas are small pure functions, so each can be tested on its own numbers; `ReinforceSteps`
is the architecture step of `SuperNet` in mode `reinforce` that uses them:

- reward R = acc × (T / lat)^w (the paper's Proxyless-R; w = 0.1), or with MnasNet's hard
  constraint a different exponent under the target (`w_under`, 0: no reward for being
  faster). Neither accuracy nor latency needs a gradient, so the latency may come from any
  non-differentiable source.
- moving-average baseline b ← d·b + (1 − d)·R with d = 0.99, started at the first reward.
  The advantage R − b uses the baseline from *before* this step's reward, so b does not
  depend on the sampled architecture and the estimate stays unbiased.
- surrogate loss −(R − b)·Σ_l log p_l(a_l): its α gradient is −(R − b)(onehot(a_l) − p_l)
  per layer; minimising it (Adam) raises the log-probability of architectures that beat
  the baseline and lowers it for those below.

K architectures per update (`reinforce_samples`, the official code's `rl_batch_size`; 10
there, `search/nas_manager.py` `rl_update_step`): each drawn, run on the same validation
batch and rewarded; the surrogate gradients are averaged. Its baseline update is
`b += 0.99 * (mean_R - b)` (0.99 is the weight of the *new* batch mean) applied *before*
the advantages, so b is the batch mean to 1 % and R_j − b centres the K rewards. Here, for
K > 1, the advantage is R_j − mean R exactly (`batch_advantages_and_baseline`) and the moving
average is kept only as the reported baseline (and for K = 1). With one architecture per
update the official rule would leave an advantage of 0.01·(R − b_old), so for K = 1 0.99 is
the usual decay of the old value. Neither normalises the reward beyond the baseline.
"""

import keras
import numpy as np
import tensorflow as tf

from proxyless_tf import space as space_lib
from proxyless_tf.search.metrics import LastValue


def reward(acc, latency_ms=None, target_ms=None, w=0.1, w_under=None):
    """acc × (target / latency)^w; plain accuracy when there is no latency or target.

    `w_under`: the exponent for a network at or under the target (None: `w`, the soft
    constraint on both sides). MnasNet's hard constraint is w_under = 0, w = 1: nothing is
    gained below the budget, every per cent over it costs about a per cent of reward, so the
    search spends the budget on accuracy instead of buying latency it will not be judged on.
    """
    if latency_ms is None or target_ms is None:
        return acc
    ratio = keras.ops.divide(keras.ops.convert_to_tensor(target_ms, "float32"),
                             keras.ops.convert_to_tensor(latency_ms, "float32"))
    if w_under is None:
        return acc * ratio ** w
    return acc * keras.ops.where(ratio < 1.0, ratio ** w, ratio ** w_under)


def batch_correct(y, logits):
    """Top-1 correct predictions of one batch: a count, so replicas' slices can be summed (an
    empty slice counts 0, where its accuracy would be NaN)."""
    pred = keras.ops.cast(keras.ops.argmax(logits, axis=-1), "int32")
    return keras.ops.sum(keras.ops.cast(keras.ops.equal(pred, keras.ops.cast(keras.ops.reshape(y, (-1,)), "int32")),
                                        "float32"))


def advantage_and_baseline(r, baseline, steps, decay=0.99):
    """(R − b_old, b_new): b_new = decay·b_old + (1 − decay)·R; the first step (steps == 0) starts b at R."""
    first = keras.ops.equal(steps, 0)
    b_old = keras.ops.where(first, r, baseline)
    return r - b_old, decay * b_old + (1.0 - decay) * r


def batch_advantages_and_baseline(rewards, baseline, steps, decay=0.99):
    """K > 1 rewards of one update: (R_j − mean R, b_new = decay·b_old + (1 − decay)·mean R).

    The batch mean is the official code's baseline to 1 %; it includes R_j itself, which
    scales the leave-one-out advantage by (K − 1)/K and adds no bias. The first update
    (steps == 0) starts the moving baseline at the batch mean.
    """
    mean_r = keras.ops.mean(rewards)
    b_old = keras.ops.where(keras.ops.equal(steps, 0), mean_r, baseline)
    return rewards - mean_r, decay * b_old + (1.0 - decay) * mean_r


def batch_surrogate_loss(advantages, alphas, samples):
    """−(1/K)·Σ_j (R_j − b)·Σ_l log softmax(α_l)[a_jl]; `samples` is K × layers, advantages constant."""
    logp = keras.ops.stack([keras.ops.take(keras.ops.log_softmax(a), samples[:, l]) for l, a in enumerate(alphas)],
                           axis=1)  # K × layers
    return -keras.ops.mean(keras.ops.stop_gradient(advantages) * keras.ops.sum(logp, axis=1))


class ReinforceSteps:
    """Proxyless-R's architecture step of `SuperNet` (a mixin: it reads the net's layers, options,
    latency table and architecture optimizer). The architecture step samples K architectures,
    runs them on the validation batch without any gradient, and moves α by REINFORCE with the
    reward acc × (T / lat)^w against a baseline; the moving baseline and its step count are
    non-trainable variables, so checkpoints keep them."""

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
            n = batch_correct(y_val, logits)
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

        Rewards R_j = acc_j × (T / lat_j)^w (`reward`); the surrogate
        −(1/K)·Σ_j (R_j − b)·Σ_l log p_l(a_jl) is minimised. K = 1: b is the moving-average
        baseline from before this update. K > 1 (the official code's `rl_batch_size`, 10): b is
        the mean of the K rewards, which the official baseline rule `b += 0.99·(mean R − b)`
        also lands on to 1 %; R_j − mean R is (K − 1)/K × the leave-one-out advantage, so the
        gradient stays unbiased up to a constant scale that Adam removes.
        Returns (grads, rewards, advantages, new moving baseline, surrogate loss).
        """
        use_lat = self._reinforce_uses_latency()
        rewards = reward(accs, lats if use_lat else None, self.target_ms if use_lat else None,
                         self.reinforce_w, self.reinforce_w_under)
        if self.reinforce_samples == 1:
            adv, b_new = advantage_and_baseline(rewards[0], self.reward_baseline, self.reward_steps,
                                                self.baseline_decay)
            advantages = adv[None]
        else:
            advantages, b_new = batch_advantages_and_baseline(rewards, self.reward_baseline,
                                                              self.reward_steps, self.baseline_decay)
        alphas = [a.value for a in self.arch_variables]
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(alphas)
            loss = batch_surrogate_loss(advantages, alphas, drawn)
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
