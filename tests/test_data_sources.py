"""proxyless_tf.data: image folders, tfds (mock), arrays and tf.data as ImageSources; the transforms;
the search's data on a streamed source."""

import os

import numpy as np
import pytest

from proxyless_tf.data import datasets, folder, normalization, preprocess
from proxyless_tf.data.sources import from_arrays, from_tf_data, open_source
from proxyless_tf.errors import ConfigError


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """tfds label scans of mock data must not land in the user's ~/.cache/proxyless_tf."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg_cache"))


@pytest.fixture(autouse=True)
def fresh_scans():
    folder._SCANS.clear()  # every test writes its own folders
    yield
    folder._SCANS.clear()


def write_pngs(root, x, y, class_names, split=None):
    """x[i] as root[/split]/<class of y[i]>/<i>.png (real PNGs, written by TensorFlow)."""
    import tensorflow as tf

    for i, (img, label) in enumerate(zip(x, y)):
        d = os.path.join(root, *([split] if split else []), class_names[label])
        os.makedirs(d, exist_ok=True)
        tf.io.write_file(os.path.join(d, f"{i:04d}.png"), tf.io.encode_png(img))


def class_major(y):
    """The order a folder lists files in: class by class, file names sorted (zero-padded index)."""
    return np.argsort(y, kind="stable")


def test_png_folder_gives_the_arrays_it_was_written_from(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    names = ["cat", "dog", "eel"]
    x, y = rng.integers(0, 256, (30, 12, 10, 3), dtype=np.uint8), np.arange(30) % 3
    xt, yt = rng.integers(0, 256, (9, 12, 10, 3), dtype=np.uint8), np.arange(9) % 3
    write_pngs(str(tmp_path), x, y, names, "train")
    write_pngs(str(tmp_path), xt, yt, names, "test")
    src = open_source(str(tmp_path))
    assert (src.kind, src.class_names, src.image_shape, src.num_classes) == ("folder", names, (12, 10, 3), 3)
    assert (src.num_train, src.num_test) == (30, 9) and "in memory" in src.description
    xa, ya = src.train_arrays()
    np.testing.assert_array_equal(xa, x[class_major(y)])
    np.testing.assert_array_equal(ya, y[class_major(y)])
    xb, yb = src.test_arrays()
    np.testing.assert_array_equal(xb, xt[class_major(yt)])
    np.testing.assert_array_equal(src.train_labels(), y[class_major(y)])
    # the statistics of the pixels it holds
    np.testing.assert_allclose(src.mean, (x / 255.0).reshape(-1, 3).mean(0), atol=1e-4)
    np.testing.assert_allclose(src.std, (x / 255.0).reshape(-1, 3).std(0), atol=1e-4)
    # the streamed path (a folder too big to hold) decodes the same pixels
    monkeypatch.setattr(folder, "IN_MEMORY_BYTES", 0)
    folder._SCANS.clear()
    streamed = open_source(str(tmp_path))
    assert streamed.train_arrays() is None and "streamed" in streamed.description
    pairs = list(streamed.train().as_numpy_iterator())
    np.testing.assert_array_equal(np.stack([p[0] for p in pairs]), x[class_major(y)])
    assert [int(p[1]) for p in pairs] == y[class_major(y)].tolist()


def test_gray_folder_with_a_held_out_test_split_is_stable(tmp_path):
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 256, (40, 8, 8, 1), dtype=np.uint8), np.arange(40) % 2
    write_pngs(str(tmp_path), x, y, ["a", "b"])
    src = open_source(str(tmp_path), test_fraction=0.2, seed=3)
    assert src.image_shape == (8, 8, 1) and (src.num_train, src.num_test) == (32, 8)
    assert np.bincount(src.test_arrays()[1]).tolist() == [4, 4]
    again = open_source(str(tmp_path), test_fraction=0.2, seed=3)
    np.testing.assert_array_equal(again.test_arrays()[0], src.test_arrays()[0])
    other = open_source(str(tmp_path), test_fraction=0.2, seed=4)
    assert not np.array_equal(other.test_arrays()[0], src.test_arrays()[0])
    # the train and test images together are exactly the images written
    everything = np.concatenate([src.train_arrays()[0], src.test_arrays()[0]]).reshape(40, -1)
    assert sorted(map(bytes, everything)) == sorted(map(bytes, x.reshape(40, -1)))


def test_broken_files_are_skipped_counted_and_named(tmp_path, capsys):
    import tensorflow as tf

    rng = np.random.default_rng(2)
    x, y = rng.integers(0, 256, (8, 8, 8, 3), dtype=np.uint8), np.arange(8) % 2
    write_pngs(str(tmp_path), x, y, ["a", "b"])
    good = tf.io.encode_png(x[0]).numpy()
    (tmp_path / "a" / "truncated.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "a" / "empty.png").write_bytes(b"")
    (tmp_path / "b" / "notes.jpg").write_text("not an image")
    (tmp_path / "b" / "readme.txt").write_text("ignored: not an image name")
    src = open_source(str(tmp_path), test_fraction=0)
    assert src.num_train == 8 and src.num_test == 0
    out = capsys.readouterr().out
    assert out.count("note:") == 1 and "skipped 3 unreadable or truncated" in out
    # damaged inside its compressed data (header and end intact): the decoder refuses it, counted too
    bad = bytearray(good)
    bad[40:60] = bytes(20)
    (tmp_path / "b" / "damaged.png").write_bytes(bytes(bad))
    folder._SCANS.clear()
    src = open_source(str(tmp_path), test_fraction=0)
    out = capsys.readouterr().out
    assert src.num_train == 8 and out.count("note:") == 2  # the scan's (3 files), the decoder's (1)
    assert f"1 image file(s) could not be decoded when opened and were skipped (damaged inside their data): " \
           f"first one {tmp_path / 'b' / 'damaged.png'}" in out, out


@pytest.mark.parametrize("layout, needles", [
    ({}, ["is empty", "DIR/<class>/"]),
    ({"only": 3}, ["one class folder (only)", "two or more"]),
    ({"a": 2, "b": 0}, ["b: <folder>: class folder without usable images"]),
])
def test_folders_that_are_no_dataset_are_one_error(tmp_path, layout, needles):
    import tensorflow as tf

    img = tf.io.encode_png(np.zeros((8, 8, 1), np.uint8)).numpy()
    for name, count in layout.items():
        (tmp_path / name).mkdir()
        for i in range(count):
            (tmp_path / name / f"{i}.png").write_bytes(img)
    with pytest.raises(ConfigError) as e:
        open_source(str(tmp_path))
    assert all(n in str(e.value) for n in needles), str(e.value)
    with pytest.raises(ConfigError, match="does not exist"):
        open_source(str(tmp_path / "missing"))


def test_mixed_sizes_are_streamed_and_resized_by_the_search_data(tmp_path):
    rng = np.random.default_rng(3)
    for c, (h, w) in enumerate([(20, 24), (30, 18), (16, 16)]):
        write_pngs(str(tmp_path), rng.integers(0, 256, (12, h, w, 3), dtype=np.uint8), [c] * 12, ["a", "b", "c"])
    src = open_source(str(tmp_path), test_fraction=0)
    assert src.image_shape == (None, None, 3) and src.train_arrays() is None and src.num_train == 36
    assert preprocess.search_styles(src.image_shape) == ("inception", "imagenet")
    d = datasets.search_data(src, (16, 16, 3), batch_size=4, valid_size=6, seed=0, label_cache_dir=str(tmp_path / "cache"))
    assert (d.num_train, d.num_valid, d.steps_per_epoch) == (30, 6, 7)
    batches = list(d.stream(0, 0, 1, 7).as_numpy_iterator())
    assert len(batches) == 7
    (x, y), (xv, yv) = batches[0]
    assert x.shape == (4, 16, 16, 3) and xv.shape == (4, 16, 16, 3) and x.dtype == np.float32
    assert set(np.concatenate([b[0][1] for b in batches]).tolist()) <= {0, 1, 2}
    # a resumed stream (epoch 0, step 3) is the same batches: order and augmentation by position
    resumed = list(d.stream(0, 3, 1, 7).as_numpy_iterator())
    for (a, av), (b, bv) in zip(batches[3:], resumed):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(av[0], bv[0])
    # the validation split was carved once (held in memory), class-balanced
    yv_all = np.concatenate([b[1] for b in d.valid.as_numpy_iterator()])
    assert np.bincount(yv_all).tolist() == [2, 2, 2]
    assert not os.path.exists(tmp_path / "cache")


def test_tf_data_and_arrays_sources_check_their_labels_and_pixels():
    import tensorflow as tf

    x = np.zeros((10, 6, 6, 3), np.uint8)
    y = np.array([0, 1, 2, 3, 4] * 2)
    with pytest.raises(ConfigError) as e:
        from_tf_data(tf.data.Dataset.from_tensor_slices((x, y)), num_classes=3, name="my_data")
    assert "my_data: labels: label 3 at index 3 is out of range [0, 3) (4 such labels)" in str(e.value)
    src = open_source(tf.data.Dataset.from_tensor_slices((x, y)))
    assert (src.kind, src.num_classes, src.image_shape, src.num_train) == ("tf.data", 5, (6, 6, 3), 10)
    assert src.train_arrays()[0].shape == (10, 6, 6, 3)  # small and of one size: held in memory
    with pytest.raises(ConfigError, match="batched dataset"):
        open_source(tf.data.Dataset.from_tensor_slices((x, y)).batch(2))
    with pytest.raises(ConfigError, match="image float32"):
        open_source(tf.data.Dataset.from_tensor_slices((x.astype(np.float32), y)))
    with pytest.raises(ConfigError, match="uint8 pixels 0..255"):
        from_arrays(x.astype(np.float32), y)
    with pytest.raises(ConfigError, match=r"label -1 at index 0"):
        from_arrays(x, -np.ones(10, np.int64), num_classes=5)
    a = from_arrays(x[..., 0], y, x[:4, ..., 0], y[:4], class_names=list("abcde"))
    assert a.image_shape == (6, 6, 1) and a.num_test == 4 and a.class_names == list("abcde")
    with pytest.raises(ConfigError, match="channels: the images have 1 channel"):
        open_source((x[..., 0], y), channels=3)


def test_transforms_shapes_ranges_and_stateless_seeds():
    import tensorflow as tf

    img = tf.constant(np.random.default_rng(4).integers(0, 256, (37, 53, 3)), tf.uint8)
    seed = tf.constant([7, 11], tf.int64)
    for augment in preprocess.AUGMENTS:
        a = preprocess.train_transform(img, (24, 24), augment, seed)
        b = preprocess.train_transform(img, (24, 24), augment, seed)
        assert a.shape == (24, 24, 3) and a.dtype == tf.float32
        assert 0.0 <= float(tf.reduce_min(a)) and float(tf.reduce_max(a)) <= 255.0
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    crops = {preprocess.train_transform(img, (24, 24), "inception", tf.constant([s, 0], tf.int64)).numpy().tobytes()
             for s in range(4)}
    assert len(crops) == 4
    e = preprocess.eval_transform(img, (32, 32), "imagenet")
    assert e.shape == (32, 32, 3)
    assert preprocess.fit_image(tf.zeros((5, 7, 1), tf.uint8), (9, 9)).shape == (9, 9, 1)  # channels kept
    same = tf.constant(np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
    np.testing.assert_array_equal(preprocess.fit_image(same, (4, 4)).numpy(), same.numpy().astype(np.float32))
    n = preprocess.normalize(tf.fill((1, 1, 3), 255.0), (0.5, 0.25, 0.0), (0.5, 0.25, 1.0)).numpy().ravel()
    np.testing.assert_allclose(n, [1.0, 3.0, 1.0])


def test_mock_cifar10_source_shapes_classes_and_undecoded_labels():
    import tensorflow as tf
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=40):
        src = open_source("cifar10")
        assert src.items("train").element_spec[0].dtype == tf.string  # the label scan reads encoded images
        labels = src.train_labels()
        x, y = src.train_arrays()
        test = src.test()
    assert (src.kind, src.image_shape, src.num_classes, src.num_train, src.num_test) == ("tfds", (32, 32, 3), 10, 40, 40)
    assert len(src.class_names) == 10  # (the mock has no label file: names "0".."9")
    assert (src.mean, src.std) == normalization.known("cifar10", 3)
    assert x.shape == (40, 32, 32, 3) and x.dtype == np.uint8 and np.array_equal(y, labels)
    assert labels.min() >= 0 and labels.max() < 10
    assert test is not None


def test_mock_imagenet_source_has_open_sizes_and_imagenet_views():
    import tensorflow_datasets as tfds

    from proxyless_tf.data import tfds_data

    with tfds.testing.mock_data(num_examples=12):
        src = open_source("imagenet2012")
        first = [x for x, _ in src.train().take(4).as_numpy_iterator()]
        views = [preprocess.eval_transform(x, (224, 224), "imagenet").shape for x in first]
        crops = [preprocess.train_transform(x, (224, 224), "inception", [1, i]).shape for i, x in enumerate(first)]
    assert (src.image_shape, src.num_classes, src.num_train) == ((None, None, 3), 1000, 12)
    assert src.train_arrays() is None and src.reader.test_split == "validation" == tfds_data.TEST_SPLIT["imagenet2012"]
    assert len({x.shape for x in first}) > 1 and all(x.shape[2] == 3 for x in first)  # mock images vary in size
    assert views == crops == [(224, 224, 3)] * 4


def test_measured_stats_for_an_unknown_dataset():
    rng = np.random.default_rng(5)
    x = rng.integers(0, 128, (50, 4, 4, 2), dtype=np.uint8)
    src = from_arrays(x, np.arange(50) % 2, name="mine")
    np.testing.assert_allclose(src.mean, (x / 255.0).reshape(-1, 2).mean(0), atol=1e-4)
    np.testing.assert_allclose(src.std, (x / 255.0).reshape(-1, 2).std(0), atol=1e-4)


def test_header_probe_reads_size_channels_and_finds_truncation(tmp_path):
    import tensorflow as tf

    from proxyless_tf.data import image_files

    rng = np.random.default_rng(6)
    for c in (1, 3):
        img = rng.integers(0, 256, (17, 23, c), dtype=np.uint8)
        for fmt, blob in (("png", tf.io.encode_png(img).numpy()), ("jpeg", tf.io.encode_jpeg(img).numpy())):
            path = tmp_path / f"x{c}.{fmt}"
            path.write_bytes(blob)
            assert image_files.probe(str(path)) == image_files.ImageInfo(fmt, 17, 23, c)
            path.write_bytes(blob[: len(blob) * 2 // 3])
            with pytest.raises(image_files.BadImage, match="truncated"):
                image_files.probe(str(path))
    (tmp_path / "t.png").write_text("hello")
    with pytest.raises(image_files.BadImage, match="not a PNG, JPEG, GIF or BMP"):
        image_files.probe(str(tmp_path / "t.png"))
