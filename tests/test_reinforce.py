"""Proxyless-R (REINFORCE) and the `full_v2` search mode of the SuperNet."""

import numpy as np
import pytest
import tensorflow as tf
import keras

from proxyless_tf.search import reinforce
from proxyless_tf.space import Arch
from proxyless_tf.search.supernet import SuperNet
from search_helpers import micro_space, synthetic_table, tiny_search_data


@pytest.fixture(autouse=True, scope="module")
def _no_grappler():
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    yield
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": False})


def reinforce_net(arch_optimizer, w=0.1, target_frac=0.5, **compile_kw):
    compile_kw.setdefault("reinforce_samples", 1)  # one draw per update unless a test asks for K
    space = micro_space()
    table = synthetic_table(space, 4)
    lo, hi = table.latency_range(space, 4)
    net = SuperNet(space, 4, table, mode="reinforce", seed=3)
    net.compile(keras.optimizers.SGD(0.01), arch_optimizer, latency_loss="mul#log",
                target_ms=lo + target_frac * (hi - lo), reinforce_w=w, **compile_kw)
    return net, space, table


def net_in_a_known_state(seed, **compile_kw):
    """A REINFORCE supernet with SGD lr 1 on α (α_old − α_new is exactly the step's gradient),
    random α, baseline 0.3 after 5 updates, and one validation batch of 8."""
    net, space, table = reinforce_net(keras.optimizers.SGD(1.0), **compile_kw)
    rng = np.random.default_rng(seed)
    for m in net.mixed_ops:
        m.alpha.assign(rng.normal(0, 0.5, m.num_candidates).astype(np.float32))
    net.reward_baseline.assign(0.3)
    net.reward_steps.assign(5)
    x = tf.constant(rng.standard_normal((8,) + space.input_shape), tf.float32)
    y = tf.constant(rng.integers(0, 4, 8), tf.int32)
    return net, space, table, x, y


def reward_by_hand(net, space, table, x, y, sample):
    """acc × (T / predicted latency)^0.1 of op indices `sample`, the accuracy counted in numpy."""
    logits = net._forward(x, True, "single", [tf.constant(i, tf.int32) for i in sample]).numpy()
    acc = float(np.mean(np.argmax(logits, -1) == y.numpy()))
    arch = Arch(space, [m.candidates[i] for m, i in zip(net.mixed_ops, sample)])
    return acc * (net.target_ms / table.predict(arch, 4)) ** 0.1, table.predict(arch, 4)


def test_baseline_starts_at_the_first_reward_then_moves_by_one_percent():
    adv, b = reinforce.advantage_and_baseline(0.6, 0.0, 0)  # first step: b = R, no advantage
    assert float(adv) == 0.0 and abs(float(b) - 0.6) < 1e-7
    adv, b = reinforce.advantage_and_baseline(0.9, 0.5, 7, decay=0.99)
    assert abs(float(adv) - 0.4) < 1e-7                     # R − b_old
    assert abs(float(b) - (0.99 * 0.5 + 0.01 * 0.9)) < 1e-7  # 0.4986
    assert abs(float(reinforce.reward(0.8, 2.0, 1.0, 0.1)) - 0.8 * 0.5 ** 0.1) < 1e-7


def test_hard_constraint_reward_gains_nothing_under_the_target_and_pays_over_it():
    # MnasNet's hard constraint: w_under = 0, w = 1
    assert abs(float(reinforce.reward(0.8, 0.5, 1.0, w=1.0, w_under=0.0)) - 0.8) < 1e-7      # twice as fast: no gain
    assert abs(float(reinforce.reward(0.8, 1.0, 1.0, w=1.0, w_under=0.0)) - 0.8) < 1e-7      # at the target
    assert abs(float(reinforce.reward(0.8, 1.25, 1.0, w=1.0, w_under=0.0)) - 0.64) < 1e-6    # 25 % over: × 0.8
    assert abs(float(reinforce.reward(0.8, 0.5, 1.0, w=0.1, w_under=0.05)) - 0.8 * 2 ** 0.05) < 1e-6
    assert abs(float(reinforce.reward(0.8, 0.5, 1.0, w=0.1)) - 0.8 * 2 ** 0.1) < 1e-6      # soft: both sides


def test_batch_advantages_centre_the_rewards_and_the_baseline_moves_by_one_percent_of_their_mean():
    adv, b = reinforce.batch_advantages_and_baseline(tf.constant([0.2, 0.5, 0.8]), 0.0, 0)
    np.testing.assert_allclose(adv.numpy(), [-0.3, 0.0, 0.3], atol=1e-7)  # R_j − mean R
    assert abs(float(b) - 0.5) < 1e-7                                     # first update: b = mean R
    adv, b = reinforce.batch_advantages_and_baseline(tf.constant([0.9, 0.7]), 0.4, 3, decay=0.99)
    np.testing.assert_allclose(adv.numpy(), [0.1, -0.1], atol=1e-7)       # the old baseline plays no part
    assert abs(float(b) - (0.99 * 0.4 + 0.01 * 0.8)) < 1e-7


def test_k_architectures_per_update_average_their_gradients_against_the_batch_mean():
    # the official rl_update_step: K draws on one validation batch, gradient (1/K)·Σ_j −(R_j − b)(onehot − p)
    net, space, table, x, y = net_in_a_known_state(1, reinforce_samples=3)
    drawn = [[1, 0], [2, 1], [0, 1]]
    a_old = [m.alpha.numpy().astype(np.float64) for m in net.mixed_ops]
    rewards = [reward_by_hand(net, space, table, x, y, sample)[0] for sample in drawn]
    out = tf.function(lambda s: net.reinforce_step(x, y, samples=s))(tf.constant(drawn, tf.int32))
    np.testing.assert_allclose(out["rewards"].numpy(), rewards, rtol=1e-6)
    np.testing.assert_array_equal(out["samples"].numpy(), drawn)
    mean_r = float(np.mean(rewards))
    for l, (m, a) in enumerate(zip(net.mixed_ops, a_old)):
        p = np.exp(a - a.max()) / np.exp(a - a.max()).sum()
        grad = np.mean([-(r - mean_r) * (np.eye(len(a))[s[l]] - p) for r, s in zip(rewards, drawn)], axis=0)
        np.testing.assert_allclose(a - m.alpha.numpy(), grad, atol=1e-6)
    np.testing.assert_allclose(float(net.reward_baseline.numpy()), 0.99 * 0.3 + 0.01 * mean_r, rtol=1e-6)
    assert int(net.reward_steps.numpy()) == 6


def test_reinforce_samples_below_one_is_refused_in_one_line():
    with pytest.raises(Exception, match="reinforce_samples.*at least one"):
        reinforce_net(keras.optimizers.SGD(1.0), reinforce_samples=0)


def test_reinforce_step_alpha_gradient_matches_closed_form_and_checkpoint_keeps_baseline(tmp_path):
    net, space, table, x, y = net_in_a_known_state(0)
    step = tf.function(lambda s: net.reinforce_step(x, y, samples=s))
    for sample in ([1, 0], [2, 1]):
        samples = [tf.constant(i, tf.int32) for i in sample]
        a_old = [m.alpha.numpy().astype(np.float64) for m in net.mixed_ops]
        b_old = float(net.reward_baseline.numpy())
        r, ms = reward_by_hand(net, space, table, x, y, sample)
        out = step(samples)
        np.testing.assert_allclose(float(out["reward"]), r, rtol=1e-6)
        np.testing.assert_allclose(float(out["latency_ms"]), ms, rtol=1e-6)
        for m, a, i in zip(net.mixed_ops, a_old, sample):
            p = np.exp(a - a.max()) / np.exp(a - a.max()).sum()
            grad = -(r - b_old) * (np.eye(len(a))[i] - p)  # d/dα of −(R − b)·log p(a)
            np.testing.assert_allclose(a - m.alpha.numpy(), grad, atol=1e-6)
        np.testing.assert_allclose(float(net.reward_baseline.numpy()), 0.99 * b_old + 0.01 * r, rtol=1e-6)
    assert int(net.reward_steps.numpy()) == 7
    path = str(tmp_path / "r.weights.h5")
    net.save_weights(path)
    other, _, _ = reinforce_net(keras.optimizers.SGD(1.0))
    other.load_weights(path)
    assert float(other.reward_baseline.numpy()) == float(net.reward_baseline.numpy())
    assert int(other.reward_steps.numpy()) == 7


@pytest.mark.parametrize("k", [1, 4])
def test_reinforce_raises_the_probability_of_the_op_that_is_best_for_the_reward(k):
    # Accuracy is pinned to 1 (every label 0, the classifier always says 0), so the reward is
    # (T / lat)^w alone and the fastest op of each layer is best: `zero` in layer 0.
    calls = []

    def latency_fn(arch):  # a non-differentiable latency: layer 0's op decides
        calls.append(arch.ops)
        return 1.0 if arch.ops[0] == "zero" else 3.0

    net, space, _ = reinforce_net(keras.optimizers.Adam(0.1, beta_1=0.0, beta_2=0.999), w=1.0,
                                  latency_fn=latency_fn, reinforce_samples=k)
    net.classifier.kernel.assign(np.zeros(net.classifier.kernel.shape, np.float32))
    net.classifier.bias.assign(np.array([10.0, 0, 0, 0], np.float32))
    best = net.mixed_ops[0].candidates.index("zero")
    x = tf.constant(np.random.default_rng(0).standard_normal((4,) + space.input_shape), tf.float32)
    y = tf.zeros((4,), tf.int32)
    step = tf.function(lambda: net.reinforce_step(x, y)["reward"])
    p0 = float(keras.ops.softmax(net.mixed_ops[0].alpha)[best])
    rewards = [float(step()) for _ in range(40)]
    p1 = float(keras.ops.softmax(net.mixed_ops[0].alpha)[best])
    assert len(calls) == 40 * k and all(len(c) == space.num_layers for c in calls)  # K measured per update
    assert abs(p0 - 1 / 3) < 1e-6 and p1 > 0.8, (p0, p1)
    assert np.mean(rewards[-10:]) > np.mean(rewards[:10])


@pytest.mark.parametrize("mode", ["full_v2"])  # reinforce: test_search_cli runs it through fit
def test_fit_runs_the_new_search_modes(mode):
    space = micro_space()
    table = synthetic_table(space, 4)
    lo, hi = table.latency_range(space, 4)
    net = SuperNet(space, 4, table, mode=mode, seed=0)
    net.compile(keras.optimizers.SGD(0.05, momentum=0.9), keras.optimizers.Adam(0.1, beta_1=0.0),
                latency_loss="add#linear", target_ms=(lo + hi) / 2)
    alpha0 = [m.alpha.numpy().copy() for m in net.mixed_ops]
    hist = net.fit(tiny_search_data(space, n=24, batch=8), epochs=1, verbose=0).history
    assert int(net.arch_optimizer.iterations.numpy()) == 3
    assert np.isfinite(hist["arch_loss"][0])
    if mode == "reinforce":
        assert {"reward", "baseline"} <= set(hist) and int(net.reward_steps.numpy()) == 3
    else:  # full_v2 moves every α of a layer, not just a sampled pair
        assert all(np.all(a != m.alpha.numpy()) for a, m in zip(alpha0, net.mixed_ops))
    cfg = net.get_config()
    assert cfg["mode"] == mode and SuperNet.from_config(cfg).mode == mode
