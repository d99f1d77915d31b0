"""Image files damaged inside their data (header and end intact, so the header probe passes them):
skipped and counted in a folder held in memory and in a streamed one, by the search's stream, the
retraining's and the train command, never a traceback. Labels out of range in a test split (tfds,
tf.data, numpy) are one error when the source is opened."""

import os

import numpy as np
import pytest

from conftest import run_cli
from proxyless_tf.data import damaged, datasets, folder
from proxyless_tf.data.sources import from_arrays, from_tf_data, open_source
from proxyless_tf.errors import ConfigError

SIZES = [(20, 24), (30, 18), (16, 16)]  # one size per class: mixed sizes, so the folder is streamed
DAMAGED_IN_TRAIN, DAMAGED_IN_VALID = 0, 2  # class b's files that search_data(seed=0, valid_size=6) trains on / carves


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg_cache"))  # beside the folders the tests write


@pytest.fixture(autouse=True)
def fresh_scans():
    folder._SCANS.clear()
    yield
    folder._SCANS.clear()


def damage(blob):
    """`blob` with 32 bytes of its middle zeroed: the header and the end marker stay intact."""
    bad = bytearray(blob)
    mid = len(bad) // 2
    bad[mid - 16:mid + 16] = bytes(32)
    return bytes(bad)


def write_folder(root, per_class=12, channels=3, split=None, damaged_index=None, fmt="png"):
    """root[/split]/<a|b|c>/<i>.<fmt>, class c of size SIZES[c]; file `damaged_index` (of class b) damaged.
    Returns the damaged file's path (or None)."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    bad = None
    for c, (h, w) in enumerate(SIZES):
        d = os.path.join(root, *([split] if split else []), "abc"[c])
        os.makedirs(d, exist_ok=True)
        for i in range(per_class):
            img = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
            blob = (tf.io.encode_png(img) if fmt == "png" else tf.io.encode_jpeg(img)).numpy()
            path = os.path.join(d, f"{i:03d}.{fmt}")
            if c == 1 and i == damaged_index:
                blob, bad = damage(blob), path
            with open(path, "wb") as f:
                f.write(blob)
    return bad


def test_the_damaged_file_passes_the_probe_and_the_decoder_refuses_it(tmp_path):
    import tensorflow as tf

    from proxyless_tf.data import image_files

    bad = write_folder(str(tmp_path / "imgs"), per_class=2, damaged_index=1)
    assert image_files.probe(bad) == image_files.ImageInfo("png", 30, 18, 3)  # what the scan sees: fine
    with pytest.raises(tf.errors.InvalidArgumentError):
        tf.io.decode_image(tf.io.read_file(bad))


def test_streamed_folder_skips_counts_and_names_a_damaged_file_once(tmp_path, capsys):
    bad = write_folder(str(tmp_path / "imgs"), damaged_index=5)
    src = open_source(str(tmp_path / "imgs"), test_fraction=0)
    assert src.train_arrays() is None and "streamed" in src.description
    assert src.num_train == 36  # the scan cannot tell: the decoder finds it
    assert src.damaged_files() == [bad]  # met by the normalisation sample when opened
    src.reader.tally = damaged.Tally()  # from here on: what the streams find
    assert src.damaged_files() == []
    for _ in range(2):  # two passes: still one file
        pairs = list(src.train().as_numpy_iterator())
        assert len(pairs) == 35
        assert src.damaged_files() == [bad]
    assert sorted(int(y) for _, y in pairs) == [0] * 12 + [1] * 11 + [2] * 12
    capsys.readouterr()
    assert damaged.report(src) == 1
    out = capsys.readouterr().out
    assert out.count("note:") == 1, out
    assert f"note: {tmp_path / 'imgs'}: 1 image file(s) could not be decoded while streaming and were skipped" in out, out
    assert out.strip().endswith(f"first one {bad}"), out


@pytest.mark.parametrize("index, in_valid, on_disk", [(DAMAGED_IN_TRAIN, False, False), (DAMAGED_IN_VALID, True, False),
                                                     (DAMAGED_IN_VALID, True, True)])
def test_search_stream_keeps_every_batch_and_counts_the_damaged_file(tmp_path, monkeypatch, index, in_valid, on_disk):
    bad = write_folder(str(tmp_path / "imgs"), damaged_index=index)
    src = open_source(str(tmp_path / "imgs"), test_fraction=0)
    src.reader.tally = damaged.Tally()
    if on_disk:  # a validation split too large to hold: carved into the cache directory (Dataset.save)
        monkeypatch.setattr(datasets, "IN_MEMORY_BYTES", 0)
    d = datasets.search_data(src, (16, 16, 3), batch_size=5, valid_size=6, seed=0,
                             label_cache_dir=str(tmp_path / "cache"))
    assert os.path.isdir(tmp_path / "cache") == on_disk
    # in the validation split: carved without it; in the training split: each epoch (all 30 images) meets it
    assert (d.num_train, d.num_valid, d.steps_per_epoch) == (30, 5 if in_valid else 6, 6)
    assert src.damaged_files() == ([bad] if in_valid else [])
    batches = list(d.stream(0, 0, 3, 6).as_numpy_iterator())
    assert len(batches) == 3 * 6  # images dropped: the reserve epoch fills the last batches
    assert all(b[0][0].shape == (5, 16, 16, 3) and b[1][0].shape == (5, 16, 16, 3) for b in batches)
    assert src.damaged_files() == [bad]  # met in 3 epochs, counted once


def test_retraining_streams_skip_the_damaged_files_of_both_splits(tmp_path):
    from proxyless_tf.space import Arch, SearchSpace
    from proxyless_tf.training import inputs as inputs_lib
    from proxyless_tf.training.config import TrainConfig
    from search_helpers import MICRO

    bad_train = write_folder(str(tmp_path / "imgs"), split="train", damaged_index=2)
    bad_test = write_folder(str(tmp_path / "imgs"), per_class=4, split="test", damaged_index=0)
    arch = Arch(SearchSpace.from_dict(dict(MICRO, input_shape=[16, 16, 3])), ["mb_k3_e3", "mb_k5_e3"])
    src = open_source(str(tmp_path / "imgs"))
    src.reader.tally = damaged.Tally()
    cfg = TrainConfig(epochs=2, batch_size=6, augment="inception", shuffle_buffer=64)
    inputs = inputs_lib.prepare(arch, src, cfg)
    assert (inputs.in_memory, inputs.num_train, inputs.steps, inputs.num_test) == (False, 36, 6, 12)
    batches = list(inputs.train_batches())  # an epoch is all 36 files: the damaged one each time
    assert len(batches) == 2 * 6 and all(x.shape == (6, 16, 16, 3) for x, _ in batches)
    resumed = list(inputs.train_batches(1, 2))
    assert len(resumed) == 6 - 2
    assert src.damaged_files() == [bad_train]
    test = list(inputs.test_batches())
    assert sum(len(y) for _, y in test) == 11  # 12 test files, one damaged
    assert src.damaged_files() == sorted([bad_train, bad_test])


def test_in_memory_folder_skips_a_damaged_file_in_its_note(tmp_path, capsys):
    import tensorflow as tf

    rng = np.random.default_rng(1)
    root = tmp_path / "imgs"
    for c in "ab":
        os.makedirs(root / c)
        for i in range(5):
            (root / c / f"{i}.png").write_bytes(tf.io.encode_png(rng.integers(0, 256, (8, 8, 1), np.uint8)).numpy())
    (root / "b" / "3.png").write_bytes(damage((root / "b" / "3.png").read_bytes()))
    src = open_source(str(root), test_fraction=0)
    assert "in memory" in src.description and src.num_train == 9 and src.train_arrays()[0].shape == (9, 8, 8, 1)
    assert np.bincount(src.train_labels()).tolist() == [5, 4]
    out = capsys.readouterr().out
    assert out.count("note:") == 1, out
    assert (f"note: {root}: 1 image file(s) could not be decoded when opened and were skipped (damaged inside "
            f"their data): first one {root / 'b' / '3.png'}") in out, out
    assert src.damaged_files() == []  # reported when opened, not again at the end of a run


def test_train_command_on_a_streamed_folder_with_a_damaged_file_notes_it_once(tmp_path):
    from proxyless_tf.space import Arch, SearchSpace
    from search_helpers import MICRO

    bad = write_folder(str(tmp_path / "photos"), per_class=6, damaged_index=4)
    arch_path = tmp_path / "arch.json"
    Arch(SearchSpace.from_dict(dict(MICRO, input_shape=[16, 16, 3])), ["mb_k3_e3", "mb_k5_e3"]).to_json(arch_path)
    proc = run_cli(["-m", "proxyless_tf.train", f"--arch={arch_path}", f"--dataset={tmp_path / 'photos'}",
                    "--epochs=2", "--batch_size=4", f"--out_dir={tmp_path / 'run'}", "--progress=none"],
                   TF_CPP_MIN_LOG_LEVEL="2")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    notes = [line for line in proc.stdout.splitlines() if line.startswith("note:") and "decoded" in line]
    assert len(notes) == 1 and "1 image file(s) could not be decoded while streaming" in notes[0], proc.stdout
    assert notes[0].endswith(f"first one {bad}"), notes[0]
    assert (tmp_path / "run" / "model.keras").is_file()


# ---- labels of a test split -------------------------------------------------------------------------

def _fake_cifar10(bad_split, bad_label):
    """A mock `as_dataset`: 6 encoded 32x32x3 images per split, labels 0..5, one set to `bad_label` in `bad_split`."""
    import tensorflow as tf

    def as_dataset(builder, split, decoders=None, read_config=None, **kwargs):
        labels = np.arange(6, dtype=np.int64)
        if str(split) == bad_split:
            labels[2] = bad_label
        png = tf.io.encode_png(np.zeros((32, 32, 3), np.uint8))
        return tf.data.Dataset.from_tensor_slices({"image": tf.stack([png] * 6), "label": labels})

    return as_dataset


@pytest.mark.parametrize("split, label", [("test", 10), ("test", -1), ("train", 12)])
def test_tfds_labels_out_of_range_are_one_error_when_opened(tmp_path, split, label):
    import tensorflow_datasets as tfds

    from proxyless_tf.training.config import TrainConfig
    from proxyless_tf.training.recipe import train
    from search_helpers import micro_space
    from proxyless_tf.space import Arch

    with tfds.testing.mock_data(as_dataset_fn=_fake_cifar10(split, label)):
        with pytest.raises(ConfigError) as e:
            open_source("cifar10")
        with pytest.raises(ConfigError) as e2:  # through the retraining: nothing written
            train(Arch(micro_space(), ["mb_k3_e3", "mb_k5_e3"]), "cifar10", TrainConfig(epochs=1, batch_size=2),
                  str(tmp_path / "run"))
    msg = str(e.value)
    assert msg == str(e2.value)
    assert msg.startswith(f"cifar10 ({split} split): labels: label {label} at index 2 is out of range [0, 10) "
                          "(1 such labels)"), msg
    assert "prepare the dataset again" in msg, msg
    assert not (tmp_path / "run").exists()
    assert not list((tmp_path / "xdg_cache").rglob(f"labels_cifar10_{split}*"))  # no bad scan cached


def test_tfds_test_labels_in_range_open():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(as_dataset_fn=_fake_cifar10("none", 0)):
        src = open_source("cifar10")
        assert (src.num_train, src.num_test) == (6, 6)
        assert src.test_labels().tolist() == list(range(6))


def test_tf_data_and_numpy_test_labels_out_of_range_are_one_error():
    import tensorflow as tf

    x = np.zeros((10, 6, 6, 3), np.uint8)
    y = np.arange(10) % 5
    train = tf.data.Dataset.from_tensor_slices((x, y))
    bad = y[:4].copy()
    bad[1] = 7
    with pytest.raises(ConfigError) as e:
        from_tf_data(train, tf.data.Dataset.from_tensor_slices((x[:4], bad)), name="mine")
    assert str(e.value).startswith("mine (test): labels: label 7 at index 1 is out of range [0, 5) (1 such labels)")
    assert "pass labels in [0, num_classes)" in str(e.value)
    bad[1] = -2
    with pytest.raises(ConfigError) as e:
        from_arrays(x, y, x[:4], bad)
    assert str(e.value).startswith("arrays (test): labels: label -2 at index 1 is out of range [0, 5)")
    good = from_tf_data(train, tf.data.Dataset.from_tensor_slices((x[:4], y[:4])))
    assert (good.num_classes, good.num_test) == (5, 4)
