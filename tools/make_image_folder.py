"""Write a real image folder (PNG files, one folder per class) from IDX files such as Fashion-MNIST's.

    python tools/make_image_folder.py --out=runs/fashion_mnist_png
    python -m proxyless_tf.search --flagfile=quickstart.flags --dataset=runs/fashion_mnist_png

The result is the layout `--dataset=DIR` reads: `OUT/train/<class name>/NNNNN.png` and
`OUT/test/<class name>/NNNNN.png`, where NNNNN is the image's index in its IDX file, so the
original order can be recovered from the names. It exists to run the image-folder path on
real data whose IDX twin gives a reference result.

Everything is read and checked before the first file is written (the four IDX files, the
labels against the class names, the free disk space), the folder is built as OUT.tmp and
renamed to OUT at the end, so an interrupted run never leaves a folder that looks complete.
An existing non-empty OUT is refused, never merged into.
"""

import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402

from proxyless_tf import cli  # noqa: E402
from proxyless_tf.data.idx import FASHION_MNIST_LABELS  # noqa: E402
from proxyless_tf.errors import ConfigError  # noqa: E402

# split folder -> (images file, labels file), the names MNIST-style IDX data sets use
SPLITS = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
MARKER = ".make_image_folder_incomplete"   # inside OUT.tmp only: says the folder is ours to delete
BLOCK = 4096                               # a file costs at least one file-system block

FLAGS = flags.FLAGS
flags.DEFINE_string("idx_dir", "/usr/share/datasets/fashion-mnist",
                    f"Directory with {', '.join(f for pair in SPLITS.values() for f in pair)}.")
flags.DEFINE_string("out", None, "The image folder to create (must not exist, or be empty).")
flags.DEFINE_list("class_names", [n.replace("/", "_") for n in FASHION_MNIST_LABELS],
                  "Folder name of label 0, 1, ... (default: Fashion-MNIST's, '/' written as '_').")


def check_class_names(names):
    """Folder names: at least two, unique, and each a single path component."""
    if len(names) < 2:
        raise ConfigError("<flags>", "--class_names", f"{len(names)} name(s); a classifier needs at least 2",
                          "name every class, comma-separated")
    for n in names:
        if not n.strip() or n in (".", "..") or "/" in n or "\0" in n or n != n.strip():
            raise ConfigError("<flags>", "--class_names", f"{n!r} is not a usable folder name",
                              "use non-empty names without '/' and without leading or trailing spaces")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ConfigError("<flags>", "--class_names", f"{dup} appear more than once", "give each class its own name")


def read_split(idx_dir, split, num_classes):
    """(images uint8 N x H x W x C, labels int64) of one split, checked."""
    from proxyless_tf.data.idx import read_idx
    from proxyless_tf.data.labels import check_labels

    images_file, labels_file = (os.path.join(idx_dir, f) for f in SPLITS[split])
    x = read_idx(images_file)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4) or min(x.shape) == 0:
        raise ConfigError(images_file, "<file>", f"images of shape {x.shape}",
                          "expected N x H x W (grayscale) or N x H x W x C with C in 1, 3, 4")
    y = read_idx(labels_file)
    if y.ndim != 1:
        raise ConfigError(labels_file, "<file>", f"labels of shape {y.shape}", "expected one label per image")
    check_labels(y, num_classes, labels_file, len(x))
    return x, y.astype("int64")


def prepare_out(out):
    """The temporary folder to build in, after checking OUT can be created; a leftover of an
    interrupted run of this tool (it carries MARKER) is removed, anything else is refused."""
    out = os.path.abspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(out, "--out", "is a file", "pass a new folder name")
    if os.path.isdir(out) and os.listdir(out):
        raise ConfigError(out, "--out", "exists and is not empty", "pass a new folder name, or delete this one")
    parent = os.path.dirname(out)
    if not os.path.isdir(parent):
        raise ConfigError(out, "--out", f"its parent {parent} is not a directory", "create the parent first")
    if not os.access(parent, os.W_OK):
        raise ConfigError(out, "--out", f"{parent} is not writable", "pass a folder in a writable directory")
    tmp = out + ".tmp"
    if os.path.lexists(tmp):
        if not os.path.isfile(os.path.join(tmp, MARKER)):
            raise ConfigError(tmp, "--out", "exists and was not made by this tool", "move it away or delete it")
        shutil.rmtree(tmp)  # an interrupted run of ours
    return out, tmp


def check_space(parent, splits):
    need = sum(len(x) * BLOCK + x.nbytes for x, _ in splits.values())
    free = shutil.disk_usage(parent).free
    if need > free:
        raise ConfigError(parent, "--out", f"needs about {need >> 20} MB, {free >> 20} MB free",
                          "free some space or pass --out on another disk")


def write_split(tmp, split, x, y, class_names):
    """PNG files of one split; encoded by TensorFlow in parallel (tf.data), written here in index order."""
    import tensorflow as tf

    for name in class_names:
        os.makedirs(os.path.join(tmp, split, name), exist_ok=True)
    width = max(5, len(str(len(x) - 1)))
    encoded = (tf.data.Dataset.from_tensor_slices(x).map(tf.io.encode_png, num_parallel_calls=tf.data.AUTOTUNE)
               .prefetch(tf.data.AUTOTUNE).as_numpy_iterator())
    every = max(1, len(x) // 10)
    for i, png in enumerate(encoded):
        with open(os.path.join(tmp, split, class_names[y[i]], f"{i:0{width}d}.png"), "wb") as f:
            f.write(png)
        if (i + 1) % every == 0 or i + 1 == len(x):
            print(f"{split}: {i + 1}/{len(x)} PNG files", flush=True)


def main(argv):
    from proxyless_tf import messages

    if len(argv) > 1:
        raise ConfigError("<command line>", "arguments", f"unexpected {argv[1:]}", "pass --idx_dir and --out only")
    if not FLAGS.out:
        raise ConfigError("<flags>", "--out", "is required", "pass --out=FOLDER (a new folder)")
    names = list(FLAGS.class_names)
    check_class_names(names)
    idx_dir = os.path.expanduser(FLAGS.idx_dir)
    if not os.path.isdir(idx_dir):
        raise ConfigError(idx_dir, "--idx_dir", "is not a directory", "pass the directory of the IDX .gz files")
    out, tmp = prepare_out(os.path.expanduser(FLAGS.out))
    splits = {s: read_split(idx_dir, s, len(names)) for s in SPLITS}  # all of it checked before any write
    check_space(os.path.dirname(out), splits)

    os.makedirs(tmp)
    open(os.path.join(tmp, MARKER), "w").close()
    for split, (x, y) in splits.items():
        write_split(tmp, split, x, y, names)
    os.remove(os.path.join(tmp, MARKER))
    try:
        os.replace(tmp, out)  # also replaces an empty OUT
    except OSError as e:
        raise ConfigError(out, "--out", f"cannot rename {tmp} to it ({e.strerror})",
                          f"rename {tmp} yourself, or rerun with a new --out") from None
    counts = ", ".join(f"{len(x)} {s}" for s, (x, _) in splits.items())
    h, w, c = splits["train"][0].shape[1:]
    print(f"wrote {messages.shown_path(out)}: {counts} images ({h}x{w}x{c}), {len(names)} classes")
    print("next: " + messages.command("python", "-m", "proxyless_tf.search", "--flagfile=quickstart.flags",
                                      f"--dataset={messages.shown_path(out)}"))


if __name__ == "__main__":
    cli.run(main)
