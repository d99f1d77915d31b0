"""Nested weight sharing: each candidate is exactly an MBConv cut from the shared kernels,
a weight step moves the shared kernels and only the sampled candidate's own BN, the
supernet's config and checkpoints carry the choice."""

import numpy as np
import pytest
import tensorflow as tf
import keras

from proxyless_tf.layers import blocks
from proxyless_tf.errors import ConfigError
from proxyless_tf.layers.mixed_op import MixedOp
from proxyless_tf.layers.nested import NestedMBConv
from proxyless_tf.search.supernet import SuperNet
from search_helpers import micro_space

OPS = ["mb_k3_e3", "mb_k7_e6", "mb_k5_e1", "mb_k5_e6"]


@pytest.mark.parametrize("stride,out_ch", [(1, 8), (2, 12)])
def test_each_candidate_equals_an_mbconv_with_the_sliced_kernels(stride, out_ch):
    nested = NestedMBConv(8, out_ch, stride, OPS, bn_eps=1e-3, name="nest")
    nested.build((None, 10, 10, 8))
    rng = np.random.default_rng(0)
    for bn in nested.bn_layers:  # non-trivial BN parameters and statistics, distinct per candidate
        bn.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(np.float32) for w in bn.get_weights()])
    x = rng.standard_normal((2, 10, 10, 8)).astype(np.float32)
    assert nested.max_kernel == 7 and nested.max_mid == 48
    for j, op in enumerate(OPS):
        k, e = int(op[4]), int(op[-1])
        mid = 8 * e
        ref = blocks.MBConv(8, out_ch, k, e, stride, 1e-3, name=f"ref{j}")
        ref.build((None, 10, 10, 8))
        off = (7 - k) // 2
        conv = {"expand": nested.expand_kernel.numpy()[..., :mid],
                "dw": nested.dw_kernel.numpy()[off:off + k, off:off + k, :mid, :],
                "project": nested.project_kernel.numpy()[:, :, :mid, :]}
        for layer in ref.branch:
            part = next((p for p in ("expand", "dw", "project") if layer.name.endswith(f"_{p}")), None)
            if part is not None:
                layer.set_weights([conv[part]])
            elif isinstance(layer, keras.layers.BatchNormalization):
                part = layer.name.rsplit("_", 2)[-2]
                layer.set_weights(nested.bns[j][part].get_weights())
        for training in (False, True):
            np.testing.assert_allclose(nested.run(tf.constant(x), j, training=training).numpy(),
                                       ref(x, training=training).numpy(), rtol=1e-4, atol=1e-4)


def test_weight_step_moves_shared_kernels_and_only_the_sampled_candidates_bn():
    space = micro_space()
    net = SuperNet(space, 4, None, seed=1, weight_sharing="nested")
    net.compile(keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.01), latency_loss=None)
    step = tf.function(lambda x, y: net.weight_step(x, y)[2])
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((8,) + space.input_shape), tf.float32)
    y = tf.constant(rng.integers(0, 4, 8), tf.int32)
    moved_shared = 0
    for _ in range(4):
        before = {id(v): v.numpy().copy() for m in net.mixed_ops for v in m.nested.variables}
        samples = [int(s) for s in step(x, y)]
        for m, j_run in zip(net.mixed_ops, samples):
            if m.candidates[j_run] == "zero":
                assert all(np.array_equal(v.numpy(), before[id(v)]) for v in m.nested.variables)
                continue
            shared = m.nested.shared_variables()
            moved_shared += all(not np.array_equal(v.numpy(), before[id(v)]) for v in shared)
            mine = {id(v) for v in m.candidate_variables(j_run)}
            for j in range(m.num_candidates):
                if j == j_run:
                    continue
                own = [v for v in m.candidate_variables(j) if id(v) not in {id(s) for s in shared}]
                assert all(np.array_equal(v.numpy(), before[id(v)]) for v in own if id(v) not in mine), \
                    f"{m.name}: BN of unsampled {m.candidates[j]} moved"
    assert moved_shared > 0


def test_nested_supernet_config_and_checkpoint_round_trip(tmp_path):
    space = micro_space()
    net = SuperNet(space, 4, None, seed=1, weight_sharing="nested")
    cfg = net.get_config()
    assert cfg["weight_sharing"] == "nested"
    twin = SuperNet.from_config(cfg)
    assert [m.weight_sharing for m in twin.mixed_ops] == ["nested"] * len(space.layers)
    for v in net.weights:
        v.assign(np.random.default_rng(len(v.path)).standard_normal(v.shape).astype(v.dtype))
    path = str(tmp_path / "n.weights.h5")
    net.save_weights(path)
    twin.load_weights(path)
    x = np.random.default_rng(0).standard_normal((2,) + space.input_shape).astype(np.float32)
    np.testing.assert_allclose(twin(x).numpy(), net(x).numpy(), atol=1e-5)
    # nested holds fewer conv weights than independent candidates
    indep = SuperNet(space, 4, None, seed=1)
    assert net.count_params() < indep.count_params()


def test_unknown_weight_sharing_is_one_config_error():
    with pytest.raises(ConfigError, match="weight_sharing"):
        SuperNet(micro_space(), 4, None, weight_sharing="tied")
    with pytest.raises(ValueError, match="weight_sharing"):
        MixedOp((6, 6), 8, 8, 1, OPS, weight_sharing="tied")
