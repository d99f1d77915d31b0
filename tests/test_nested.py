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
from proxyless_tf.search.weight_step import optimizer_slots
from search_helpers import micro_space

OPS = ["mb_k3_e3", "mb_k7_e6", "mb_k5_e1", "mb_k5_e6"]


def segment(nested, role, j):
    """Candidate j's slice of role's concatenated BN parameters."""
    sizes = nested.bns[role].sizes
    return slice(sum(sizes[:j]), sum(sizes[:j + 1]))


@pytest.mark.parametrize("stride,out_ch", [(1, 8), (2, 12)])
def test_each_candidate_equals_an_mbconv_with_the_sliced_kernels(stride, out_ch):
    """Outputs, and in training the moving statistics: candidate j's segment moves as the
    reference MBConv's BN layers do, every other candidate's segment stays."""
    nested = NestedMBConv(8, out_ch, stride, OPS, bn_eps=1e-3, name="nest")
    nested.build((None, 10, 10, 8))
    rng = np.random.default_rng(0)
    for bn in nested.bns.values():  # non-trivial BN parameters and statistics, distinct per candidate
        for v in bn.variables.values():
            v.assign(rng.uniform(0.5, 1.5, v.shape).astype(np.float32))
    assert nested.bns["expand"].sizes == [24, 48, 0, 48]  # mb_k5_e1 has no expansion BN
    x = rng.standard_normal((2, 10, 10, 8)).astype(np.float32)
    assert nested.max_kernel == 7 and nested.max_mid == 48
    params = ("gamma", "beta", "moving_mean", "moving_variance")
    for j, op in enumerate(OPS):
        k, e = int(op[4]), int(op[-1])
        mid = 8 * e
        ref = blocks.MBConv(8, out_ch, k, e, stride, 1e-3, name=f"ref{j}")
        ref.build((None, 10, 10, 8))
        off = (7 - k) // 2
        conv = {"expand": nested.expand_kernel.numpy()[..., :mid],
                "dw": nested.dw_kernel.numpy()[off:off + k, off:off + k, :mid, :],
                "project": nested.project_kernel.numpy()[:, :, :mid, :]}
        ref_bn = {}
        for layer in ref.branch:
            part = next((p for p in ("expand", "dw", "project") if layer.name.endswith(f"_{p}")), None)
            if part is not None:
                layer.set_weights([conv[part]])
            elif isinstance(layer, keras.layers.BatchNormalization):
                part = layer.name.rsplit("_", 2)[-2]
                layer.set_weights([nested.bns[part].variables[p].numpy()[segment(nested, part, j)] for p in params])
                ref_bn[part] = layer
        assert set(ref_bn) == {"dw", "project"} | ({"expand"} if e != 1 else set())
        for training in (False, True):
            before = {r: {p: bn.variables[p].numpy().copy() for p in params} for r, bn in nested.bns.items()}
            np.testing.assert_allclose(nested.run(tf.constant(x), j, training=training).numpy(),
                                       ref(x, training=training).numpy(), rtol=1e-4, atol=1e-4)
            for role, bn in nested.bns.items():
                for p in params:
                    now, was = bn.variables[p].numpy(), before[role][p].copy()
                    if role in ref_bn:  # candidate j's segment holds what its own layer holds
                        was[segment(nested, role, j)] = ref_bn[role].get_weights()[params.index(p)]
                    np.testing.assert_allclose(now, was, rtol=1e-5, atol=1e-6, err_msg=f"{op} {role} {p}")
                    moved = not np.array_equal(now[segment(nested, role, j)], before[role][p][segment(nested, role, j)])
                    assert moved == (training and p.startswith("moving") and role in ref_bn), (op, role, p)


@pytest.mark.parametrize("make_opt,num_slots", [
    (lambda: keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.01), 1),
    (lambda: keras.optimizers.AdamW(0.01, weight_decay=0.01), 2),
], ids=["sgd_nesterov_wd", "adamw"])
def test_weight_step_moves_shared_kernels_and_only_the_sampled_candidates_bn(make_opt, num_slots):
    """Per element: the sampled candidate's BN segment and its slots move, every other
    candidate's segment and slots stay bit-identical."""
    space = micro_space()
    net = SuperNet(space, 4, None, seed=1, weight_sharing="nested")
    opt = make_opt()
    net.compile(opt, latency_loss=None)
    step = tf.function(lambda x, y: net.weight_step(x, y)[2])
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((8,) + space.input_shape), tf.float32)
    y = tf.constant(rng.integers(0, 4, 8), tf.int32)
    moved_shared = moved_mine = checked = 0
    for _ in range(6):
        watched = [(m, v, sizes) for m in net.mixed_ops for v, sizes in m.bn_segments()]
        before = {id(v): v.numpy().copy() for m in net.mixed_ops for v in m.nested.variables}
        slot_before = {id(v): [s.numpy().copy() for s in optimizer_slots(opt, v)] for _, v, _ in watched}
        samples = [int(s) for s in step(x, y)]
        for m, j_run in zip(net.mixed_ops, samples):
            if m.candidates[j_run] == "zero":
                assert all(np.array_equal(v.numpy(), before[id(v)]) for v in m.nested.variables)
                continue
            moved_shared += all(not np.array_equal(v.numpy(), before[id(v)]) for v in m.nested.shared_variables())
        for m, v, sizes in watched:
            j_run = samples[net.mixed_ops.index(m)]
            slots = optimizer_slots(opt, v)
            # the same slots as Keras' naming gives them (`{variable path}_{slot}`)
            prefix = v.path.replace("/", "_") + "_"
            assert {id(s) for s in slots} == {id(s) for s in opt.variables
                                              if s.path.split("/", 1)[-1].startswith(prefix)}
            assert len(slots) == num_slots
            for j, size in enumerate(sizes):
                part = slice(sum(sizes[:j]), sum(sizes[:j + 1]))
                pairs = [(v.numpy(), before[id(v)])] + [(s.numpy(), b) for s, b in zip(slots, slot_before[id(v)])]
                for now, was in pairs:
                    if j == j_run:
                        moved_mine += size > 0 and not np.array_equal(now[part], was[part])
                    else:
                        np.testing.assert_array_equal(now[part], was[part], err_msg=f"{v.path}: unsampled "
                                                      f"{m.candidates[j]} moved ({m.candidates[j_run]} ran)")
                        checked += size
    assert moved_shared > 0 and moved_mine > 0 and checked > 0


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


def test_old_layout_checkpoint_and_non_elementwise_optimizer_are_refused(tmp_path):
    """A weights file from before the concatenated BN (per-candidate BN layers under the nested
    layer, its own store the three kernels) is named as such when it cannot be loaded; Lamb,
    whose update of an element depends on its whole variable, cannot update one candidate's
    segment and is refused at compile."""
    import h5py
    from proxyless_tf.runtime.resume import load_failure_reason

    net = SuperNet(micro_space(), 4, None, seed=1, weight_sharing="nested")
    path = str(tmp_path / "old.weights.h5")
    net.save_weights(path)
    with h5py.File(path, "a") as f:  # the old layout: kernels in the layer, BN in child layers
        store = f["layers/mixed_op/nested/vars"]
        for key in [k for k in store.keys() if int(k) >= 3]:
            del store[key]
        f.create_group("layers/mixed_op/nested/bn_layers/batch_normalization/vars")
    with pytest.raises(ValueError) as e:
        SuperNet(micro_space(), 4, None, seed=1, weight_sharing="nested").load_weights(path)
    assert load_failure_reason(e.value, path).startswith("written by a version with a batch-norm layer per nested")
    assert "expected 15 variables" in load_failure_reason(e.value, str(tmp_path / "absent.h5"))
    with pytest.raises(ConfigError, match="weight_optimizer: Lamb scales each variable's update"):
        net.compile(keras.optimizers.Lamb(0.01), latency_loss=None)
    SuperNet(micro_space(), 4, None, seed=1).compile(keras.optimizers.Lamb(0.01), latency_loss=None)  # independent
