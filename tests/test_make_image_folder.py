"""tools/make_image_folder.py: IDX files in, an image folder out whose PNGs hold exactly the IDX pixels."""

import gzip
import os

import numpy as np

from conftest import assert_one_line_error, run_cli
from resume_helpers import write_idx

NAMES = ["cat", "dog", "frog"]


def write_split_files(directory, n_train=7, n_test=4, shape=(5, 4), seed=0):
    """Four small IDX files (train + t10k); non-square images so a transposed PNG would not pass."""
    rng = np.random.default_rng(seed)
    out = {}
    for prefix, split, n in (("train", "train", n_train), ("t10k", "test", n_test)):
        x = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
        y = rng.integers(0, len(NAMES), n)
        write_idx(os.path.join(directory, f"{prefix}-images-idx3-ubyte.gz"), x)
        write_idx(os.path.join(directory, f"{prefix}-labels-idx1-ubyte.gz"), y)
        out[split] = (x, y)
    return out


def listing(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def test_pngs_equal_idx_pixels_in_class_folders_named_by_index(tmp_path):
    import tensorflow as tf

    idx = tmp_path / "idx"
    idx.mkdir()
    data = write_split_files(idx)
    out = tmp_path / "folder"
    proc = run_cli(["tools/make_image_folder.py", f"--idx_dir={idx}", f"--out={out}", f"--class_names={','.join(NAMES)}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = sorted(f"{split}/{NAMES[y[i]]}/{i:05d}.png" for split, (x, y) in data.items() for i in range(len(x)))
    assert listing(out) == expected
    assert not os.path.exists(f"{out}.tmp")
    for split, (x, y) in data.items():
        for i in range(len(x)):
            png = tf.io.read_file(str(out / split / NAMES[y[i]] / f"{i:05d}.png"))
            decoded = tf.io.decode_png(png).numpy()
            assert decoded.shape == (5, 4, 1)
            np.testing.assert_array_equal(decoded[..., 0], x[i])
    assert "train: 7/7 PNG files" in proc.stdout and "test: 4/4 PNG files" in proc.stdout
    assert "7 train, 4 test images (5x4x1), 3 classes" in proc.stdout

    # a second run into the same folder is refused and changes nothing
    before = {p: os.path.getmtime(out / p) for p in listing(out)}
    proc = run_cli(["tools/make_image_folder.py", f"--idx_dir={idx}", f"--out={out}", f"--class_names={','.join(NAMES)}"])
    assert_one_line_error(proc, str(out), "--out", "not empty")
    assert {p: os.path.getmtime(out / p) for p in listing(out)} == before


def test_bad_input_is_one_line_and_writes_nothing(tmp_path):
    idx = tmp_path / "idx"
    idx.mkdir()
    out = tmp_path / "folder"
    cmd = ["tools/make_image_folder.py", f"--idx_dir={idx}", f"--out={out}", f"--class_names={','.join(NAMES)}"]
    # label 3 among 3 classes, in the test split: found before the train split is written
    write_split_files(idx)
    write_idx(idx / "t10k-labels-idx1-ubyte.gz", [0, 1, 2, 3])
    proc = run_cli(cmd)
    assert_one_line_error(proc, "t10k-labels-idx1-ubyte.gz", "label 3 at index 3 is out of range")
    assert not os.path.exists(out) and not os.path.exists(f"{out}.tmp")

    # a truncated images file
    write_split_files(idx)
    path = idx / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-10]))
    proc = run_cli(cmd)
    assert_one_line_error(proc, str(path), "truncated")
    assert not os.path.exists(out) and not os.path.exists(f"{out}.tmp")

    # a class name that is not a folder name; a missing file
    write_split_files(idx)
    assert_one_line_error(run_cli(cmd[:-1] + ["--class_names=a,b/c,d"]), "--class_names", "'b/c'")
    os.remove(idx / "t10k-labels-idx1-ubyte.gz")
    assert_one_line_error(run_cli(cmd), "t10k-labels-idx1-ubyte.gz", "does not exist")
    assert not os.path.exists(out) and not os.path.exists(f"{out}.tmp")


def test_leftover_of_an_interrupted_run_is_replaced_but_a_foreign_tmp_is_refused(tmp_path):
    idx = tmp_path / "idx"
    idx.mkdir()
    write_split_files(idx, n_train=3, n_test=2)
    out = tmp_path / "folder"
    cmd = ["tools/make_image_folder.py", f"--idx_dir={idx}", f"--out={out}", f"--class_names={','.join(NAMES)}"]
    tmp = tmp_path / "folder.tmp"
    (tmp / "train" / "cat").mkdir(parents=True)
    (tmp / "train" / "cat" / "00099.png").write_bytes(b"half")
    assert_one_line_error(run_cli(cmd), str(tmp), "not made by this tool")
    (tmp / ".make_image_folder_incomplete").write_bytes(b"")
    proc = run_cli(cmd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(listing(out)) == 5 and "train/cat/00099.png" not in listing(out) and not tmp.exists()
