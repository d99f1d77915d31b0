"""The Normalize layer: the one formula, no weights, saved and loaded, converted to TFLite."""

import keras
import numpy as np
import pytest

from proxyless_tf.errors import ConfigError
from proxyless_tf.layers.preprocessing import Normalize
from proxyless_tf.models.nets import build_model
from proxyless_tf.space import Arch, SearchSpace

from search_helpers import TINY

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)  # CIFAR-10's


def _pixels(n=4, h=5, w=6, c=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c)).astype(np.float32)


def test_normalize_is_the_shared_formula_per_channel():
    x = _pixels()
    y = keras.ops.convert_to_numpy(Normalize(MEAN, STD)(x))
    want = (x / 255.0 - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    from proxyless_tf.data import preprocess  # the data layer's formula: the same numbers

    np.testing.assert_allclose(y, keras.ops.convert_to_numpy(preprocess.normalize(x, MEAN, STD)), rtol=1e-5,
                               atol=1e-5)


def test_normalize_adds_no_weights_and_build_model_keeps_the_parameter_count():
    arch = Arch(SearchSpace.from_dict(TINY), ["mb_k3_e3"] * SearchSpace.from_dict(TINY).num_layers)
    plain = build_model(arch, 10)
    norm = build_model(arch, 10, normalization=(MEAN, STD))
    assert norm.count_params() == plain.count_params() > 0
    assert isinstance(norm.layers[1], Normalize) and not Normalize(MEAN, STD).weights
    x = _pixels(2, 16, 16, 3)
    plain.set_weights(norm.get_weights())  # same layers, same order: the weights are interchangeable
    want = plain((x / 255.0 - np.array(MEAN, np.float32)) / np.array(STD, np.float32), training=False)
    np.testing.assert_allclose(norm(x, training=False), want, atol=1e-4)


def test_normalize_survives_keras_saving_with_safe_mode(tmp_path):
    inp = keras.Input((5, 6, 3))
    model = keras.Model(inp, keras.layers.Dense(2)(Normalize(MEAN, STD, name="normalize")(inp)))
    path = tmp_path / "m.keras"
    model.save(path)
    from proxyless_tf.export import tflite as export

    back = export.load_keras_model(path)  # safe_mode on, as the export tool loads
    layer = back.get_layer("normalize")
    assert isinstance(layer, Normalize) and layer.mean == MEAN and layer.std == STD
    assert layer.get_config()["mean"] == list(MEAN)
    x = _pixels()
    np.testing.assert_allclose(back.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_normalize_converts_to_tflite_and_runs_on_raw_pixels():
    from proxyless_tf.export import tflite as export

    inp = keras.Input((5, 6, 3))
    model = keras.Model(inp, Normalize(MEAN, STD)(inp))
    interp = export.open_interpreter(export.convert(model, "float32", batch_size=4))
    x = _pixels()
    np.testing.assert_allclose(export.predict_tflite(interp, x), model.predict(x, verbose=0), atol=1e-5)


@pytest.mark.parametrize("mean,std,needle", [((0.5, 0.5), (0.2,), "2 means and 1 stds"),
                                             ((0.5,), (0.0,), "std > 0"),
                                             ((float("nan"),), (0.2,), "finite"),
                                             (("a",), (0.2,), "expected numbers")])
def test_bad_normalization_is_one_error(mean, std, needle):
    with pytest.raises(ConfigError, match=needle):
        Normalize(mean, std)


def test_three_means_for_one_channel_is_refused_at_build():
    with pytest.raises(ConfigError, match="3 values for 1 input channels"):
        Normalize(MEAN, STD)(np.zeros((1, 4, 4, 1), np.float32))


def test_a_fresh_process_loads_a_retrained_model_with_pt_load_model(tmp_path):
    """Keras finds a registered class only once its module is imported: `pt.load_model` imports it, so a
    user's `import proxyless_tf as pt; pt.load_model(path)` in a new process gets the Normalize layer back."""
    import subprocess
    import sys

    arch = Arch(SearchSpace.from_dict(TINY), ["mb_k3_e3"] * SearchSpace.from_dict(TINY).num_layers)
    model = build_model(arch, 10, normalization=(MEAN, STD))
    path = str(tmp_path / "m.keras")
    model.save(path)
    x = _pixels(2, 16, 16, 3)
    np.save(tmp_path / "x.npy", x)
    code = ("import sys, numpy as np, proxyless_tf as pt; m = pt.load_model(sys.argv[1]); "
            "print(type(m.layers[1]).__name__); np.save(sys.argv[2], m.predict(np.load(sys.argv[3]), verbose=0))")
    proc = subprocess.run([sys.executable, "-c", code, path, str(tmp_path / "y.npy"), str(tmp_path / "x.npy")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-1] == "Normalize"
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
