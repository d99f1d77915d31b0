"""Search -> retrain -> export float32 -> LiteRT on raw pixels, for tfds CIFAR-10 and ImageNet (mock
data) and for an image folder through the two command lines.

Kept fast: a two-layer space at 16x16 (the data is resized to it: the network follows the space's
size, the data's channels and classes), a few steps of each stage. What is asserted is the chain's
contract: the source's image shape and classes reach the network, the retrained model starts with
`Normalize` and its `.tflite` takes pixel values 0..255 and agrees with Keras on them.
"""

import json

import numpy as np
import pytest

from conftest import run_cli
from search_helpers import MICRO, synthetic_table

NUM_TEST = 8


def _space(tmp_path):
    from proxyless_tf.space import SearchSpace

    space = SearchSpace.from_dict(dict(MICRO, name="micro16", input_shape=[16, 16, 3]))
    path = tmp_path / "micro16.json"
    space.to_json(path)
    return space, str(path)


def _check_float32_export(model_path, source, style):
    """The float32 .tflite of a retrained model on raw uint8-valued test pixels agrees with Keras."""
    from proxyless_tf.export import data as export_data
    from proxyless_tf.export import report as export_report
    from proxyless_tf.export import tflite as export

    model = export.load_keras_model(model_path)
    data = export_data.prepare(model, source, model_path, NUM_TEST, 1, style)
    assert data.raw_pixels and data.x_test.shape == (NUM_TEST, 16, 16, 3)
    x = np.round(data.x_test)  # integer pixel values 0..255, as a camera frame would give them
    assert x.min() >= 0 and x.max() <= 255
    content = export.convert(model, "float32")
    checks, io = export_report.check_export(content, model.predict(x, verbose=0), x, data.y_test)
    assert io["input"]["shape"] == [1, 16, 16, 3] and io["input"]["dtype"] == "float32"
    assert io["output"]["shape"] == [1, source.num_classes]
    assert checks["max_abs_logit_diff"] <= 1e-3 and checks["top1_agreement"] == 1.0
    return data


@pytest.mark.parametrize("name,classes,image_shape,augment,style", [
    ("cifar10", 10, (32, 32, 3), "crop_flip", "small"),
    ("imagenet2012", 1000, (None, None, 3), "inception", "imagenet"),
])
@pytest.mark.slow
def test_tfds_search_train_export_chain(tmp_path, monkeypatch, name, classes, image_shape, augment, style):
    import tensorflow_datasets as tfds

    from proxyless_tf.data.sources import open_source
    from proxyless_tf.search.config import SearchConfig
    from proxyless_tf.search.run import run_search
    from proxyless_tf.space import Arch
    from proxyless_tf.training import recipe as training
    from proxyless_tf.training.config import TrainConfig

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # mock labels never reach the user's cache
    space, space_path = _space(tmp_path)
    synthetic_table(space, classes).save(tmp_path / "table.json")
    with tfds.testing.mock_data(num_examples=3 * classes if classes > 100 else 160):
        source = open_source(name)
        assert source.num_classes == classes and tuple(source.image_shape) == image_shape
        cfg = SearchConfig(dataset=name, space=space_path, latency_table=str(tmp_path / "table.json"),
                           target_frac=0.5, max_train=64, valid_size=classes, batch_size=8, epochs=1,
                           steps_per_epoch=2, bn_recalibration_steps=1, out_dir=str(tmp_path / "search"), verbose=0)
        run_search(cfg)
        arch = Arch.from_json(tmp_path / "search" / "arch.json")
        assert tuple(arch.space.input_shape) == (16, 16, 3)
        tcfg = TrainConfig(epochs=1, batch_size=8, steps_per_epoch=2, train_examples=64, augment=augment,
                           checkpoint_every=0, shuffle_buffer=64)
        res = training.train(arch, source, tcfg, str(tmp_path / "train"), progress="none")
        assert res["num_classes"] == classes and res["input_shape"] == [16, 16, 3]
        assert res["eval_style"] == style and res["num_test"] == source.num_test > 0
        _check_float32_export(res["model_path"], source, style)


def _write_folder(root, classes=3, per_class=12, size=20):
    """A tiny image folder of PNGs (RGB, one size), class = brightness."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    for c in range(classes):
        d = root / f"class_{c}"
        d.mkdir(parents=True)
        for i in range(per_class):
            img = (rng.integers(0, 60, (size, size, 3)) + 90 * c).astype(np.uint8)
            (d / f"{i:03d}.png").write_bytes(tf.io.encode_png(img).numpy())


@pytest.mark.slow
def test_image_folder_through_train_and_export_command_lines(tmp_path):
    """`python -m proxyless_tf.train --dataset=DIR` (the folder recipe by default) and
    `tools/export_tflite.py` with the dataset from result.json: raw-pixel TFLite, class names in
    the sidecar."""
    from proxyless_tf.space import Arch

    _write_folder(tmp_path / "photos")
    space, _ = _space(tmp_path)
    arch_path = tmp_path / "arch.json"
    Arch(space, ["mb_k3_e3", "mb_k5_e3"]).to_json(arch_path)
    out = tmp_path / "run"
    proc = run_cli(["-m", "proxyless_tf.train", f"--arch={arch_path}", f"--dataset={tmp_path / 'photos'}",
                    "--epochs=2", "--batch_size=8", f"--out_dir={out}", "--progress=none"], TF_CPP_MIN_LOG_LEVEL="2")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    first = proc.stdout.splitlines()[0]
    assert "(recipe train_folder.flags: the default for an image folder)" in first, first
    res = json.loads((out / "result.json").read_text())
    assert res["config"]["dropout"] == 0.2 and res["config"]["epochs"] == 2  # the recipe, then the command line
    assert res["num_classes"] == 3 and res["class_names"] == ["class_0", "class_1", "class_2"]
    assert proc.stdout.strip().splitlines()[-1].endswith(f"--dataset={tmp_path / 'photos'}")
    proc = run_cli(["tools/export_tflite.py", str(out / "model.keras"), "--modes=float32,int8", "--num_test=3",
                    "--num_representative=8"], TF_CPP_MIN_LOG_LEVEL="2")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    side = json.loads((out / "tflite" / "model_float32.json").read_text())
    assert side["input"]["pixels"] == "raw 0..255" and side["input"]["shape"] == [1, 16, 16, 3]
    assert side["labels"] == ["class_0", "class_1", "class_2"] and len(side["input"]["mean"]) == 3
    assert side["checks"]["max_abs_logit_diff"] <= 1e-4 and side["checks"]["n"] == 3
    int8 = json.loads((out / "tflite" / "model_int8.json").read_text())  # calibrated on raw training pixels
    assert int8["input"]["pixels"] == "raw 0..255" and int8["checks"]["n"] == 3 and int8["mode"] == "int8"
