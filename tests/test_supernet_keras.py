"""SuperNet follows Keras conventions: a `.keras` round trip, one clear error for `fit(x, y)`, the
public names, and optimizer options the per-group weight step cannot apply refused in one line."""

import numpy as np
import pytest
import tensorflow as tf
import keras

import proxyless_tf as pt
from proxyless_tf.errors import ConfigError
from proxyless_tf.search import replica_step
from proxyless_tf.search.supernet import SuperNet
from search_helpers import micro_space, synthetic_table, tiny_search_data


@pytest.fixture(autouse=True, scope="module")
def _no_grappler():
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    yield
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": False})


def searched_net():
    space = micro_space()
    table = synthetic_table(space, 4)
    lo, hi = table.latency_range(space, 4)
    net = SuperNet(space, 4, table, seed=0)
    net.compile(keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True), keras.optimizers.Adam(0.1, beta_1=0.0),
                latency_loss="add#linear", target_ms=lo + 0.3 * (hi - lo), loss_params={"lambda": 2.0})
    net.fit(tiny_search_data(space, n=16, batch=8), epochs=1, verbose=0)
    return net, space, table


def test_keras_file_round_trip_restores_alpha_weights_table_and_compile(tmp_path):
    net, space, table = searched_net()
    path = str(tmp_path / "supernet.keras")
    net.save(path)
    back = keras.saving.load_model(path)
    assert isinstance(back, SuperNet) and back.compiled
    for a, b in zip(net.mixed_ops, back.mixed_ops):
        np.testing.assert_array_equal(a.alpha.numpy(), b.alpha.numpy())
    assert any(np.ptp(m.alpha.numpy()) > 1e-3 for m in back.mixed_ops)  # α did move in the search
    np.testing.assert_array_equal(net.classifier.kernel.numpy(), back.classifier.kernel.numpy())
    assert back.latency_table.to_dict() == table.to_dict()  # by value: no file needed beside the .keras
    assert abs(float(back.expected_latency()) - float(net.expected_latency())) < 1e-6
    assert (back.latency_loss, back.target_ms, back.loss_params) == (net.latency_loss, net.target_ms, net.loss_params)
    assert isinstance(back.optimizer, keras.optimizers.SGD) and back.optimizer.nesterov
    assert float(back.arch_optimizer.beta_1) == 0.0
    # both optimizers' state: 2 steps of each (one epoch of 2 batches, an arch step every step)
    assert int(back.optimizer.iterations.numpy()) == 2 and int(back.arch_optimizer.iterations.numpy()) == 2
    for a, b in zip(net.optimizer.variables + net.arch_optimizer.variables,
                    back.optimizer.variables + back.arch_optimizer.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    # one more step on the same batch moves both the same way: same weights and slots; the path
    # draws' state is not a weight (resuming a run restores it, runtime/resume.py), so copy it
    for a, b in zip(net.mixed_ops, back.mixed_ops):
        b.seed_generator.state.assign(a.seed_generator.state)
    batch = next(iter(tiny_search_data(space, n=8, batch=8, seed=5)))
    for m in (net, back):
        tf.function(m.train_step)(batch)
    assert int(back.arch_optimizer.iterations.numpy()) == 3
    for a, b in zip(net.mixed_ops, back.mixed_ops):
        np.testing.assert_allclose(a.alpha.numpy(), b.alpha.numpy(), atol=1e-6)
    np.testing.assert_allclose(net.classifier.kernel.numpy(), back.classifier.kernel.numpy(), atol=1e-6)


def test_keras_file_of_an_uncompiled_supernet_reloads_uncompiled(tmp_path):
    space = micro_space()
    net = SuperNet(space, 4, None, seed=0, weight_sampling="uniform")
    net.save(str(tmp_path / "s.keras"))
    back = keras.saving.load_model(str(tmp_path / "s.keras"))
    assert not back.compiled and back.latency_table is None and back.weight_sampling == "uniform"
    back.compile(latency_loss=None)  # and compiles as a new one does
    assert back.arch_optimizer is not None


def test_fit_with_arrays_is_one_error_naming_the_search_batches():
    space = micro_space()
    net = SuperNet(space, 4, None, seed=0)
    net.compile(latency_loss=None)
    x = np.zeros((8,) + space.input_shape, np.float32)
    y = np.zeros((8,), np.int32)
    with pytest.raises(ConfigError, match=r"\(\(x, y\), \(x_val, y_val\)\)") as e:
        net.fit(x, y, verbose=0)
    assert "tf.data.Dataset.zip" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=r"\(\(x, y\), \(x_val, y_val\)\)"):  # a dataset of plain (x, y)
        net.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(4), verbose=0)
    # the nested tuple of arrays is a search batch: Keras slices it, one weight step per 4 images
    net.fit(((x, y), (x, y)), batch_size=4, epochs=1, verbose=0)
    assert int(net.optimizer.iterations.numpy()) == 2


def test_every_public_name_resolves():
    design_card = {"Arch", "SearchSpace", "build_model", "LatencyTable", "SuperNet", "ConfigError", "parse_op",
                   "count_macs"}
    assert design_card <= set(pt.__all__)
    for name in pt.__all__:
        assert getattr(pt, name) is not None, name
    assert pt.SuperNet is SuperNet and set(pt.__all__) <= set(dir(pt))
    with pytest.raises(AttributeError):
        pt.NoSuchName  # noqa: B018


@pytest.mark.parametrize("option", [dict(global_clipnorm=1.0), dict(use_ema=True),
                                    dict(gradient_accumulation_steps=2)], ids=lambda o: next(iter(o)))
def test_optimizer_options_the_per_group_weight_step_cannot_apply_are_refused(option):
    space = micro_space()
    net = SuperNet(space, 4, None, seed=0)
    name = next(iter(option))
    with pytest.raises(ConfigError, match=f"weight_optimizer: {name} is not applied by the search's weight step"):
        net.compile(keras.optimizers.SGD(0.1, **option), latency_loss=None)
    net.compile(keras.optimizers.SGD(0.1, clipnorm=1.0), latency_loss=None)  # per variable: applied per group too
    full = SuperNet(space, 4, None, seed=0, mode="full")  # one apply of every weight: any option works
    full.compile(keras.optimizers.SGD(0.1, **option), latency_loss=None)
    # the distributed step refuses through the same check, with its own longer list
    with pytest.raises(ConfigError, match="clipnorm is not applied by the distributed search step"):
        replica_step.check_optimizer(keras.optimizers.SGD(0.1, clipnorm=1.0), "weight_optimizer")


def test_fit_on_search_batches_does_not_warn_that_shuffle_is_ignored():
    """Search batches come pre-shuffled: `fit` passes shuffle=False so Keras's `shuffle=True ... ignored`
    warning (one per fit, every run) stays out of a user's console; any other warning still shows."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        searched_net()
    assert not [w for w in caught if "shuffle" in str(w.message)], [str(w.message) for w in caught]
