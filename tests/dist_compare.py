"""Run by tests/test_distribute.py in a fresh interpreter: one device vs MirroredStrategy on 2 CPUs.

The same comparison runs once more with the sandwich rule (fixed largest and smallest
paths in every weight step, nested kernels, in-place distillation), and with the other
architecture steps: full_v2 and Proxyless-R (3 architectures per update).

A subprocess because the CPU can be split into logical devices only before TensorFlow
initialises them, which the test session has long done. Prints one JSON line.

Each global batch is two copies of the same half batch. Then the per-replica batch-norm
statistics (replica r sees one copy) equal the one-device statistics of the whole batch,
and the mean loss and its gradient are the same too: the two runs compute the same
numbers, only summed in a different order, so they must agree to float32 rounding.
"""

import contextlib
import json
import os
import sys
import time

sys.path[:0] = [os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.path.dirname(os.path.abspath(__file__))]

from proxyless_tf.runtime import distribute  # noqa: E402

STRATEGY = distribute.make_strategy("mirrored", cpu_devices=2)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from proxyless_tf.search.supernet import SuperNet  # noqa: E402
from search_helpers import micro_space, synthetic_table  # noqa: E402

tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
SPACE = micro_space()
TABLE = synthetic_table(SPACE, 4)
HALF, STEPS = 4, 3


def duplicated_halves_data():
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((STEPS, HALF) + tuple(SPACE.input_shape)).astype(np.float32)
    ys = rng.integers(0, 4, (STEPS, HALF)).astype(np.int32)
    dup = lambda a: np.concatenate([a, a], 1).reshape((-1,) + a.shape[2:])  # noqa: E731
    x, y = dup(xs), dup(ys)
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(2 * HALF)
    valid = tf.data.Dataset.from_tensor_slices((x[::-1], y[::-1])).batch(2 * HALF).repeat()
    return tf.data.Dataset.zip((train, valid))


def make(scope, warmup_epochs=1, compile_kw=None, **net_kwargs):
    keras.utils.set_random_seed(0)
    lo, hi = TABLE.latency_range(SPACE, 4)
    with scope:
        net = SuperNet(SPACE, 4, TABLE, seed=0, **net_kwargs)
        kw = dict(latency_loss="add#linear", target_ms=(lo + hi) / 2, warmup_epochs=warmup_epochs)
        kw.update(compile_kw or {})
        net.compile(keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
                    keras.optimizers.Adam(0.1, beta_1=0.0), **kw)
    return net


def compare_mode(mode, compile_kw=None):
    """One device vs the mirrored pair for the other architecture steps: full_v2 and Proxyless-R."""
    one = make(contextlib.nullcontext(), mode=mode, compile_kw=compile_kw)
    h1 = one.fit(duplicated_halves_data(), epochs=2, verbose=0).history
    two = make(STRATEGY.scope(), mode=mode, compile_kw=compile_kw)
    h2 = two.fit(duplicated_halves_data(), epochs=2, verbose=0).history
    out = dict(gaps(one, two), history_one=h1, history_two=h2)
    if mode == "reinforce":
        out.update(baseline=[float(one.reward_baseline.numpy()), float(copies(two.reward_baseline)[0])],
                   reward_steps=[int(one.reward_steps.numpy()), int(copies(two.reward_steps)[0])])
    return out


def copies(v):
    v = getattr(v, "value", v)
    return [c.numpy() for c in getattr(v, "values", [v])]


def max_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(a, b))


def slots_of(opt, var):
    prefix = var.path.replace("/", "_") + "_"
    return [s for s in opt.variables if s.path.split("/", 1)[-1].startswith(prefix)]


class FirstStepMoves(keras.callbacks.Callback):
    """Which candidates of each layer moved (weights or optimizer slots) in the first step.

    The first epoch is the warm-up (weight steps only), so this is the weight step's
    invariant on the distributed path: at most one candidate per layer may move.
    """

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0 and not hasattr(self, "moved"):
            self.before = {id(v): copies(v) for v in self._watched()}

    def on_train_batch_end(self, batch, logs=None):
        if batch == 0 and not hasattr(self, "moved"):
            self.moved = [[m.candidates[j] for j, op in enumerate(m.ops)
                           if any(max_diff(copies(v), self.before[id(v)]) > 0 for v in self._watched(op))]
                          for m in self.model.mixed_ops]

    def _watched(self, op=None):
        ops = [op] if op is not None else [o for m in self.model.mixed_ops for o in m.ops]
        opt = self.model.optimizer
        return [v for o in ops for v in list(o.variables) + [s for w in o.trainable_variables
                                                              for s in slots_of(opt, w)]]


def gaps(one, two):
    """How far the mirrored run `two` is from the one-device run `one`, and its replicas apart."""
    all_vars = lambda n: n.weights + n.optimizer.variables + n.arch_optimizer.variables  # noqa: E731
    return {
        "alpha_one": [m.alpha.numpy().tolist() for m in one.mixed_ops],
        "alpha_two": [m.alpha.numpy().tolist() for m in two.mixed_ops],
        "weight_gap": max_diff([np.asarray(v) for v in one.weights], [copies(v)[0] for v in two.weights]),
        "slot_gap": max_diff([np.asarray(v) for v in one.optimizer.variables + one.arch_optimizer.variables],
                             [copies(v)[0] for v in two.optimizer.variables + two.arch_optimizer.variables]),
        "replica_gap": max(max_diff(copies(v)[:1], copies(v)[1:]) for v in all_vars(two) if len(copies(v)) == 2),
        "iterations": [int(copies(o.iterations)[0]) for o in (one.optimizer, two.optimizer, one.arch_optimizer,
                                                               two.arch_optimizer)],
    }


def reinforce_count_reduction():
    """Replicas whose validation slices score differently: the rewards must come from the counts
    summed over both slices (the comparisons above use two copies of one half, where a missing
    reduction would go unseen). Replica r's two draws score (3r, 4 - r) of its 4 images, so
    the batch scores 3/8 and 7/8; the first update's baseline is their mean reward, 0.625
    (reward = accuracy without a latency loss); without the reduction replica 0 would give 0.5."""
    net = make(STRATEGY.scope(), warmup_epochs=0, mode="reinforce",
               compile_kw={"reinforce_samples": 2, "latency_loss": None})

    def rollouts(x_val, y_val, samples=None):
        r = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group, tf.float32)
        return tf.stack([3.0 * r, 4.0 - r]), tf.zeros((2,)), tf.zeros((2, len(net.mixed_ops)), tf.int32)

    net.reinforce_rollouts = rollouts
    net.fit(duplicated_halves_data().take(1), epochs=1, verbose=0)
    return {"baselines": [float(b) for b in copies(net.reward_baseline)],
            "reward_steps": [int(c) for c in copies(net.reward_steps)]}


def main():
    t0 = time.time()
    one = make(contextlib.nullcontext())
    h1 = one.fit(duplicated_halves_data(), epochs=2, verbose=0).history
    t1 = time.time()
    two = make(STRATEGY.scope())
    first = FirstStepMoves()
    h2 = two.fit(duplicated_halves_data(), epochs=2, verbose=0, callbacks=[first]).history
    t2 = time.time()
    # the sandwich (nested kernels, largest + smallest paths, the largest teaching at 0.5) on both
    sandwich = dict(weight_sharing="nested", sandwich="largest_smallest", distill=0.5)
    one_s = make(contextlib.nullcontext(), **sandwich)
    h1_s = one_s.fit(duplicated_halves_data(), epochs=2, verbose=0).history
    two_s = make(STRATEGY.scope(), **sandwich)
    h2_s = two_s.fit(duplicated_halves_data(), epochs=2, verbose=0).history
    plain_nested = make(contextlib.nullcontext(), weight_sharing="nested")
    plain_nested.fit(duplicated_halves_data(), epochs=2, verbose=0)
    t3 = time.time()
    other_modes = {"full_v2": compare_mode("full_v2"), "reinforce": compare_mode("reinforce", {"reinforce_samples": 3})}
    other_modes["reinforce"]["count_reduction"] = reinforce_count_reduction()
    t4 = time.time()
    print(json.dumps({
        "replicas": STRATEGY.num_replicas_in_sync,
        **gaps(one, two),
        "history_one": h1, "history_two": h2,
        "accuracy_total_count": [float(np.asarray(v)) for v in two._metric("accuracy").variables],
        "moved_in_first_weight_step": first.moved,
        "sandwich": dict(gaps(one_s, two_s), history_one=h1_s, history_two=h2_s,
                         # what the fixed paths change: the same run without them, on one device
                         gap_to_no_sandwich=max_diff([np.asarray(v) for v in one_s.weights],
                                                     [np.asarray(v) for v in plain_nested.weights])),
        "modes": other_modes,
        "seconds": {"one_device": round(t1 - t0, 1), "mirrored": round(t2 - t1, 1), "sandwich": round(t3 - t2, 1),
                    "full_v2_and_reinforce": round(t4 - t3, 1)},
    }))


if __name__ == "__main__":
    main()
