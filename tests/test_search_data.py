"""The search follows the data: tfds mock CIFAR-10 and ImageNet, an image folder from the command
line, a space that leaves its input to the data, and the mismatches that are one error line."""

import dataclasses
import json

import numpy as np
import pytest

from conftest import run_cli
from search_helpers import MICRO, synthetic_table

from proxyless_tf.errors import ConfigError
from proxyless_tf.search.config import SearchConfig
from proxyless_tf.space import SearchSpace

@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """tfds label scans of mock data must not land in the user's ~/.cache/proxyless_tf."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg_cache"))


FEW_STEPS = dict(epochs=1, warmup_epochs=0, steps_per_epoch=2, batch_size=4, bn_recalibration_steps=1, verbose=0,
                 latency_loss="add#linear", target_frac=0.5, arch_every=1)


def open_space(tmp_path, shape):
    """MICRO with `input_shape` as given (nulls allowed) in a file."""
    path = tmp_path / "open.json"
    path.write_text(json.dumps(dict(MICRO, input_shape=shape)))
    return str(path)


def table_for(tmp_path, shape, num_classes):
    """A synthetic table of MICRO at the input the search will resolve to."""
    space = SearchSpace.from_dict(dict(MICRO, input_shape=list(shape)))
    path = tmp_path / f"table_{num_classes}.json"
    synthetic_table(space, num_classes).save(path)
    return str(path)


@pytest.mark.slow
def test_search_on_mock_cifar10_takes_channels_size_and_classes_from_the_data(tmp_path):
    import tensorflow_datasets as tfds

    from proxyless_tf.search.run import run_search

    cfg = SearchConfig(dataset="cifar10", space=open_space(tmp_path, [None, None, None]),
                       latency_table=table_for(tmp_path, (32, 32, 3), 10), valid_size=20,
                       out_dir=str(tmp_path / "run"), **FEW_STEPS)
    with tfds.testing.mock_data(num_examples=80):
        result = run_search(cfg)
    arch = json.loads((tmp_path / "run" / "arch.json").read_text())
    assert arch["space"]["input_shape"] == [32, 32, 3] and len(result["ops"]) == 2
    assert result["latency_num_classes"] == 10 and result["latency_input_shape"] == [32, 32, 3]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"]["dataset"] == "cifar10"


@pytest.mark.slow
def test_search_on_mock_imagenet_at_a_resolution_the_open_space_takes(tmp_path):
    import tensorflow_datasets as tfds

    from proxyless_tf.search.run import run_search

    space = open_space(tmp_path, [None, None, 3])
    cfg = SearchConfig(dataset="imagenet2012", space=space, latency_table=table_for(tmp_path, (16, 16, 3), 1000),
                       valid_size=1000, out_dir=str(tmp_path / "run"), **FEW_STEPS)
    with tfds.testing.mock_data(num_examples=200):
        with pytest.raises(ConfigError) as e:  # mock ImageNet's images vary in size: the space needs a resolution
            run_search(cfg)
        assert "vary in size" in str(e.value) and "--resolution" in str(e.value) and space in str(e.value)
        assert not (tmp_path / "run").exists()
        result = run_search(dataclasses.replace(cfg, resolution=16))
    arch = json.loads((tmp_path / "run" / "arch.json").read_text())
    assert arch["space"]["input_shape"] == [16, 16, 3] and result["latency_num_classes"] == 1000
    assert 0.0 <= result["valid_acc"] <= 1.0


def test_search_on_an_image_folder_from_the_command_line(tmp_path):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    data = tmp_path / "imgs"
    for c, name in enumerate(["bright", "dark"]):
        (data / name).mkdir(parents=True)
        for i in range(24):
            img = (rng.integers(0, 60, (14, 14, 1)) + 150 * (1 - c)).astype(np.uint8)
            tf.io.write_file(str(data / name / f"{i}.png"), tf.io.encode_png(img))
    space = open_space(tmp_path, [None, None, 1])
    table = table_for(tmp_path, (14, 14, 1), 2)
    out = tmp_path / "run"
    proc = run_cli(["-m", "proxyless_tf.search", f"--dataset={data}", f"--space={space}", f"--latency_table={table}",
                    "--target_frac=0.5", "--latency_loss=add#linear", "--valid_size=8", "--batch_size=4",
                    "--epochs=1", "--steps_per_epoch=3", "--bn_recalibration_steps=1", "--verbose=0",
                    f"--out_dir={out}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"image folder {data} (2 classes, in memory)" in proc.stdout
    assert json.loads((out / "arch.json").read_text())["space"]["input_shape"] == [14, 14, 1]
    assert json.loads((out / "result.json").read_text())["latency_num_classes"] == 2


def test_rgb_data_into_a_gray_space_is_one_error_before_anything_is_written(tmp_path):
    from proxyless_tf.search.run import run_search

    space = open_space(tmp_path, [12, 12, 1])
    x = np.zeros((20, 12, 12, 3), np.uint8)
    cfg = SearchConfig(space=space, latency_table=table_for(tmp_path, (12, 12, 1), 2), out_dir=str(tmp_path / "run"),
                       **FEW_STEPS)
    with pytest.raises(ConfigError) as e:
        run_search(cfg, data=(x, np.arange(20) % 2))
    assert str(e.value).startswith(f"{space}: input_shape: the space takes 1-channel images, but 20 images in "
                                   "arrays has 3-channel ones")
    assert not (tmp_path / "run").exists()
