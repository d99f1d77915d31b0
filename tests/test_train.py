"""Retraining: the learning-rate shape, what is decayed, and the CLI's run directory."""

import json
import os
import re

import keras
import numpy as np
import pytest

from conftest import assert_one_line_error, run_cli
from proxyless_tf.training import recipe as training
from proxyless_tf.training.config import TrainConfig
from proxyless_tf.export.tflite import load_keras_model
from train_helpers import write_tiny_arch


def test_lr_warms_up_linearly_then_follows_a_cosine_to_zero():
    cfg = TrainConfig(epochs=10, lr=0.2, warmup_epochs=1)
    sched = training.lr_schedule(cfg, steps_per_epoch=100)  # 100 warm-up steps, 900 cosine steps
    lr = lambda s: float(sched(s))  # noqa: E731
    assert lr(0) == pytest.approx(0.0, abs=1e-7)
    assert lr(50) == pytest.approx(0.1, rel=1e-5)
    assert lr(100) == pytest.approx(0.2, rel=1e-5)
    assert lr(100 + 450) == pytest.approx(0.1, rel=1e-4)  # half way down the cosine
    assert lr(1000) == pytest.approx(0.0, abs=1e-6)


def test_weight_decay_skips_batchnorm_and_biases():
    keras.utils.set_random_seed(0)
    inp = keras.Input((4, 4, 1))
    out = keras.layers.Dense(2)(keras.layers.Flatten()(keras.layers.BatchNormalization()(
        keras.layers.Conv2D(2, 3, use_bias=False)(inp))))
    model = keras.Model(inp, out)
    cfg = TrainConfig(lr=0.1, warmup_epochs=0, weight_decay=0.5, momentum=0.0)
    opt = training.make_optimizer(cfg, steps_per_epoch=10)
    before = {v.path: np.array(v) for v in model.trainable_variables}
    zero = [keras.ops.zeros_like(v) for v in model.trainable_variables]
    opt.apply_gradients(zip(zero, model.trainable_variables))  # zero gradients: only decay moves
    moved = {v.path: not np.allclose(np.array(v), before[v.path]) for v in model.trainable_variables}
    assert {p for p, m in moved.items() if m} == {p for p in moved if p.endswith("kernel")}


# TensorFlow's own logging (absl/TF C++ and Python records, the TFLite runtime) and Keras's fit warning.
TF_LINE = re.compile(r"^[IWE]\d{4} |oneDNN custom operations|cudart_stub|absl::InitializeLog|XNNPACK delegate"
                     r"|shuffle=True", re.M)


def test_cli_trains_evaluates_and_saves(tmp_path):
    arch = write_tiny_arch(tmp_path)
    out = tmp_path / "run"
    proc = run_cli(["-m", "proxyless_tf.train", "--flagfile=configs/train_fashion_mnist.flags", f"--arch={arch}",
                    "--epochs=2", "--train_examples=1024", "--batch_size=64", "--lr=0.2", f"--out_dir={out}",
                    "--log_every=8"], TF_CPP_MIN_LOG_LEVEL="2")  # what `import proxyless_tf` sets by default
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The console: a start line, one line per 8 of the 16 steps and per epoch, a 5-line summary; nothing else.
    lines = proc.stdout.splitlines()
    assert not TF_LINE.search(proc.stdout + proc.stderr) and proc.stderr == "", proc.stderr[-3000:]
    assert lines[0] == f"retraining {arch} on fashion_mnist: 2 epochs of 16 steps x 64 images, into {out}"
    assert [re.sub(r"^done in .*", "done", l.split("  ")[1]) for l in lines[1:5]] == \
        ["step 8/16", "done", "step 8/16", "done"]
    assert len(lines) == 10, proc.stdout
    assert re.match(r"retrained arch\.json: test accuracy \d+\.\d\d % \(loss [\d.]+, 10000 test images\), 2 epochs",
                    lines[5]), lines[5]
    assert lines[6].startswith(f"  model:  {out / 'model.keras'}") and lines[7].startswith(f"  result: {out}")
    assert lines[-1] == f"  python tools/export_tflite.py {out / 'model.keras'}"  # run from the checkout
    res = json.loads((out / "result.json").read_text())
    assert f"{100 * res['test_accuracy']:.2f} %" in lines[5]
    assert res["epochs"] == 2 and res["test_accuracy"] > 0.25  # 10 classes: chance is 0.1; 32 steps reach ~0.4
    for f in ("model.keras", "best.keras", "train_log.csv"):
        assert (out / f).exists(), f
    assert len((out / "train_log.csv").read_text().strip().splitlines()) == 3  # header + 2 epochs
    assert not os.path.isdir(out / "resume")  # the resume checkpoint is removed after a finished run
    # Loads back with safe_mode and gives the reported accuracy's logits shape.
    model = load_keras_model(out / "model.keras")  # registers Normalize, the model's first layer
    assert model.output_shape == (None, 10)


def test_cli_verbosity_brings_tensorflow_lines_back_and_json_prints_the_result(tmp_path):
    arch = write_tiny_arch(tmp_path)
    proc = run_cli(["-m", "proxyless_tf.train", f"--arch={arch}", "--epochs=1", "--steps_per_epoch=2",
                    "--train_examples=256", "--batch_size=64", f"--out_dir={tmp_path / 'run'}", "--verbosity=0",
                    "--progress=none", "--json"], TF_CPP_MIN_LOG_LEVEL="2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(TF_LINE.findall(proc.stderr)) >= 2, proc.stderr[-3000:]  # the oneDNN/CUDA banners at least
    assert len(proc.stdout.splitlines()) == 7 and "epoch 1/1" not in proc.stdout, proc.stdout  # --progress=none
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["epochs"] == 1 and res["model_path"] == str(tmp_path / "run" / "model.keras")


def test_cli_rejects_arch_for_another_input_shape(tmp_path, repo_root):
    """An RGB network on grayscale Fashion-MNIST: one line naming the arch file, nothing written."""
    proc = run_cli(["-m", "proxyless_tf.train", "--arch=configs/archs/proxyless_mobile.json", "--epochs=1",
                    f"--out_dir={tmp_path}/r"])
    assert_one_line_error(proc, "proxyless_mobile.json", "space.input_shape", "3-channel 224x224", "1-channel")
    assert not (tmp_path / "r").exists()


def test_best_checkpoint_is_replaced_atomically(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    path = tmp_path / "best.keras"
    cb = training.AtomicModelCheckpoint(str(path), monitor="accuracy", mode="max", save_best_only=True)
    cb.set_model(model)
    cb.on_epoch_end(0, {"accuracy": 0.5})
    assert path.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["best.keras"]
    good = path.read_bytes()

    def killed_mid_write(filepath, **kwargs):  # a kill during the write: a partial file, no return
        with open(filepath, "wb") as f:
            f.write(b"PK\x03\x04partial")
        raise KeyboardInterrupt

    model.save = killed_mid_write
    try:
        cb.on_epoch_end(1, {"accuracy": 0.9})
    except KeyboardInterrupt:
        pass
    assert path.read_bytes() == good  # the previous best is intact
    cb.best = 0.5
    cb.on_epoch_end(2, {"accuracy": 0.4})  # no improvement: the stale partial file is dropped, not renamed in
    assert path.read_bytes() == good and not (tmp_path / "best.tmp.keras").exists()
    keras.models.load_model(str(path))


def test_flagfile_by_name_resolves_in_configs_from_any_directory(tmp_path):
    """`--flagfile=train_fashion_mnist.flags` (as the README writes it) from a directory without it:
    the flag file is found in configs/, so the first complaint is the missing --arch."""
    proc = run_cli(["-m", "proxyless_tf.train", "--flagfile=train_fashion_mnist.flags"], cwd=str(tmp_path))
    assert_one_line_error(proc, "--arch")
    assert "flag file" not in proc.stderr


# ---- any source, from Python ----------------------------------------------------------------

def _rgb_arrays(n, classes=3, size=16, seed=0):
    """Images whose class is their brightness: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = (rng.integers(0, 60, (n, size, size, 3)) + 90 * y[:, None, None, None]).astype(np.uint8)
    return x, y


def _tiny_rgb_arch():
    from proxyless_tf.space import Arch, SearchSpace
    from search_helpers import TINY

    space = SearchSpace.from_dict(TINY)  # 16x16x3
    return Arch(space, ["mb_k3_e3"] * space.num_layers)


def test_train_on_numpy_arrays_in_memory_carries_the_normalisation(tmp_path):
    from proxyless_tf.data.sources import from_arrays
    from proxyless_tf.layers.preprocessing import Normalize
    from proxyless_tf.training import inputs as inputs_lib

    x, y = _rgb_arrays(96)
    xt, yt = _rgb_arrays(32, seed=1)
    source = from_arrays(x, y, xt, yt)
    cfg = TrainConfig(epochs=2, batch_size=16, lr=0.1, warmup_epochs=0, checkpoint_every=0, val_examples=16)
    inputs = inputs_lib.prepare(_tiny_rgb_arch(), source, cfg)
    assert inputs.in_memory and inputs.num_train == 80 and inputs.num_val == 16 and inputs.steps == 5
    res = training.train(_tiny_rgb_arch(), inputs, cfg, str(tmp_path / "run"), progress="none")
    assert res["num_classes"] == 3 and res["num_test"] == 32 and res["input_shape"] == [16, 16, 3]
    assert res["normalization"]["mean"] == list(source.mean)
    model = load_keras_model(res["model_path"])
    assert isinstance(model.layers[1], Normalize) and model.layers[1].std == tuple(source.std)
    assert model.output_shape == (None, 3)
    # evaluated on raw pixels: the reported accuracy is the model's on the raw test images
    acc = float(np.mean(np.argmax(model.predict(xt.astype(np.float32), verbose=0), 1) == yt))
    assert acc == pytest.approx(res["test_accuracy"], abs=1e-6)


def test_train_streams_a_tf_data_source_with_inception_crops(tmp_path):
    import tensorflow as tf

    from proxyless_tf.data.sources import from_tf_data
    from proxyless_tf.training import inputs as inputs_lib

    x, y = _rgb_arrays(64, size=24)  # 24x24 images, a 16x16 network: resized by the stream
    xt, yt = _rgb_arrays(16, size=24, seed=1)
    source = from_tf_data(tf.data.Dataset.from_tensor_slices((x, y)), tf.data.Dataset.from_tensor_slices((xt, yt)),
                          num_classes=3)
    cfg = TrainConfig(epochs=1, batch_size=16, augment="inception", checkpoint_every=0, shuffle_buffer=32)
    inputs = inputs_lib.prepare(_tiny_rgb_arch(), source, cfg)
    assert not inputs.in_memory and inputs.steps == 4 and inputs.eval_style == "imagenet"
    res = training.train(_tiny_rgb_arch(), inputs, cfg, str(tmp_path / "run"), progress="none")
    assert res["num_test"] == 16 and 0.0 <= res["test_accuracy"] <= 1.0
    assert load_keras_model(res["model_path"]).input_shape == (None, 16, 16, 3)


@pytest.mark.parametrize("case", ["channels", "classes", "val_all", "seed", "run_dir_file"])
def test_bad_training_input_is_one_error_before_the_run_dir_exists(tmp_path, case):
    from proxyless_tf.data.sources import from_arrays
    from proxyless_tf.errors import ConfigError

    x, y = _rgb_arrays(32)
    kwargs, cfg, run_dir = {}, TrainConfig(epochs=1, batch_size=8), tmp_path / "run"
    data, needle = from_arrays(x, y), None
    if case == "channels":
        data, needle = from_arrays(x[..., :1], y), "3-channel 16x16 images"
    elif case == "classes":
        kwargs, needle = {"num_classes": 10}, "--num_classes"
    elif case == "val_all":
        cfg.val_examples, needle = 32, "leaves none to train on"
    elif case == "seed":
        cfg.seed, needle = -1, "seed"
    else:
        run_dir.write_text("a file")
        needle = "is a file, not a directory"
    with pytest.raises(ConfigError, match=needle):
        training.train(_tiny_rgb_arch(), data, cfg, str(run_dir), progress="none", **kwargs)
    assert (not run_dir.exists()) if case != "run_dir_file" else run_dir.read_text() == "a file"
