"""MixedOp: the binary-gate gradient against its closed form, the rescale, saving."""

import numpy as np
import pytest
import tensorflow as tf
import keras

from proxyless_tf.layers.mixed_op import MixedOp

CANDS = ["mb_k3_e3", "mb_k5_e3", "mb_k3_e6", "zero"]


SHARING = pytest.mark.parametrize("sharing", ["independent", "nested"])


def small_op(seed=0, mode="single", sharing="independent"):
    op = MixedOp((6, 6), 8, 8, 1, CANDS, mode=mode, seed=seed, name="mix", weight_sharing=sharing)
    op.build((None, 6, 6, 8))
    op.alpha.assign(np.array([0.3, -0.2, 0.5, 0.1], np.float32))
    return op


@SHARING
def test_two_mode_alpha_gradient_matches_closed_form(sharing):
    op = small_op(sharing=sharing)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((2, 6, 6, 8)), tf.float32)
    w = tf.constant(rng.standard_normal((2, 6, 6, 8)), tf.float32)  # dL/dy
    for pair, active in [([2, 0], 1), ([1, 3], 0), ([0, 2], 0)]:
        sample = (tf.constant(pair, tf.int32), tf.constant(active, tf.int32))
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = op(x, training=False, mode="two", sample=sample)
            loss = tf.reduce_sum(y * w)
        grad, dx = tape.gradient(loss, [op.alpha, x])
        grad = tf.convert_to_tensor(grad).numpy()
        # the input gradient is that of the active op alone (the inactive op's gate is 0)
        with tf.GradientTape() as tape:
            tape.watch(x)
            ref = tf.reduce_sum((x + op.ops[pair[active]](x, training=False)) * w)
        np.testing.assert_allclose(dx.numpy(), tape.gradient(ref, x).numpy(), rtol=1e-5, atol=1e-5)
        # closed form: dL/dg_j = <dL/dy, o_j>; grad_i = sum_j dL/dg_j p_j (delta_ij - p_i)
        outs = [op.ops[j](x, training=False).numpy() for j in pair]
        dg = np.array([np.sum(w.numpy() * o) for o in outs], np.float64)
        a = op.alpha.numpy().astype(np.float64)[pair]
        p = np.exp(a - a.max()) / np.exp(a - a.max()).sum()
        expect = np.zeros(4)
        for ii, i in enumerate(pair):
            expect[i] = sum(dg[jj] * p[jj] * ((ii == jj) - p[ii]) for jj in range(2))
        np.testing.assert_allclose(grad, expect, rtol=1e-5, atol=1e-5 * np.abs(dg).max())
        # and the forward value is exactly the active op (plus the shortcut)
        np.testing.assert_allclose(y.numpy(), x.numpy() + outs[active], rtol=1e-6, atol=1e-6)


def test_rescale_keeps_unsampled_probabilities():
    op = small_op()
    before = op.alpha.numpy().copy()
    p_before = np.exp(before) / np.exp(before).sum()
    pair = tf.constant([0, 2], tf.int32)
    opt = keras.optimizers.Adam(0.1, beta_1=0.0, beta_2=0.999)
    opt.build([op.alpha])
    opt.apply([tf.constant([0.7, 0.0, -0.4, 0.0])], [op.alpha])
    op.rescale(tf.constant(before), pair)
    after = op.alpha.numpy()
    p_after = np.exp(after) / np.exp(after).sum()
    np.testing.assert_allclose(p_after[[1, 3]], p_before[[1, 3]], rtol=1e-6)
    np.testing.assert_allclose(after[[1, 3]], before[[1, 3]])
    assert p_after[2] > p_before[2] and p_after[0] < p_before[0]   # the step did move the pair
    np.testing.assert_allclose(p_after[0] + p_after[2], p_before[0] + p_before[2], rtol=1e-6)


def test_sampling_follows_softmax_and_two_draws_distinct_ops():
    op = small_op(seed=3)
    op.alpha.assign(np.log(np.array([0.1, 0.2, 0.3, 0.4], np.float32)))
    draws = np.array([int(op.sample("single")) for _ in range(2000)])
    freq = np.bincount(draws, minlength=4) / len(draws)
    np.testing.assert_allclose(freq, [0.1, 0.2, 0.3, 0.4], atol=0.04)
    for _ in range(50):
        pair, active = op.sample("two")
        assert int(pair[0]) != int(pair[1]) and int(active) in (0, 1)
    assert int(op.sample("argmax")) == 3


@SHARING
def test_single_mode_runs_only_the_sampled_op_and_full_is_weighted_sum(sharing):
    op = small_op(sharing=sharing)
    x = tf.random.stateless_normal((1, 6, 6, 8), seed=(1, 2))
    for j in range(4):
        y = op(x, training=False, mode="single", sample=tf.constant(j))
        np.testing.assert_allclose(y.numpy(), (x + op.ops[j](x, training=False)).numpy(), atol=1e-6)
    # a fixed path (a Python int, as the sandwich passes) is the same op, traced without a switch_case
    for j in range(4):
        fn = tf.function(lambda v, j=j: op(v, training=False, mode="single", sample=j))
        np.testing.assert_allclose(fn(x).numpy(), op(x, training=False, mode="single", sample=tf.constant(j)).numpy(),
                                   atol=1e-6)
        kinds = {n.op for n in fn.get_concrete_function(x).graph.as_graph_def().node}
        assert not kinds & {"Case", "StatelessCase"}, kinds
    # a sampled index: one MBConv block (independent kernels picked by a switch over variable reads,
    # nested ones sliced: no switch at all); `zero` (a candidate here) is the block run on one image
    # and dropped (padded back to the batch), not a cond
    dynamic = tf.function(lambda v, j: op(v, training=False, mode="single", sample=j))
    graph = dynamic.get_concrete_function(x, tf.constant(0)).graph.as_graph_def()
    kinds = {n.op for n in graph.node} | {n.op for f in graph.library.function for n in f.node_def}
    assert not kinds & {"If", "StatelessIf"} and "Pad" in kinds, kinds
    assert bool(kinds & {"Case", "StatelessCase"}) == (sharing == "independent"), kinds
    p = tf.nn.softmax(op.alpha).numpy()
    full = op(x, training=False, mode="full")
    expect = x.numpy() + sum(p[j] * op.ops[j](x, training=False).numpy() for j in range(4))
    np.testing.assert_allclose(full.numpy(), expect, atol=1e-5)


@SHARING
def test_keras_saving_round_trip(tmp_path, sharing):
    inp = keras.Input((6, 6, 8))
    out = MixedOp((6, 6), 8, 16, 2, ["mb_k3_e3", "mb_k5_e6"], mode="argmax", seed=1, name="mix",
                  weight_sharing=sharing)(inp)
    model = keras.Model(inp, out)
    model.get_layer("mix").alpha.assign([0.1, 0.9])
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = np.random.default_rng(0).standard_normal((2, 6, 6, 8)).astype(np.float32)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), atol=1e-6)
    lm = loaded.get_layer("mix")
    assert isinstance(lm, MixedOp) and lm.candidates == ("mb_k3_e3", "mb_k5_e6") and lm.mode == "argmax"
    assert lm.weight_sharing == sharing and len(lm.weights) == len(model.get_layer("mix").weights)
    np.testing.assert_allclose(lm.alpha.numpy(), [0.1, 0.9])
    assert lm.get_config() == model.get_layer("mix").get_config()


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError):
        MixedOp((6, 6), 8, 8, 1, CANDS, mode="dart")


@SHARING
def test_full_v2_alpha_gradient_is_the_full_gate_gradient_with_one_path_forward(sharing):
    """Every op's ∂L/∂g_j = <∂L/∂y, o_j> reaches α, though only the active op ran forward."""
    op = small_op(sharing=sharing)
    rng = np.random.default_rng(1)
    x = tf.constant(rng.standard_normal((2, 6, 6, 8)), tf.float32)
    w = tf.constant(rng.standard_normal((2, 6, 6, 8)), tf.float32)  # dL/dy

    @tf.function
    def step(active):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            y = op(x, training=True, mode="full_v2", sample=active)
            loss = tf.reduce_sum(y * w)
        return y, tape.gradient(loss, op.alpha), tape.gradient(loss, x)

    # `full`-style reference: every output stored, the same gate formula over all ops
    outs = [op.ops[j](x, training=True).numpy() for j in range(4)]
    dg = np.array([np.sum(w.numpy() * o) for o in outs], np.float64)
    p = tf.nn.softmax(op.alpha).numpy().astype(np.float64)
    expect = np.array([sum(dg[j] * p[j] * ((i == j) - p[i]) for j in range(4)) for i in range(4)])
    for active in (1, 3):
        y, g_alpha, g_x = step(tf.constant(active, tf.int32))
        np.testing.assert_allclose(tf.convert_to_tensor(g_alpha).numpy(), expect, rtol=1e-5,
                                   atol=1e-5 * np.abs(dg).max())
        np.testing.assert_allclose(y.numpy(), x.numpy() + outs[active], atol=1e-5)  # forward: the active op
        # the input gradient flows through the active op (and the shortcut) only, as in the official code
        with tf.GradientTape() as t2:
            t2.watch(x)
            ref = tf.reduce_sum((x + op.ops[active](x, training=True)) * w)
        np.testing.assert_allclose(g_x.numpy(), t2.gradient(ref, x).numpy(), atol=1e-5)


class _Holder(keras.layers.Layer):
    """A parent for `cpu_kernels.accelerate`, which serves the layers under a model."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner


@pytest.mark.parametrize("sharing,accelerated", [("independent", False), ("nested", False),
                                                 ("independent", True), ("nested", True)])
def test_sampled_op_is_the_candidate_alone_in_values_gradients_and_statistics(sharing, accelerated):
    """An op chosen by a tensor (one traced block for every MBConv candidate, `sampled.py`)
    computes what that candidate's own layers compute: output, input and weight gradients, and in
    training only its moving statistics move, by the same formula. The candidates mix expanding
    and non-expanding ops and, on the 3x3 output map, kernels below and above the map (accelerated:
    both depthwise filter gradients, picked at run time)."""
    from proxyless_tf.layers import cpu_kernels

    cands = ["mb_k3_e3", "mb_k5_e3", "mb_k3_e6", "mb_k7_e1", "zero"]
    op = MixedOp((6, 6), 8, 12, 2, cands, seed=0, name="mix", weight_sharing=sharing)
    op.build((None, 6, 6, 8))
    if accelerated:
        counts = cpu_kernels.accelerate(_Holder(op))
        if not any(counts.values()):
            pytest.skip("cpu_kernels is off on this host (oneDNN off or a GPU)")
        owner = op.nested if sharing == "nested" else op
        assert owner.fused_bn and owner.depthwise_fn is not None
    rng = np.random.default_rng(1)
    for layer in op._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):  # distinct, non-trivial statistics
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(np.float32) for w in layer.get_weights()])
    for bn in (op.nested.bns.values() if op.nested is not None else ()):  # nested: concatenated per role
        for v in bn.variables.values():
            v.assign(rng.uniform(0.5, 1.5, v.shape).astype(np.float32))
    x = tf.constant(rng.standard_normal((4, 6, 6, 8)), tf.float32)
    w = tf.constant(rng.standard_normal((4, 3, 3, 12)), tf.float32)
    variables = op.trainable_variables
    start = [v.numpy().copy() for v in op.weights]

    def restore():
        for v, a in zip(op.weights, start):
            v.assign(a)

    def grads(forward):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(forward() * w)
        g = tape.gradient(loss, [x] + variables)
        return [loss] + [tf.zeros_like(v) if d is None else tf.convert_to_tensor(d) for d, v in zip(g, [x] + variables)]

    sampled = tf.function(lambda j, training: grads(lambda: op._run(j, x, training)))
    for training in (True, False):
        for j in range(len(cands)):
            restore()
            want = [t.numpy() for t in tf.function(lambda: grads(lambda: op.ops[j](x, training=training)))()]
            want_state = [v.numpy().copy() for v in op.weights]
            restore()
            got = [t.numpy() for t in sampled(tf.constant(j), training)]
            for a, b, v in zip(got, want, [None, x] + variables):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(b).max()),
                                           err_msg=f"{cands[j]} training={training}: {getattr(v, 'path', 'loss/x')}")
            for v, b in zip(op.weights, want_state):  # candidate j's statistics moved as alone, no other's did
                np.testing.assert_allclose(v.numpy(), b, rtol=1e-6, atol=1e-6, err_msg=f"{cands[j]}: {v.path}")
    graph = sampled.get_concrete_function(tf.constant(0), True).graph.as_graph_def()
    kinds = [n.op for n in graph.node] + [n.op for f in graph.library.function for n in f.node_def]
    assert not {"Case", "StatelessCase"} & set(kinds) or sharing == "independent"
    # one depthwise conv for 4 MBConv candidates: the block inside the zero's cond is kept twice (as
    # traced, and rewritten for its gradient), accelerated plus the filter gradient's own conv
    assert kinds.count("DepthwiseConv2dNative") <= (3 if accelerated else 2), kinds.count("DepthwiseConv2dNative")
