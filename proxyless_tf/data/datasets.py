"""The search's data from any ImageSource: a train split, a validation split carved from it once,
and seeded streams that a resumed run replays exactly.

The architecture step needs data the weights were not trained on, and the test split must
stay untouched for the final report, so the validation split is carved out of the training
split: class-balanced (the same number of images per class, as the official code's
`random_sample_valid_set`) and seeded, so a rerun sees the same split. It is carved once: a
source held in memory is indexed, a streamed one (a large folder, ImageNet) is read once on the
encoded items, the chosen images decoded and resized to the search's input and kept (in memory
when small, else saved under the cache directory and reused by later runs), so no pass of the
search filters the whole training split again.

The training stream decodes, augments (`preprocess.search_styles`: the ImageNet views for
images of varying size, a flip for colour images of one size, nothing for grayscale ones) and
normalises in a parallel map, prefetched. Its order and its augmentation are functions of the
position in the run (seed, epoch, step), never of how many batches this process has produced.
"""

import dataclasses
import hashlib
import os

import numpy as np

from proxyless_tf.data import damaged, preprocess
from proxyless_tf.data.image_source import IN_MEMORY_BYTES, default_cache_dir
from proxyless_tf.errors import ConfigError

DEFAULT_VALID_SIZE = {"imagenet2012": 50000, "cifar10": 5000, "fashion_mnist": 5000}
STREAM_BLOCK = 10000        # items permuted together in a streamed pass (a shuffle buffer's memory)
VALID_BLOCK = 20000


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
    source: str             # the dataset, for messages
    stream: object = None   # stream(epoch, step, epochs, steps): the batches from that position to the end
    dataset: object = None  # the ImageSource


# ---- the split -------------------------------------------------------------------------------------
def class_balanced_split(labels, valid_size, num_classes, seed=0):
    """(train_indices, valid_indices): valid_size // num_classes images of every class, seeded."""
    labels = np.asarray(labels)
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



# ---- seeded passes -----------------------------------------------------------------------------
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


# ---- the validation split, carved once -------------------------------------------------------------
def _to_input(images, input_shape, style):
    """uint8 images at the search's input size (the eval view), as uint8 again."""
    import tensorflow as tf

    x = preprocess.eval_transform(images, input_shape[:2], style)
    return tf.cast(tf.round(x), tf.uint8)


def _fit_arrays(x, input_shape):
    """An in-memory split resized to the input once (a no-op when it has that size already)."""
    import tensorflow as tf

    if tuple(x.shape[1:3]) == tuple(input_shape[:2]):
        return x
    ds = tf.data.Dataset.from_tensor_slices(x).map(lambda im: _to_input(im, input_shape, "small"),
                                                    num_parallel_calls=tf.data.AUTOTUNE).batch(4096)
    return np.concatenate([b.numpy() for b in ds])


def _carve_valid(source, n_all, va_idx, input_shape, style, key, cache_dir):
    """The validation images of a streamed source at the input size: read once from the encoded
    items, held in memory when small, else saved under `cache_dir` and reused by later runs."""
    import tensorflow as tf

    mask = np.zeros(n_all, bool)
    mask[va_idx] = True
    m = tf.constant(mask)

    def carve(i, example):
        image, ok = source.decode_checked(example[0])
        return _to_input(image, input_shape, style), example[1], ok

    # an image file damaged inside: left out of the split (and counted), not a crash
    ds = damaged.drop_flagged(source.items("train").enumerate().filter(lambda i, ex: tf.gather(m, i))
                              .map(carve, num_parallel_calls=tf.data.AUTOTUNE))
    n = len(va_idx)
    if n * int(np.prod(input_shape)) <= IN_MEMORY_BYTES:
        xs, ys = [], []
        for x, y in ds.batch(1024).prefetch(2):
            xs.append(x.numpy())
            ys.append(y.numpy())
        if not xs:
            raise ConfigError(source.name, "valid_size", "no validation image could be decoded",
                              "check the dataset's image files")
        x, y = np.concatenate(xs), np.concatenate(ys)
        return tf.data.Dataset.from_tensor_slices((x, y)), len(y)
    path = os.path.join(cache_dir, f"valid_{key}")
    if not os.path.isdir(path):
        print(f"search: carving the {n} validation images of {source.description} once, into {path}", flush=True)
        tmp = f"{path}.tmp.{os.getpid()}"
        ds.save(tmp)
        try:
            os.replace(tmp, path)  # complete or absent: a killed carving leaves only a .tmp directory
        except OSError:  # another run carved the same split meanwhile: keep its copy
            if not os.path.isdir(path):
                raise
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    loaded = tf.data.Dataset.load(path)
    count = int(loaded.cardinality())
    return loaded, count if count > 0 else n


def _valid_key(source, va_idx, input_shape, style):
    blob = repr((source.kind, source.name, source.num_train, source.description, tuple(input_shape),
                 style)).encode() + va_idx.tobytes()
    safe = "".join(ch if ch.isalnum() else "_" for ch in os.path.basename(source.name.rstrip("/")))[:40]
    return f"{safe}_{hashlib.sha256(blob).hexdigest()[:16]}"


# ---- the streams -----------------------------------------------------------------------------------
def _pipelines(train_ds, valid_ds, train_map, valid_map, batch_size, valid_batch_size, seed, buffer, valid_buffer,
               n_train, n_valid, skip_errors):
    """(stream(epoch, step, epochs, steps), evaluation): batches from a training position on.

    `stream` yields ((x, y), (x_val, y_val)) from step `step` of epoch `epoch` to the end of
    epoch `epochs - 1`, `steps` batches an epoch. Both halves are functions of the position:
    training epoch e is shuffled with a seed made of (seed, e); the validation batches are one
    endless sequence of seeded passes, the t-th training step pairs with its t-th batch.
    `skip_errors`: `train_map` returns (x, y, ok) and the images whose ok is False (files damaged
    inside, `data.damaged`) are dropped; one more epoch of items follows the last, so the stream
    still holds every batch (later batches then start a few images later than without them).
    """
    import tensorflow as tf

    auto = tf.data.AUTOTUNE

    def stream(epoch, step, epochs, steps):
        per_epoch = steps * batch_size
        tr = (tf.data.Dataset.range(epoch, epochs + int(skip_errors))
              .flat_map(lambda e: epoch_elements(train_ds, n_train, buffer, seed, e, per_epoch))
              .enumerate(start=epoch * per_epoch).skip(step * batch_size)
              .map(train_map, num_parallel_calls=auto))
        if skip_errors:  # a streamed file damaged inside its compressed data: left out and counted, not a crash
            tr = damaged.drop_flagged(tr)
        else:
            tr = tr.map(lambda x, y, ok: (x, y))
        tr = tr.batch(batch_size, drop_remainder=True).take((epochs - epoch) * steps - step)
        v_first = (epoch * steps + step) * valid_batch_size
        va = (tf.data.Dataset.counter(start=v_first // n_valid)
              .flat_map(lambda r: seeded_pass(valid_ds, valid_buffer, seed + 1, r))
              .skip(v_first % n_valid)
              .map(valid_map, num_parallel_calls=auto)
              .batch(valid_batch_size, drop_remainder=True))
        return tf.data.Dataset.zip((tr, va)).prefetch(auto)

    evaluation = valid_ds.map(valid_map, num_parallel_calls=auto).batch(valid_batch_size)
    return stream, evaluation.prefetch(auto)


def search_data(dataset, input_shape, batch_size, valid_size=None, valid_batch_size=None, seed=0,
                data_dir=None, manual_dir=None, max_train=None, label_cache_dir=None):
    """The search's data from `dataset` (anything `sources.open_source` accepts: a tfds name, an
    image folder, arrays, a tf.data.Dataset, an ImageSource).

    Args:
        input_shape: (H, W, C) of the network input; C must be the data's (never converted
            here: a mismatch is one ConfigError), H and W are resized to.
        batch_size: training batch; validation batches use `valid_batch_size` (default: same).
        valid_size: images carved from train for the architecture step (class-balanced).
        seed: seeds the split and the shuffles.
        data_dir: directory with the IDX files, or the tfds data_dir.
        manual_dir: tfds manual download directory (ImageNet tar files).
        max_train: keep only this many training images (quick runs); None: all.
        label_cache_dir: where tfds label scans and large carved validation splits are kept
            (default ~/.cache/proxyless_tf).
    """
    import tensorflow as tf

    from proxyless_tf.data.sources import open_source

    cache_dir = label_cache_dir or default_cache_dir()
    source = open_source(dataset, data_dir, manual_dir, cache_dir=cache_dir)
    input_shape = tuple(int(v) for v in input_shape)
    if source.channels != input_shape[2]:
        raise ConfigError(source.name, "channels", f"the images have {source.channels} channel(s), the network "
                          f"input {input_shape} has {input_shape[2]}",
                          f"use a space with {source.channels} input channel(s)")
    valid_batch_size = valid_batch_size or batch_size
    num_classes = source.num_classes
    augment, style = preprocess.search_styles(source.image_shape)
    arrays = source.train_arrays()
    labels = arrays[1] if arrays is not None else source.train_labels()
    # the standard datasets' usual split; another dataset gives a tenth of its images (at most 5000)
    valid_size = valid_size or DEFAULT_VALID_SIZE.get(source.name) or min(5000, max(num_classes, len(labels) // 10))
    tr_idx, va_idx = class_balanced_split(labels, valid_size, num_classes, seed)
    if max_train:
        tr_idx = np.sort(np.random.default_rng(seed).choice(tr_idx, min(max_train, len(tr_idx)), replace=False))
    n_train, n_valid = len(tr_idx), len(va_idx)
    if n_train < batch_size:
        raise ConfigError("<flags>", "batch_size", f"{batch_size} is larger than the {n_train} training images",
                          "use a smaller batch size")
    hw = input_shape[:2]
    mean, std = source.mean, source.std
    if arrays is not None:
        x = _fit_arrays(arrays[0], input_shape)
        y = arrays[1]
        train_ds = tf.data.Dataset.from_tensor_slices((x[tr_idx], y[tr_idx]))
        valid_ds = tf.data.Dataset.from_tensor_slices((x[va_idx], y[va_idx]))
        buffer, valid_buffer = n_train, n_valid  # in memory: whole-split permutations

        image_of = damaged.always_ok
    else:
        is_train = np.zeros(len(labels), bool)
        is_train[tr_idx] = True
        m = tf.constant(is_train)
        train_ds = source.items("train").enumerate().filter(lambda i, ex: tf.gather(m, i)).map(lambda i, ex: ex)
        valid_ds, n_valid = _carve_valid(source, len(labels), va_idx, input_shape, style,
                                         _valid_key(source, va_idx, input_shape, style), cache_dir)
        # the validation images are decoded: a block of them is bounded in bytes too (~1,700 at 224x224)
        valid_block = max(1, min(VALID_BLOCK, IN_MEMORY_BYTES // int(np.prod(input_shape))))
        buffer, valid_buffer = min(STREAM_BLOCK, n_train), min(valid_block, n_valid)
        image_of = source.decode_checked

    def train_map(index, example):
        item, label = example
        image, ok = image_of(item)
        # stateless: the same image at the same place of the stream is augmented the same way after a resume
        x = preprocess.train_transform(image, hw, augment, tf.stack([tf.constant(seed, tf.int64), index]))
        return preprocess.normalize(x, mean, std), tf.cast(label, tf.int32), ok

    def valid_map(image, label):
        return preprocess.normalize(image, mean, std), tf.cast(label, tf.int32)

    stream, evaluation = _pipelines(train_ds, valid_ds, train_map, valid_map, batch_size, valid_batch_size, seed,
                                    buffer, valid_buffer, n_train, n_valid, skip_errors=arrays is None)
    steps = n_train // batch_size
    return SearchData(stream(0, 0, 1, steps), evaluation, num_classes, input_shape, n_train, n_valid, steps,
                      source.description, stream, source)
