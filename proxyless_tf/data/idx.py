"""Fashion-MNIST's IDX files, read with numpy: the dataset the quickstart needs without a network.

Debian's `dataset-fashion-mnist` installs them in /usr/share/datasets/fashion-mnist; `--data_dir`
names another directory. The reader trusts nothing in the file (see `read_idx`).
"""

import os

import numpy as np

from proxyless_tf.data.labels import check_labels
from proxyless_tf.errors import ConfigError

FASHION_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
FASHION_TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
FASHION_MNIST_LABELS = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                        "Ankle boot")


MAX_IDX_BYTES = 1 << 30         # the largest IDX data set we read (EMNIST) is ~700 MB unpacked
MAX_IDX_DIMS = 4                # images are (n, h, w) or (n, h, w, c); labels (n,)


def read_idx(path):
    """An IDX file (optionally gzip) as a numpy array, read within the size its header declares.

    The header is read first and its shape checked (at most MAX_IDX_DIMS dimensions, at most
    MAX_IDX_BYTES in all); then exactly that many bytes are decompressed, and one more byte is
    an error: a gzip that expands past its header (a bomb, or two files glued together) is
    refused after reading what it declared, never unpacked to gigabytes.
    """
    import gzip

    from proxyless_tf import readers

    path = os.fspath(path)
    fix = "re-download the dataset"
    with readers.open_regular(path, "IDX file", max_bytes=MAX_IDX_BYTES, fix=fix) as raw_f:
        f = gzip.GzipFile(fileobj=raw_f, mode="rb") if path.endswith(".gz") else raw_f

        def read(n):
            return readers.read_bounded(f, n, path, "an IDX file")

        head = read(4)
        if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] != 8:
            raise ConfigError(path, "<file>", "is not an unsigned-byte IDX file", fix)
        ndim = head[3]
        if not 1 <= ndim <= MAX_IDX_DIMS:
            raise ConfigError(path, "<header>", f"{ndim} dimensions (an image or label file has 1 to "
                              f"{MAX_IDX_DIMS})", fix)
        dims_raw = read(4 * ndim)
        if len(dims_raw) < 4 * ndim:
            raise ConfigError(path, "<file>", "truncated IDX header", fix)
        dims = [int.from_bytes(dims_raw[4 * i:4 * i + 4], "big") for i in range(ndim)]
        size = 1
        for d in dims:
            size *= d  # Python ints: no overflow, unlike np.prod
        if size > MAX_IDX_BYTES:
            raise ConfigError(path, "<header>", f"shape {dims} declares {size} bytes, more than the "
                              f"{MAX_IDX_BYTES} allowed", fix)
        data = read(size)
        if len(data) != size:
            raise ConfigError(path, "<file>", f"truncated: {len(data)} bytes for shape {dims}", fix)
        if read(1):
            raise ConfigError(path, "<file>", f"more data than its header declares (shape {dims})", fix)
    return np.frombuffer(data, np.uint8).reshape(dims)


def find_fashion_dir(data_dir=None):
    """The directory with the Fashion-MNIST IDX files: `data_dir` when given (never silently
    another one: a user who names a directory means that one), else the system's."""
    for d in [data_dir] if data_dir else FASHION_DIRS:
        if d and all(os.path.exists(os.path.join(d, f)) for f in FASHION_FILES):
            return d
    return None


def check_data_dir(data_dir, name="fashion_mnist"):
    """A given --data_dir must be a directory; for Fashion-MNIST it must hold the IDX files or a tfds folder."""
    if not data_dir:
        return
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise ConfigError(data_dir, "--data_dir", "is a file, not a directory", "pass the directory of the dataset")
    if name == "fashion_mnist" and not os.path.isdir(data_dir):  # (tfds creates a missing data_dir for others)
        raise ConfigError(data_dir, "--data_dir", "does not exist", "pass the directory of the .gz files")
    if name == "fashion_mnist" and not find_fashion_dir(data_dir) and not os.path.isdir(
            os.path.join(data_dir, name)):
        raise ConfigError(data_dir, "--data_dir", f"has no Fashion-MNIST IDX files ({', '.join(FASHION_FILES)}) "
                          "and no tfds fashion_mnist/ folder",
                          f"point --data_dir at the .gz files, or leave it out to use {FASHION_DIRS[0]}")


def load_fashion_local(directory):
    x = read_idx(os.path.join(directory, FASHION_FILES[0]))
    if x.ndim != 3:
        raise ConfigError(os.path.join(directory, FASHION_FILES[0]), "<file>", f"images of shape {x.shape}",
                          "expected N x 28 x 28 images; re-download the dataset")
    y = read_idx(os.path.join(directory, FASHION_FILES[1])).astype(np.int64)
    check_labels(y, 10, os.path.join(directory, FASHION_FILES[1]), len(x))
    return x[..., None], y


def load_fashion_test(directory):
    """(x, y) of the t10k files in `directory`, or None when they are not there (the search needs
    only the training files; retraining and export need these too)."""
    paths = [os.path.join(directory, f) for f in FASHION_TEST_FILES]
    if not all(os.path.exists(p) for p in paths):
        return None
    x = read_idx(paths[0])
    if x.ndim != 3:
        raise ConfigError(paths[0], "<file>", f"images of shape {x.shape}",
                          "expected N x 28 x 28 images; re-download the dataset")
    y = read_idx(paths[1]).astype(np.int64)
    check_labels(y, 10, paths[1], len(x))
    return x[..., None], y
