"""Datasets by name for the search: a train split, a validation split carved from it, tf.data.

The architecture step needs data the weights were not trained on, and the test split must
stay untouched for the final report, so the validation split is carved out of the training
split: class-balanced (the same number of images per class, as the official code's
`random_sample_valid_set`) and seeded, so a rerun sees the same split.

Sources:
- `fashion_mnist`: the IDX files of Debian's `dataset-fashion-mnist` (or `data_dir`) when
  present, read with numpy — no network needed; else tfds.
- any other name (`cifar10`, `imagenet2012`, ...): `tfds.load`; ImageNet needs its tar files
  in the manual download directory, and a missing dataset is one clear line.
"""

import dataclasses
import os

import numpy as np

from proxyless_tf.errors import ConfigError

FASHION_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
# (mean, std) per channel of [0, 1] pixels; ImageNet's are the usual ones.
NORMALIZATION = {
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "imagenet2012": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
DEFAULT_VALID_SIZE = {"imagenet2012": 50000, "cifar10": 5000, "fashion_mnist": 5000}
IMAGENET_HOWTO = ("download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from image-net.org "
                  "into {manual_dir} (or pass --manual_dir=DIR); tfds prepares them on first use")


@dataclasses.dataclass
class SearchData:
    """What a search needs: batches ((x, y), (x_val, y_val)) and the sizes behind them."""

    search: object          # tf.data: the first epoch of ((x, y), (x_val, y_val))
    valid: object           # tf.data: the whole validation split once, (x, y) batches
    num_classes: int
    input_shape: tuple
    num_train: int
    num_valid: int
    steps_per_epoch: int
    source: str
    stream: object = None   # stream(epoch, step, epochs, steps): the batches from that position to the end


# ---- local IDX files -----------------------------------------------------------------------------
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


def check_labels(labels, num_classes, source, num_images=None):
    """Labels must be integers in [0, num_classes), one per image: a label of 12 among 10 classes
    would otherwise train on an all-zero one-hot target, or fail deep inside the loss."""
    labels = np.asarray(labels)
    if num_images is not None and len(labels) != num_images:
        raise ConfigError(source, "labels", f"{len(labels)} labels for {num_images} images",
                          "use the labels file that belongs to the images file")
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if len(bad):
        raise ConfigError(source, "labels", f"label {int(labels[bad[0]])} at index {int(bad[0])} is out of range "
                          f"[0, {num_classes}) ({len(bad)} such labels)", "re-download the dataset")
    return labels


def load_fashion_local(directory):
    x = read_idx(os.path.join(directory, FASHION_FILES[0]))
    if x.ndim != 3:
        raise ConfigError(os.path.join(directory, FASHION_FILES[0]), "<file>", f"images of shape {x.shape}",
                          "expected N x 28 x 28 images; re-download the dataset")
    y = read_idx(os.path.join(directory, FASHION_FILES[1])).astype(np.int64)
    check_labels(y, 10, os.path.join(directory, FASHION_FILES[1]), len(x))
    return x[..., None], y


# ---- the split -------------------------------------------------------------------------------------
def class_balanced_split(labels, valid_size, num_classes, seed=0):
    """(train_indices, valid_indices): valid_size // num_classes images of every class, seeded."""
    labels = np.asarray(labels)
    if valid_size >= len(labels):  # else every class would keep one image and the error would blame the batch
        raise ConfigError("<flags>", "valid_size", f"{valid_size} validation images leave none of the "
                          f"{len(labels)} training images to train on", f"pass a --valid_size below {len(labels)}, "
                          f"e.g. {max(num_classes, len(labels) // 10)}")
    per_class = valid_size // num_classes
    if per_class < 1:
        raise ConfigError("<flags>", "valid_size", f"{valid_size} is fewer than one image per class "
                          f"({num_classes} classes)", f"use at least {num_classes}")
    rng = np.random.default_rng(seed)
    valid = []
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        # a class with too few images gives what it can and keeps one for training
        valid.append(rng.choice(idx, min(per_class, max(len(idx) - 1, 0)), replace=False))
    valid = np.sort(np.concatenate(valid)).astype(np.int64)
    if not len(valid):
        raise ConfigError("<flags>", "valid_size", "no class has enough training images for a validation split",
                          "check the dataset's labels")
    mask = np.zeros(len(labels), bool)
    mask[valid] = True
    return np.flatnonzero(~mask), valid


# ---- tf.data -----------------------------------------------------------------------------------------
def _preprocess_fn(name, input_shape, train, seed=0):
    """(index, (image, label)) -> normalised (x, y); a training flip is seeded by (seed, index)."""
    import tensorflow as tf

    mean, std = NORMALIZATION.get(name, ((0.5,) * input_shape[2], (0.25,) * input_shape[2]))
    mean = tf.constant(mean, tf.float32)
    std = tf.constant(std, tf.float32)
    h, w, c = input_shape

    def fn(index, example):
        image, label = example
        x = tf.cast(image, tf.float32) / 255.0
        if x.shape[-1] != c:
            x = tf.image.rgb_to_grayscale(x) if c == 1 else tf.image.grayscale_to_rgb(x)
        if x.shape[0] != h or x.shape[1] != w:
            x = tf.image.resize(x, (h, w), antialias=True)
        if train and name != "fashion_mnist" and name != "mnist":
            # stateless: the same image at the same place of the stream flips the same way after a resume
            x = tf.image.stateless_random_flip_left_right(x, tf.stack([tf.constant(seed, tf.int64), index]))
        return (x - mean) / std, tf.cast(label, tf.int32)

    return fn


def _fixed_shape_fn(input_shape):
    """(image, label) -> (uint8 image of exactly input_shape, label).

    Applied before the seeded permutations, which permute blocks of whole tensors (images of
    different sizes cannot be stacked); resizing first also keeps those blocks smaller than
    the decoded originals. A no-op for images that already have the shape (Fashion-MNIST).
    """
    import tensorflow as tf

    h, w, c = input_shape

    def fn(image, label):
        x = image
        if x.shape[-1] != c:
            x = tf.image.rgb_to_grayscale(x) if c == 1 else tf.image.grayscale_to_rgb(x)
        if x.shape[0] != h or x.shape[1] != w:
            x = tf.image.resize(x, (h, w), antialias=True)
            x = tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)
        return tf.ensure_shape(x, (h, w, c)), label

    return fn


def mix_seed(seed, *parts):
    """An int64 seed that is a pure function of (seed, parts...): one shuffle order per epoch/pass."""
    import tensorflow as tf

    s = tf.constant(int(seed), tf.int64)
    for p in parts:
        s = s * 1000003 + tf.cast(p, tf.int64)
    return s


def seeded_pass(base, block, seed, *parts):
    """One pass over `base` in an order fixed by (seed, parts) — tensors allowed, no state.

    Blocks of `block` consecutive elements, each permuted by `stateless_shuffle`: with
    `block` >= the dataset's size (arrays in memory) a full random permutation, for a
    streamed dataset the same memory as a shuffle buffer of that size. (`Dataset.shuffle`
    cannot take its seed from a tensor inside `flat_map`, and its reshuffles depend on how
    many passes the process has made, which a resumed process has not.)
    """
    import tensorflow as tf

    key = mix_seed(seed, *parts)

    def permute(k, chunk):
        n = tf.shape(tf.nest.flatten(chunk)[0])[0]
        perm = tf.random.experimental.stateless_shuffle(tf.range(n), seed=tf.stack([key, k]))
        return tf.data.Dataset.from_tensor_slices(tf.nest.map_structure(lambda t: tf.gather(t, perm), chunk))

    return base.batch(block).enumerate().flat_map(permute)


def epoch_elements(base, n, block, seed, epoch, count):
    """`count` elements of `base` (n of them) for `epoch`: seeded passes, as many as needed.

    The order depends on (seed, epoch) only, never on how many epochs this process has already
    iterated, so a run resumed at epoch e sees the same order as an uninterrupted one.
    """
    import tensorflow as tf

    passes = -(-int(count) // int(n))
    return tf.data.Dataset.range(passes).flat_map(lambda j: seeded_pass(base, block, seed, epoch, j)).take(count)


def _pipelines(train_ds, valid_ds, name, input_shape, batch_size, valid_batch_size, seed, buffer, valid_buffer,
               n_train, n_valid):
    """(stream(epoch, step, epochs, steps), evaluation): batches from a training position on.

    `stream` yields ((x, y), (x_val, y_val)) from step `step` of epoch `epoch` to the end of
    epoch `epochs - 1`, `steps` batches an epoch. Both halves are functions of the position:
    training epoch e is shuffled with a seed made of (seed, e); the validation batches are one
    endless sequence of seeded passes, the t-th training step pairs with its t-th batch.
    """
    import tensorflow as tf

    auto = tf.data.AUTOTUNE

    def stream(epoch, step, epochs, steps):
        per_epoch = steps * batch_size
        first = epoch * per_epoch + step * batch_size
        tr = (tf.data.Dataset.range(epoch, epochs)
              .flat_map(lambda e: epoch_elements(train_ds, n_train, buffer, seed, e, per_epoch))
              .enumerate(start=epoch * per_epoch).skip(step * batch_size)
              .map(_preprocess_fn(name, input_shape, True, seed), num_parallel_calls=auto)
              .batch(batch_size, drop_remainder=True))
        v_first = (epoch * steps + step) * valid_batch_size
        va = (tf.data.Dataset.counter(start=v_first // n_valid)
              .flat_map(lambda r: seeded_pass(valid_ds, valid_buffer, seed + 1, r))
              .skip(v_first % n_valid).enumerate()
              .map(_preprocess_fn(name, input_shape, False), num_parallel_calls=auto)
              .batch(valid_batch_size, drop_remainder=True))
        return tf.data.Dataset.zip((tr, va)).prefetch(auto)

    evaluation = valid_ds.enumerate().map(_preprocess_fn(name, input_shape, False), num_parallel_calls=auto).batch(
        valid_batch_size)
    return stream, evaluation.prefetch(auto)


def _tfds_train(name, data_dir, manual_dir):
    """The train split of a tfds dataset as a dataset of (image, label), in file order."""
    import tensorflow_datasets as tfds

    kwargs = {}
    if manual_dir:
        kwargs["download_and_prepare_kwargs"] = {
            "download_config": tfds.download.DownloadConfig(manual_dir=manual_dir)}
    try:
        ds, info = tfds.load(name, split="train", data_dir=data_dir, shuffle_files=False, with_info=True,
                             as_supervised=True, **kwargs)
    except Exception as e:  # tfds raises many types; the user needs one line
        if name == "imagenet2012":
            where = manual_dir or os.path.join(data_dir or "~/tensorflow_datasets", "downloads", "manual")
            raise ConfigError(name, "dataset", "ImageNet is not prepared and its tar files were not found",
                              IMAGENET_HOWTO.format(manual_dir=where)) from None
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ConfigError(name, "dataset", f"cannot load it with tfds ({first})",
                          "check --dataset/--data_dir, or prepare it with network access once") from None
    try:
        n = int(info.splits["train"].num_examples)
    except (KeyError, TypeError):  # e.g. tfds.testing.mock_data: no split metadata, no label cache
        n = None
    return ds, info.features["label"].num_classes, n


def _labels_of(ds, cache_path):
    import tensorflow as tf

    if cache_path and os.path.exists(cache_path):
        return np.load(cache_path)  # the file name carries the split size, so a stale cache is not reused
    labels = np.concatenate([b.numpy() for b in ds.map(lambda x, y: y).batch(65536)])
    if cache_path:  # to a temporary name, then renamed: a killed scan never leaves half a cache
        os.makedirs(os.path.dirname(cache_path), exist_ok=True)
        tmp = f"{cache_path}.tmp.{os.getpid()}.npy"
        np.save(tmp, labels)
        os.replace(tmp, cache_path)
    del tf
    return labels


def search_data(name, input_shape, batch_size, valid_size=None, valid_batch_size=None, seed=0,
                data_dir=None, manual_dir=None, max_train=None, label_cache_dir=None):
    """The search's data by dataset name.

    Args:
        name: `fashion_mnist` (local IDX files first), or any tfds name (`cifar10`, `imagenet2012`).
        input_shape: (H, W, C) the images are resized/converted to (the search space's input).
        batch_size: training batch; validation batches use `valid_batch_size` (default: same).
        valid_size: images carved from train for the architecture step (class-balanced).
        seed: seeds the split and the shuffles.
        data_dir: directory with the IDX files, or the tfds data_dir.
        manual_dir: tfds manual download directory (ImageNet tar files).
        max_train: keep only this many training images (quick runs); None: all.
        label_cache_dir: where tfds label arrays are cached (one scan per dataset).
    """
    import tensorflow as tf

    input_shape = tuple(int(v) for v in input_shape)
    valid_batch_size = valid_batch_size or batch_size
    valid_size = valid_size or DEFAULT_VALID_SIZE.get(name, 5000)
    check_data_dir(data_dir, name)
    local = find_fashion_dir(data_dir) if name == "fashion_mnist" else None
    if local:
        x, y = load_fashion_local(local)
        num_classes = 10
        tr_idx, va_idx = class_balanced_split(y, valid_size, num_classes, seed)
        if max_train:
            tr_idx = np.sort(np.random.default_rng(seed).choice(tr_idx, min(max_train, len(tr_idx)), replace=False))
        train_ds = tf.data.Dataset.from_tensor_slices((x[tr_idx], y[tr_idx]))
        valid_ds = tf.data.Dataset.from_tensor_slices((x[va_idx], y[va_idx]))
        n_train, source, buffer = len(tr_idx), f"IDX files in {local}", len(tr_idx)
        valid_buffer = len(va_idx)  # in memory: whole-split permutations
    else:
        ds, num_classes, n_all = _tfds_train(name, data_dir, manual_dir)
        cache = None
        if label_cache_dir and n_all:
            cache = os.path.join(label_cache_dir, f"labels_{name}_train_{n_all}.npy")
        labels = _labels_of(ds, cache)
        tr_idx, va_idx = class_balanced_split(labels, valid_size, num_classes, seed)
        if max_train:
            tr_idx = np.sort(np.random.default_rng(seed).choice(tr_idx, min(max_train, len(tr_idx)), replace=False))
        is_train = np.zeros(len(labels), bool)
        is_train[tr_idx] = True
        is_valid = np.zeros(len(labels), bool)
        is_valid[va_idx] = True
        indexed = ds.enumerate()

        def pick(mask):
            m = tf.constant(mask)
            return indexed.filter(lambda i, ex: tf.gather(m, i)).map(lambda i, ex: ex)

        train_ds, valid_ds = pick(is_train), pick(is_valid)
        n_train, source, buffer = len(tr_idx), f"tfds {name}", 10000
        valid_buffer = min(len(va_idx), 20000)
    if n_train < batch_size:
        raise ConfigError("<flags>", "batch_size", f"{batch_size} is larger than the {n_train} training images",
                          "use a smaller batch size")
    shape_fn = _fixed_shape_fn(input_shape)
    train_ds = train_ds.map(shape_fn, num_parallel_calls=tf.data.AUTOTUNE)
    valid_ds = valid_ds.map(shape_fn, num_parallel_calls=tf.data.AUTOTUNE)
    stream, evaluation = _pipelines(train_ds, valid_ds, name, input_shape, batch_size, valid_batch_size, seed,
                                    min(buffer, n_train), valid_buffer, n_train, len(va_idx))
    steps = n_train // batch_size
    return SearchData(stream(0, 0, 1, steps), evaluation, num_classes, input_shape, n_train, len(va_idx),
                      steps, source, stream)
