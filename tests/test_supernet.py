"""SuperNet: the weight step touches only what ran; fit end to end; checkpoints carry both optimizers."""

import numpy as np
import pytest
import tensorflow as tf
import keras

from proxyless_tf.errors import ConfigError
from proxyless_tf.search.supernet import SuperNet
from search_helpers import micro_space, synthetic_table, tiny_search_data, tiny_space


@pytest.fixture(autouse=True, scope="module")
def _no_grappler():
    # Grappler spends most of a test's time on the branchy search graph; results are identical.
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    yield
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": False})


def slots_of(opt, var):
    prefix = var.path.replace("/", "_") + "_"
    return [s for s in opt.variables if s.path.split("/", 1)[-1].startswith(prefix)]


@pytest.mark.parametrize("make_opt", [
    lambda: keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    lambda: keras.optimizers.AdamW(0.01, weight_decay=0.01),
], ids=["sgd_nesterov_wd", "adamw"])
def test_weight_step_leaves_unsampled_ops_weights_and_slots_untouched(make_opt):
    space = micro_space()
    net = SuperNet(space, 4, None, seed=1)
    net.compile(make_opt(), latency_loss=None)
    opt = net.optimizer
    step = tf.function(lambda x, y: net.weight_step(x, y)[2])
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((8,) + space.input_shape), tf.float32)
    y = tf.constant(rng.integers(0, 4, 8), tf.int32)
    seen_changed = 0
    for it in range(4):  # several steps: slots of earlier-sampled ops are non-zero by then
        before = {id(v): v.numpy().copy() for m in net.mixed_ops for v in m.variables}
        before.update({id(s): s.numpy().copy() for s in opt.variables})
        samples = [int(s) for s in step(x, y)]
        assert int(opt.iterations.numpy()) == it + 1  # one optimizer step per train step
        for m, j_run in zip(net.mixed_ops, samples):
            for j, op in enumerate(m.ops):
                watched = list(op.variables) + [s for v in op.trainable_variables for s in slots_of(opt, v)]
                changed = [v.path for v in watched if not np.array_equal(v.numpy(), before[id(v)])]
                if j == j_run:
                    if op.trainable_variables:
                        assert changed, f"{m.name}: sampled op {m.candidates[j]} did not move"
                        seen_changed += 1
                else:
                    assert not changed, f"{m.name}: unsampled {m.candidates[j]} moved: {changed[:3]}"
        assert all(np.array_equal(m.alpha.numpy(), before[id(m.alpha)]) for m in net.mixed_ops)
    assert seen_changed > 0


def test_fit_runs_search_and_metrics_with_synthetic_table(tmp_path):
    space = micro_space()
    table = synthetic_table(space, 4)
    lo, hi = table.latency_range(space, 4)
    net = SuperNet(space, 4, table, seed=0)
    net.compile(keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
                keras.optimizers.Adam(0.1, beta_1=0.0, beta_2=0.999),
                latency_loss="add#linear", target_ms=lo + 0.1 * (hi - lo), loss_params={"lambda": 5.0},
                arch_every=1, warmup_epochs=1)
    alpha0 = [m.alpha.numpy().copy() for m in net.mixed_ops]
    ds = tiny_search_data(space, n=32, batch=8)
    hist = net.fit(ds, epochs=3, verbose=0,
                   callbacks=[keras.callbacks.BackupAndRestore(str(tmp_path / "backup")),
                              keras.callbacks.TensorBoard(str(tmp_path / "tb"), write_graph=False)])
    h = hist.history
    for key in ("loss", "accuracy", "valid_acc", "expected_ms", "argmax_ms", "entropy"):
        assert key in h and len(h[key]) == 3, key
    assert h["valid_acc"][0] == 0.0  # warm-up epoch: no arch step, no argmax evaluation
    assert int(net.arch_optimizer.iterations.numpy()) == 8  # 2 epochs x 4 steps after warm-up
    assert any(not np.allclose(a, m.alpha.numpy()) for a, m in zip(alpha0, net.mixed_ops))
    # a strong pull toward a fast target lowers the expected latency
    assert h["expected_ms"][-1] < h["expected_ms"][0]
    arch = net.derive_arch()
    assert arch.space == space and len(arch.ops) == space.num_layers
    assert abs(table.predict(arch) - float(net.argmax_latency())) < 1e-5
    assert (tmp_path / "tb").exists()


def test_checkpoint_restores_weights_alphas_and_both_optimizers(tmp_path):
    space = micro_space()
    table = synthetic_table(space, 4)
    lo, hi = table.latency_range(space, 4)

    def make():
        net = SuperNet(space, 4, table, seed=0)
        net.compile(keras.optimizers.SGD(0.05, momentum=0.9), keras.optimizers.Adam(0.1, beta_1=0.0),
                    latency_loss="add#linear", target_ms=(lo + hi) / 2)
        return net

    net = make()
    net.fit(tiny_search_data(space, n=16, batch=8), epochs=1, verbose=0)
    path = str(tmp_path / "c.weights.h5")
    net.save_weights(path)
    other = make()
    other.load_weights(path)
    # weights (alphas and BN statistics included) and both optimizers' state
    for a, b in zip(net.weights + net.optimizer.variables + net.arch_optimizer.variables,
                    other.weights + other.optimizer.variables + other.arch_optimizer.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    assert int(other.arch_optimizer.iterations.numpy()) == 2


def test_target_outside_range_names_the_range():
    space = tiny_space()
    table = synthetic_table(space, 4)
    lo, hi = table.latency_range(space, 4)
    net = SuperNet(space, 4, table)
    with pytest.raises(ConfigError, match="outside the reachable range") as e:
        net.compile(latency_loss="add#linear", target_ms=hi * 2)
    assert f"{lo:.4g}" in str(e.value) and f"{hi:.4g}" in str(e.value)


@pytest.mark.parametrize("side, lam", [("under", 0.7), ("over", 0.7), ("over", 2.0)])
def test_hinge_loss_prices_only_the_latency_above_the_target(side, lam):
    """add#hinge = CE + λ·max(0, E − T)/T: its value and its gradient on α (through the expected
    latency E) against that formula; under the target the α-gradient of the term is exactly zero."""
    space = micro_space()
    table = synthetic_table(space, 4)
    lo, hi = table.latency_range(space, 4)
    target = (lo + hi) / 2
    net = SuperNet(space, 4, table, seed=0)
    net.compile(latency_loss="add#hinge", target_ms=target, loss_params={"lambda": lam})
    sign = 1.0 if side == "over" else -1.0  # α leaning to the slow (over) or the fast (under) ops
    for m, cost in zip(net.mixed_ops, net._costs):
        c = keras.ops.convert_to_numpy(cost)
        m.alpha.assign((sign * 3.0 * (c - c.mean()) / (np.ptp(c) + 1e-9)).astype("float32"))
    alphas = [m.alpha for m in net.mixed_ops]
    ce = tf.constant(0.8)
    with tf.GradientTape(persistent=True) as tape:
        e = net.expected_latency()
        loss = net.arch_loss(ce, e)
    e_now = float(e)
    assert (e_now > target) == (side == "over"), (e_now, target)
    np.testing.assert_allclose(float(loss), 0.8 + lam * max(0.0, e_now / target - 1.0), rtol=1e-5)
    got = tape.gradient(loss, alphas, unconnected_gradients="zero")
    de = tape.gradient(e, alphas)
    for g, d in zip(got, de):
        want = (lam / target) * d.numpy() if side == "over" else np.zeros_like(d.numpy())
        np.testing.assert_allclose(g.numpy(), want, rtol=1e-4, atol=1e-7)
    assert max(np.abs(d.numpy()).max() for d in de) > 1e-4  # E does move with α: the zero is the hinge's


def test_table_missing_a_block_is_one_config_error():
    space = tiny_space()
    from proxyless_tf.latency import keys as keys_lib

    missing = keys_lib.layer_key(space.layers[2], "mb_k5_e3")
    with pytest.raises(ConfigError, match="no measurement") as e:
        SuperNet(space, 4, synthetic_table(space, 4, drop=(missing,)))
    assert missing in str(e.value)


def test_latency_terms_and_derivation_use_the_tables_calibrated_prediction():
    """expected/argmax latency and the derived arch agree with LatencyTable.predict, per-block term included."""
    import itertools

    from proxyless_tf.space import Arch
    from proxyless_tf.search.supernet import derive_toward_target

    space = tiny_space()
    table = synthetic_table(space, 4)
    table.calibration = {"kind": "linear", "scale": 0.9, "offset": 0.1, "per_block": 0.05}
    net = SuperNet(space, 4, table, seed=0)
    rng = np.random.default_rng(1)
    for m in net.mixed_ops:
        m.alpha.assign(rng.normal(size=m.num_candidates).astype("float32"))
    probs = [keras.ops.convert_to_numpy(keras.ops.softmax(m.alpha)) for m in net.mixed_ops]
    exact = 0.0
    for combo in itertools.product(*[range(m.num_candidates) for m in net.mixed_ops]):
        arch = Arch(space, [m.candidates[i] for m, i in zip(net.mixed_ops, combo)])
        exact += np.prod([p[i] for p, i in zip(probs, combo)]) * table.predict(arch, 4)
    assert float(net.expected_latency()) == pytest.approx(exact, rel=1e-5)
    assert float(net.argmax_latency()) == pytest.approx(table.predict(net.derive_arch(), 4), rel=1e-5)
    lo, hi = table.latency_range(space, 4)
    for target in np.linspace(lo, hi, 7):
        arch = net.derive_arch(target_ms=float(target), tolerance=0.02)
        preds = [table.predict(Arch(space, [m.candidates[i] for m, i in zip(net.mixed_ops, c)]), 4)
                 for c in itertools.product(*[range(m.num_candidates) for m in net.mixed_ops])]
        if any(abs(p - target) <= 0.02 * target for p in preds):  # the band is reachable at all
            assert abs(table.predict(arch, 4) - target) <= 0.02 * target + 1e-9


def test_derivation_pairs_swaps_when_every_single_swap_overshoots():
    from proxyless_tf.search.supernet import derive_toward_target

    # argmax: layer A 1.0 ms + layer B 0.5 ms = 1.5 ms; target 1.45 ms ± 1.5 %. Every single swap
    # lands farther away (A -> 0.5: 1.0 ms; B -> 0.97: 1.97 ms); the pair lands at 1.47 ms, inside.
    logp = [np.log([0.3, 0.7]), np.log([0.6, 0.4])]
    costs = [np.array([0.5, 1.0]), np.array([0.5, 0.97])]
    assert derive_toward_target(logp, costs, 0.0, 1.45, 0.015) == [0, 1]
    # already inside the band: the argmax, untouched
    assert derive_toward_target(logp, costs, 0.0, 1.5, 0.015) == [1, 0]


def test_ceiling_derivation_treats_the_target_as_a_budget():
    from proxyless_tf.search.supernet import derive_toward_target

    logp = [np.log([0.3, 0.7]), np.log([0.6, 0.4])]  # argmax [1, 0]: 1.5 ms
    costs = [np.array([0.5, 1.0]), np.array([0.5, 0.97])]
    # 2.0 ms target, argmax 25 % under it: the band buys the cheapest swap up (B -> 0.97: 1.97 ms),
    # the budget keeps the argmax
    assert derive_toward_target(logp, costs, 0.0, 2.0, 0.05) == [1, 1]
    assert derive_toward_target(logp, costs, 0.0, 2.0, 0.05, ceiling=True) == [1, 0]
    # 1.1 ms budget, argmax 36 % over it: A -> 0.5 lands at 1.0 ms, under the budget: done
    assert derive_toward_target(logp, costs, 0.0, 1.1, 0.05, ceiling=True) == [0, 0]
    # inside target x (1 + tolerance) from above: untouched either way
    assert derive_toward_target(logp, costs, 0.0, 1.45, 0.05, ceiling=True) == [1, 0]


def test_uniform_weight_sampling_trains_every_op_as_often_whatever_alpha_says():
    space = micro_space()
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((4,) + space.input_shape), tf.float32)
    y = tf.constant(rng.integers(0, 4, 4), tf.int32)
    counts = {}
    for sampling in ("alpha", "uniform"):
        net = SuperNet(space, 4, None, seed=1, weight_sampling=sampling)
        net.compile(keras.optimizers.SGD(0.01), latency_loss=None)
        net(x)
        for m in net.mixed_ops:  # α all but certain of op 0: p = e^8 / (e^8 + n - 1) > 0.99
            m.alpha.assign(np.eye(m.num_candidates)[0] * 8.0)
        step = tf.function(lambda x, y: net.weight_step(x, y)[2])
        draws = np.array([[int(s) for s in step(x, y)] for _ in range(120)])
        counts[sampling] = [np.bincount(draws[:, i], minlength=m.num_candidates)
                            for i, m in enumerate(net.mixed_ops)]
    for a, u, m in zip(counts["alpha"], counts["uniform"], net.mixed_ops):
        n = m.num_candidates
        assert a[0] >= 115  # the paper's sampling: α's favourite nearly every step
        # uniform: every op about 120 / n times (binomial 4-sigma band)
        sd = np.sqrt(120 * (1 / n) * (1 - 1 / n))
        assert all(abs(c - 120 / n) <= 4 * sd for c in u), (u, n)
    cfg = net.get_config()
    assert cfg["weight_sampling"] == "uniform" and SuperNet.from_config(cfg).weight_sampling == "uniform"
    assert "weight_sampling" not in SuperNet(space, 4, None).get_config()  # the default stays implicit
    with pytest.raises(ConfigError, match="weight_sampling"):
        SuperNet(space, 4, None, weight_sampling="fair")


def test_largest_warmup_path_trains_only_the_largest_network_until_the_arch_steps_start():
    space = micro_space()
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((4,) + space.input_shape), tf.float32)
    y = tf.constant(rng.integers(0, 4, 4), tf.int32)
    net = SuperNet(space, 4, None, seed=1, weight_sampling="uniform", warmup_path="largest")
    net.compile(keras.optimizers.SGD(0.1), latency_loss=None, warmup_epochs=1)
    assert int(net.arch_enabled) == 0  # the warm-up
    largest = [m.candidates.index(max((c for c in m.candidates if c != "zero"),
                                      key=lambda c: (int(c.split("_e")[1]), int(c[4])))) for m in net.mixed_ops]
    assert net.largest_path == largest
    step = tf.function(lambda x, y: net.weight_step(x, y)[2])
    snapshot = lambda: [[[v.numpy() for v in op.trainable_variables] for op in m.ops]  # noqa: E731
                        for m in net.mixed_ops]
    before = snapshot()
    warm = np.array([[int(s) for s in step(x, y)] for _ in range(20)])
    assert (warm == largest).all(), warm
    after = snapshot()
    moved = [[j for j, (a, b) in enumerate(zip(layer_after, layer_before))
              if any(not np.array_equal(u, v) for u, v in zip(a, b))]
             for layer_after, layer_before in zip(after, before)]
    assert moved == [[j] for j in largest], moved  # only the largest op's weights, in every layer
    net.arch_enabled.assign(1)  # after the warm-up: the sampled paths (uniform: every op)
    draws = np.array([[int(s) for s in step(x, y)] for _ in range(40)])
    for i, m in enumerate(net.mixed_ops):
        assert len(set(draws[:, i])) == m.num_candidates, draws[:, i]
    cfg = net.get_config()
    assert cfg["warmup_path"] == "largest" and SuperNet.from_config(cfg).warmup_path == "largest"
    assert "warmup_path" not in SuperNet(space, 4, None).get_config()  # the default stays implicit
    with pytest.raises(ConfigError, match="warmup_path"):
        SuperNet(space, 4, None, warmup_path="smallest")
    with pytest.raises(ConfigError, match="one path per weight step, but mode='full'"):
        SuperNet(space, 4, None, mode="full", warmup_path="largest")


@pytest.mark.parametrize("weight_sharing,distill", [("independent", 0.0), ("nested", 0.0), ("nested", 0.6)])
def test_sandwich_step_applies_the_summed_gradient_of_the_sampled_and_fixed_paths(weight_sharing, distill):
    from proxyless_tf.search.supernet import largest_op, smallest_op

    space = tiny_space()  # candidates mb_k3_e3, mb_k5_e3, mb_k3_e6 (+ zero on some layers)
    assert largest_op(["mb_k5_e3", "mb_k3_e6", "zero"]) == "mb_k3_e6"
    assert largest_op(["mb_k7_e6", "mb_k3_e6", "mb_k7_e3"]) == "mb_k7_e6"
    assert smallest_op(["mb_k5_e3", "mb_k3_e6", "zero"]) == "zero"
    assert smallest_op(["mb_k5_e6", "mb_k3_e3", "mb_k5_e3"]) == "mb_k3_e3"
    net = SuperNet(space, 4, None, seed=3, weight_sharing=weight_sharing, sandwich="largest_smallest",
                   distill=distill)
    names = [[l.candidates[j] for j, l in zip(p, space.layers)] for p in net.sandwich_paths]
    assert names[0] == ["mb_k3_e6"] * space.num_layers
    assert names[1] == ["zero" if "zero" in l.candidates else "mb_k3_e3" for l in space.layers]
    assert "zero" in names[1] and "mb_k3_e3" in names[1]  # both kinds of smallest occur
    lr = 0.05
    net.compile(keras.optimizers.SGD(lr), latency_loss=None)  # plain SGD: the update is -lr * gradient
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((8,) + space.input_shape), tf.float32)
    y = tf.constant(rng.integers(0, 4, 8), tf.int32)
    wvars = net.weight_variables
    before = [v.numpy().copy() for v in wvars]
    samples = [int(s) for s in tf.function(lambda x, y: net.weight_step(x, y)[2])(x, y)]
    after = [v.numpy().copy() for v in wvars]
    for v, b in zip(wvars, before):
        v.assign(b)
    paths = [samples] + net.sandwich_paths

    def run(p):
        return net._forward(x, True, "single", [tf.constant(j) for j in p])

    # the largest's softmax on this batch, before the step: the other paths' soft labels
    teacher = tf.constant(tf.nn.softmax(run(net.sandwich_paths[0])).numpy())
    with tf.GradientTape() as tape:  # the formula: one loss per path, on the same batch, summed
        losses = []
        for k, p in enumerate(paths):
            logits = run(p)
            ce = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
            soft = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(teacher, logits))
            losses.append(ce if k == 1 else (1 - distill) * ce + distill * soft)  # k == 1: the largest
        loss = tf.add_n(losses)
    grads = tape.gradient(loss, wvars)
    ran = {id(v) for m, *js in zip(net.mixed_ops, *paths) for j in js for v in m.candidate_variables(j)}
    cand = {id(v) for m in net.mixed_ops for v in m.trainable_variables}
    moved = 0
    for v, b, a, g in zip(wvars, before, after, grads):
        if id(v) in cand and id(v) not in ran:
            np.testing.assert_array_equal(a, b, err_msg=f"{v.path}: no path ran it, yet it moved")
        else:
            np.testing.assert_allclose(a, b - lr * np.asarray(g), rtol=1e-4, atol=1e-6, err_msg=v.path)
            moved += int(not np.array_equal(a, b))
    assert moved > len(net.mixed_ops)
    cfg = net.get_config()
    assert cfg["sandwich"] == "largest_smallest" and SuperNet.from_config(cfg).sandwich_paths == net.sandwich_paths
    assert cfg.get("distill", 0.0) == distill and SuperNet.from_config(cfg).distill == distill
    assert "sandwich" not in SuperNet(space, 4, None).get_config()
    with pytest.raises(ConfigError, match="sandwich"):
        SuperNet(space, 4, None, sandwich="all")
    with pytest.raises(ConfigError, match=r"distill: needs the largest path.*sandwich='none'"):
        SuperNet(space, 4, None, distill=0.5)
    with pytest.raises(ConfigError, match=r"distill: 1.5 is not in \[0, 1\]"):
        SuperNet(space, 4, None, sandwich="largest", distill=1.5)


def test_cli_config_check_and_compile_accept_the_same_latency_losses(tmp_path):
    """One list (proxyless_tf/search/latency_losses.py): every name the CLI's check lets through compiles,
    and a misspelt one is refused by the check with the names it knows."""
    from proxyless_tf.search.latency_losses import LATENCY_LOSSES
    from proxyless_tf.search.config import SearchConfig
    from proxyless_tf.search.inputs import check_config
    from latency_helpers import write_space
    from search_helpers import MICRO

    sp = write_space(tmp_path, MICRO)
    for name in LATENCY_LOSSES + ("none",):
        check_config(SearchConfig(space=sp, out_dir=str(tmp_path / "o"), latency_loss=name))
    with pytest.raises(ConfigError, match="unknown latency loss 'add#hing'") as e:
        check_config(SearchConfig(space=sp, out_dir=str(tmp_path / "o"), latency_loss="add#hing"))
    assert "add#hinge" in str(e.value) and "none" in str(e.value)
    space = micro_space()
    table = synthetic_table(space, 4)
    lo, hi = table.latency_range(space, 4)
    for name in LATENCY_LOSSES:
        net = SuperNet(space, 4, table, seed=0)
        net.compile(latency_loss=name, target_ms=(lo + hi) / 2)
        assert net.latency_loss == name


@pytest.mark.parametrize("probs", ["softmax", "pair"])
def test_latency_term_gradient_over_the_full_softmax_or_the_sampled_pair(probs):
    """add#linear with E over softmax(α) (the paper) or over each layer's sampled pair (the official
    code, `latency_probs='pair'`): value and α-gradient against the formula, by hand.
    dE/dα_i = q_i (c_i − Σ_j q_j c_j) over the ops q weighs (every op, or the pair; 0 elsewhere)."""
    space = tiny_space()
    table = synthetic_table(space, 4)
    lo, hi = table.latency_range(space, 4)
    target, lam = (lo + hi) / 2, 0.7
    net = SuperNet(space, 4, table, seed=0)
    net.compile(latency_loss="add#linear", target_ms=target, loss_params={"lambda": lam}, latency_probs=probs)
    rng = np.random.default_rng(2)
    for m in net.mixed_ops:
        m.alpha.assign(rng.normal(0, 1, m.num_candidates).astype("float32"))
    pairs = [[l % m.num_candidates, (l + 2) % m.num_candidates] for l, m in enumerate(net.mixed_ops)]
    samples = [(tf.constant(p, tf.int32), tf.constant(0, tf.int32)) for p in pairs]
    alphas = [m.alpha for m in net.mixed_ops]
    with tf.GradientTape() as tape:
        loss = net.arch_loss(tf.constant(0.8), net.arch_latency(samples))
    grads = tape.gradient(loss, alphas)
    e, want = net._fixed_cost, []
    for m, c, pair in zip(net.mixed_ops, net._costs, pairs):
        a, c = m.alpha.numpy().astype(np.float64), np.asarray(c, np.float64)
        idx = np.array(pair if probs == "pair" else range(len(a)))
        q = np.exp(a[idx] - a[idx].max()) / np.exp(a[idx] - a[idx].max()).sum()
        mean_c = float(q @ c[idx])
        e += mean_c
        g = np.zeros_like(a)
        g[idx] = lam / target * q * (c[idx] - mean_c)
        want.append(g)
    np.testing.assert_allclose(float(loss), 0.8 + lam * (e - target) / target, rtol=1e-5)
    for got, w, pair in zip(grads, want, pairs):
        np.testing.assert_allclose(np.asarray(got), w, rtol=1e-4, atol=1e-8)
        outside = [j for j in range(len(w)) if j not in pair]
        if probs == "pair":
            assert all(np.asarray(got)[j] == 0.0 for j in outside)
        else:  # the paper's term prices the unsampled ops too (MixedOp's docstring)
            assert all(abs(np.asarray(got)[j]) > 1e-6 for j in outside)
    assert net.get_compile_config()["latency_probs"] == probs
    with pytest.raises(ConfigError, match="latency_probs.*'pair' only in mode 'two'"):
        SuperNet(space, 4, table, mode="full_v2").compile(latency_loss="add#linear", target_ms=target,
                                                          latency_probs="pair")


def test_pair_latency_probs_leave_the_unsampled_alpha_of_an_arch_step_untouched():
    space = micro_space()  # layer 1: mb_k3_e3, mb_k5_e3, zero — a pair leaves one op out
    table = synthetic_table(space, 4)
    lo, hi = table.latency_range(space, 4)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((4,) + space.input_shape), tf.float32)
    y = tf.constant(rng.integers(0, 4, 4), tf.int32)
    unchanged = {}
    for probs in ("softmax", "pair"):
        net = SuperNet(space, 4, table, seed=1)
        net.compile(arch_optimizer=keras.optimizers.Adam(0.1, beta_1=0.0), latency_loss="add#linear",
                    target_ms=lo + 0.2 * (hi - lo), loss_params={"lambda": 3.0}, latency_probs=probs)
        three = next(m for m in net.mixed_ops if m.num_candidates == 3)
        three.alpha.assign([0.3, -0.2, 0.1])
        before = three.alpha.numpy().copy()
        tf.function(net.arch_step)(x, y)
        unchanged[probs] = int(np.sum(three.alpha.numpy() == before))
    assert unchanged == {"softmax": 0, "pair": 1}
