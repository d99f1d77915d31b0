"""Proxyless-R: the REINFORCE pieces of the architecture step, as small pure functions.

Kept apart from `supernet.py` so each formula can be tested on its own numbers:

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
