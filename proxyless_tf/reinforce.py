"""Proxyless-R: the REINFORCE pieces of the architecture step, as small pure functions.

Kept apart from `supernet.py` so each formula can be tested on its own numbers:

- reward R = acc × (T / lat)^w (the paper's Proxyless-R; w = 0.1). Neither accuracy nor
  latency needs a gradient, so the latency may come from any non-differentiable source.
- moving-average baseline b ← d·b + (1 − d)·R with d = 0.99, started at the first reward.
  The advantage R − b uses the baseline from *before* this step's reward, so b does not
  depend on the sampled architecture and the estimate stays unbiased.
- surrogate loss −(R − b)·Σ_l log p_l(a_l): its α gradient is −(R − b)(onehot(a_l) − p_l)
  per layer; minimising it (Adam) raises the log-probability of architectures that beat
  the baseline and lowers it for those below.

Differences from the official code (`search/nas_manager.py`, `rl_update_step`), on purpose:
it samples 10 architectures per update (`rl_batch_size`) and averages their surrogate
gradients; its baseline update is `b += 0.99 * (mean_R - b)` (0.99 is the weight of the
*new* batch mean, not of the old baseline) applied *before* the advantages, so b is nearly
the batch mean and R_j − b centres the 10 rewards. With one architecture per step that rule
would leave an advantage of 0.01·(R − b_old), so here 0.99 is the usual decay of the old
value. Neither normalises the reward beyond the baseline.
"""

import keras


def reward(acc, latency_ms=None, target_ms=None, w=0.1):
    """acc × (target / latency)^w; plain accuracy when there is no latency or target."""
    if latency_ms is None or target_ms is None:
        return acc
    return acc * (target_ms / latency_ms) ** w


def batch_accuracy(y, logits):
    """Top-1 accuracy of one batch (what the reward is built on)."""
    pred = keras.ops.cast(keras.ops.argmax(logits, axis=-1), "int32")
    return keras.ops.mean(keras.ops.cast(keras.ops.equal(pred, keras.ops.cast(keras.ops.reshape(y, (-1,)), "int32")),
                                         "float32"))


def advantage_and_baseline(r, baseline, steps, decay=0.99):
    """(R − b_old, b_new): b_new = decay·b_old + (1 − decay)·R; the first step (steps == 0) starts b at R."""
    first = keras.ops.equal(steps, 0)
    b_old = keras.ops.where(first, r, baseline)
    return r - b_old, decay * b_old + (1.0 - decay) * r


def surrogate_loss(advantage, alphas, samples):
    """−(R − b)·Σ_l log softmax(α_l)[a_l]; the advantage is a constant (no gradient)."""
    logp = [keras.ops.take(keras.ops.log_softmax(a), s) for a, s in zip(alphas, samples)]
    return -keras.ops.stop_gradient(advantage) * keras.ops.sum(keras.ops.stack(logp))
