"""Published networks: parameter counts and multiply-adds against the paper; blocks and export."""

import os

import keras
import numpy as np
import pytest

import proxyless_tf as pt
from proxyless_tf.layers import blocks
from proxyless_tf.export import tflite as export
from proxyless_tf.models import nets
from proxyless_tf import space as space_lib
from proxyless_tf.space import macs

from conftest import ROOT

PUBLISHED = {  # name: (trainable parameters, multiply-adds in millions) at 224x224, 1000 classes
    "proxyless_mobile": (4_080_512, 320.4),
    "proxyless_gpu": (7_119_848, 465.3),
    "proxyless_cpu": (4_361_648, 439.2),
    "proxyless_mobile_14": (6_857_568, 580.9),
}


def _arch(name):
    return pt.Arch.from_json(os.path.join(ROOT, "configs", "archs", f"{name}.json"))


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_network_parameters_and_macs(name):
    params, mmacs = PUBLISHED[name]
    arch = _arch(name)
    model = pt.build_model(arch, num_classes=1000)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == params
    assert abs(pt.count_macs(arch, 1000) / 1e6 - mmacs) / mmacs < 0.01


def test_mbconv_parameter_count_by_hand():
    # in 24, e6 -> 144, k5, out 40: expand 24*144 + BN 2*144, dw 25*144 + BN 2*144,
    # project 144*40 + BN 2*40.
    layer = blocks.MBConv(24, 40, 5, 6, 2, name="b")
    layer.build((None, 56, 56, 24))
    expect = 24 * 144 + 2 * 144 + 25 * 144 + 2 * 144 + 144 * 40 + 2 * 40
    assert sum(int(np.prod(w.shape)) for w in layer.trainable_weights) == expect
    assert macs.mbconv_macs((56, 56), 24, 40, "mb_k5_e6", 2) == 56 * 56 * 24 * 144 + 28 * 28 * (25 * 144 + 144 * 40)


def test_zero_layers_are_skipped_in_the_plain_network():
    space = pt.SearchSpace.from_json(os.path.join(ROOT, "configs", "spaces", "fashion_mnist.json"))
    ops = [l.candidates[0] for l in space.layers]
    with_zero = [space_lib.ZERO if space_lib.ZERO in l.candidates else op for l, op in zip(space.layers, ops)]
    full, skipped = pt.build_model(pt.Arch(space, ops), 10), pt.build_model(pt.Arch(space, with_zero), 10)
    n_zero = sum(op == space_lib.ZERO for op in with_zero)
    assert n_zero > 0
    names_full = {l.name for l in full.layers}
    names_skip = {l.name for l in skipped.layers}
    for layer, op in zip(space.layers, with_zero):
        assert (f"layer{layer.index}_dw" in names_skip) == (op != space_lib.ZERO)
        assert f"layer{layer.index}_dw" in names_full


@pytest.mark.parametrize("layer", [
    blocks.MBConv(8, 8, 3, 3, 1, residual=True, name="mb"),
    blocks.ZeroOp(16, 2, name="z"),
])
def test_custom_layers_survive_keras_saving(tmp_path, layer):
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 8)).astype("float32")
    inp = keras.Input((8, 8, 8))
    model = keras.Model(inp, layer(inp))
    path = str(tmp_path / "m.keras")
    model.save(path)
    again = keras.saving.load_model(path)
    np.testing.assert_allclose(again(x).numpy(), model(x).numpy(), atol=1e-6)
    assert again.layers[1].get_config() == layer.get_config()


def test_plain_network_loads_without_custom_objects_and_matches_tflite(tmp_path):
    space = pt.SearchSpace.from_json(os.path.join(ROOT, "configs", "spaces", "fashion_mnist.json"))
    model = pt.build_model(space.sample(seed=2), 10)
    path = str(tmp_path / "net.keras")
    model.save(path)
    again = keras.saving.load_model(path, safe_mode=True)  # stock layers only
    assert not any(type(l).__module__.startswith("proxyless_tf") for l in again.layers)
    x = np.random.default_rng(1).uniform(size=(1, 28, 28, 1)).astype("float32")
    interp = export.load_interpreter(export.to_tflite(again))
    tfl = export.run_tflite(interp, x)
    ref = model(x, training=False).numpy()
    assert np.abs(tfl - ref).max() <= 1e-4
    assert tfl.argmax() == ref.argmax()


def test_block_models_have_the_shapes_of_their_key():
    m = nets.build_block_model((14, 14), 40, "mb_k7_e6", 2, 80)
    assert m.input_shape == (1, 14, 14, 40) and m.output_shape == (1, 7, 7, 80)
    assert not any(l.name.endswith("_add") for l in m.layers)
    r = nets.build_block_model((7, 7), 80, "mb_k3_e3", 1, 80)
    assert any(l.name.endswith("_add") for l in r.layers)
