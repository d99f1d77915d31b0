"""data.py: the class-balanced seeded split, local IDX files, tfds (mock) datasets, missing ImageNet."""

import gzip
import os

import numpy as np
import pytest

from proxyless_tf.data import datasets as data
from proxyless_tf.errors import ConfigError


def test_class_balanced_split_is_balanced_disjoint_and_seeded():
    labels = np.repeat(np.arange(10), 100)
    np.random.default_rng(1).shuffle(labels)
    tr, va = data.class_balanced_split(labels, 200, 10, seed=3)
    assert len(va) == 200 and len(tr) == 800
    assert np.bincount(labels[va], minlength=10).tolist() == [20] * 10
    assert not set(tr) & set(va) and len(set(tr) | set(va)) == 1000
    tr2, va2 = data.class_balanced_split(labels, 200, 10, seed=3)
    assert np.array_equal(va, va2)
    _, va3 = data.class_balanced_split(labels, 200, 10, seed=4)
    assert not np.array_equal(va, va3)


def write_idx(path, arr):
    arr = np.asarray(arr, np.uint8)
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.tobytes())


def test_fashion_mnist_from_local_idx_files(tmp_path):
    n = 200
    labels = np.arange(n) % 10
    images = np.zeros((n, 28, 28), np.uint8)
    images[:, 0, 0] = np.arange(n) % 256  # an id per image, to check the split below
    write_idx(os.path.join(tmp_path, "train-images-idx3-ubyte.gz"), images)
    write_idx(os.path.join(tmp_path, "train-labels-idx1-ubyte.gz"), labels)
    d = data.search_data("fashion_mnist", (28, 28, 1), batch_size=8, valid_size=50, data_dir=str(tmp_path))
    assert d.num_classes == 10 and d.num_train == 150 and d.num_valid == 50 and d.steps_per_epoch == 18
    assert str(tmp_path) in d.source
    (x, y), (xv, yv) = next(iter(d.search))
    assert x.shape == (8, 28, 28, 1) and xv.shape == (8, 28, 28, 1) and y.dtype.name == "int32"
    valid_labels = np.concatenate([b[1].numpy() for b in d.valid])
    assert np.bincount(valid_labels, minlength=10).tolist() == [5] * 10


def test_tfds_dataset_through_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=120):
        d = data.search_data("cifar10", (16, 16, 3), batch_size=4, valid_size=10, seed=0)
        (x, y), (xv, yv) = next(iter(d.search))
    assert d.num_classes == 10 and x.shape == (4, 16, 16, 3) and xv.shape == (4, 16, 16, 3)
    assert d.num_train + d.num_valid == 120 and d.num_valid <= 10


def test_missing_imagenet_says_how_to_provide_it(tmp_path):
    with pytest.raises(ConfigError) as e:
        data.search_data("imagenet2012", (224, 224, 3), 8, data_dir=str(tmp_path), manual_dir=str(tmp_path / "m"))
    msg = str(e.value)
    assert "ILSVRC2012_img_train.tar" in msg and str(tmp_path / "m") in msg and "\n" not in msg
