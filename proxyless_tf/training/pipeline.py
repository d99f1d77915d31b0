"""The retraining's batches: raw pixels (0..255, float32) and one-hot labels, from a position on.

Two paths, one contract: the batches of (epoch, step) onwards are a function of that
position only, so a resumed run (`runtime/resume.py`) sees what an uninterrupted one saw.

- In memory (`memory_dataset`): the split is a uint8 array (Fashion-MNIST's IDX files, a
  small image folder, numpy arrays). Only indices go through the element-wise part; images
  are gathered, cast and cropped/flipped a whole batch at a time, which keeps the input
  pipeline far below the training step on 2 cores.
- Streamed (`stream_dataset`): the split is a `tf.data` stream of items (file paths, encoded
  tfds records) of images of any size (tfds, a large image folder). Epoch e shuffles the items
  with a bounded buffer seeded by (seed, e); each is decoded and goes through
  `data.preprocess.train_transform` (resize, crop or random-resized crop, flip) in a parallel
  map, seeded by its place in the stream; batches are prefetched. A file the decoder refuses
  (damaged inside its data) is dropped and counted (`data.damaged`), never a crash.

The model normalises (its `Normalize` layer), so no path here knows the mean and std.
"""

import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE


def seed_int(seed, *parts):
    """A Python int seed that is a pure function of (seed, parts): one per epoch / stream."""
    s = int(seed)
    for p in parts:
        s = (s * 1000003 + int(p)) % (2 ** 62)
    return s


# ---- in memory ----------------------------------------------------------------------------

def _augment_batch_fn(cfg, shape):
    """Crop and flip a whole batch at once, seeded by (seed, the batch's place in the stream).

    Batch-wise (one pad, two gathers, one select) rather than per image: on 2 cores the
    per-image version cost 21 ms of CPU per batch of 128 beside a ~300 ms training step.
    The padding is pixel value 0 (black: Fashion-MNIST's background).
    """
    from proxyless_tf.data.datasets import mix_seed

    h, w, _ = shape
    pad = int(cfg.pad)
    crop_key, flip_key = mix_seed(cfg.seed, 1), mix_seed(cfg.seed, 2)

    def aug(first, x):
        n = tf.shape(x)[0]
        if pad:
            x = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
            off = tf.random.stateless_uniform((n, 2), tf.stack([crop_key, first]), 0, 2 * pad + 1, tf.int32)
            x = tf.gather(x, off[:, :1] + tf.range(h)[None], axis=1, batch_dims=1)
            x = tf.gather(x, off[:, 1:] + tf.range(w)[None], axis=2, batch_dims=1)
        flip = tf.random.stateless_uniform((n,), tf.stack([flip_key, first])) < 0.5
        return tf.where(flip[:, None, None, None], tf.reverse(x, axis=[2]), x)

    return aug


def memory_dataset(x, y, num_classes, cfg, steps=None, epoch=0, step=0):
    """Shuffled, augmented ("crop_flip" or "none"), one-hot batches of arrays from (epoch, step) on.

    Epoch e is a permutation seeded by (seed, e) and each augmentation is seeded by its
    place in the stream. `x` stays in its dtype (uint8: a quarter of float32's memory)
    until a batch is gathered.
    """
    from proxyless_tf.data.datasets import epoch_elements

    steps = steps or len(x) // cfg.batch_size
    per_epoch = steps * cfg.batch_size
    images, labels = tf.constant(x), tf.constant(y)
    index = tf.data.Dataset.range(len(x))
    ds = (tf.data.Dataset.range(epoch, cfg.epochs)
          .flat_map(lambda e: epoch_elements(index, len(x), len(x), cfg.seed, e, per_epoch))
          .enumerate(start=epoch * per_epoch).skip(step * cfg.batch_size)
          .batch(cfg.batch_size, drop_remainder=True))
    aug = _augment_batch_fn(cfg, x.shape[1:]) if cfg.augment == "crop_flip" else None

    def make_batch(pos, idx):
        xb = tf.cast(tf.gather(images, idx), tf.float32)
        if aug is not None:
            xb = aug(pos[0], xb)
        return xb, tf.one_hot(tf.gather(labels, idx), num_classes)

    return ds.map(make_batch, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)


def memory_eval_dataset(x, y, num_classes, batch_size=256):
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
    return ds.map(lambda a, b: (tf.cast(a, tf.float32), tf.one_hot(b, num_classes))).prefetch(AUTOTUNE)


# ---- streamed -----------------------------------------------------------------------------

def _concatenate(parts):
    """parts[0] + parts[1] + ... as a balanced tree (depth log2(n), not n nested datasets)."""
    while len(parts) > 1:
        parts = [parts[i].concatenate(parts[i + 1]) if i + 1 < len(parts) else parts[i]
                 for i in range(0, len(parts), 2)]
    return parts[0]


def stream_dataset(items, decode, num_examples, num_classes, size_hw, cfg, steps, epoch=0, step=0):
    """Batches of a stream from (epoch, step) to the last epoch.

    `items`: tf.data of (item, label) where `decode(item)` is (uint8 image, ok) for a file path,
    an encoded tfds record or the image itself (`ImageSource.decode_checked`), so the shuffle
    buffer holds cheap items and decoding happens in the parallel map. Images whose ok is False
    (damaged files) are dropped; one more epoch of items follows the last, taken only as far
    as the batches they replace, so the stream still holds every batch. Epoch e: the items
    through a shuffle buffer of `cfg.shuffle_buffer` seeded by (seed, e), `steps` batches of it
    (passes over the items, each reshuffled, when an epoch needs more than one); image p of the
    run is transformed with the seed (seed, p).
    `Dataset.shuffle` takes its seed as a Python int, so the epochs are built here and
    concatenated, not made inside `flat_map`.
    """
    from proxyless_tf.data import damaged, preprocess

    per_epoch = steps * cfg.batch_size
    buffer = max(1, min(cfg.shuffle_buffer, num_examples))
    passes = -(-per_epoch // num_examples)  # > 1 when --steps_per_epoch asks for more than the data

    def one_epoch(e):
        # a fresh iterator per epoch: its passes reshuffle in an order fixed by the seed
        ds = items.shuffle(buffer, seed=seed_int(cfg.seed, 7, e), reshuffle_each_iteration=passes > 1)
        return (ds.repeat(passes) if passes > 1 else ds).take(per_epoch).enumerate(start=e * per_epoch)

    epochs = [one_epoch(e) for e in range(epoch, cfg.epochs + 1)]  # + 1: the reserve for dropped images
    key = tf.constant(seed_int(cfg.seed, 3), tf.int64)
    size_hw = tuple(int(v) for v in size_hw)
    pad = cfg.pad if cfg.augment == "crop_flip" else None

    def transform(pos, example):
        item, label = example
        image, ok = decode(item)
        x = preprocess.train_transform(image, size_hw, cfg.augment, tf.stack([key, tf.cast(pos, tf.int64)]), pad=pad)
        return tf.ensure_shape(x, size_hw + (None,)), tf.one_hot(label, num_classes), ok

    batches = (cfg.epochs - epoch) * steps - step
    return (damaged.drop_flagged(_concatenate(epochs).skip(step * cfg.batch_size)
                                 .map(transform, num_parallel_calls=AUTOTUNE))
            .batch(cfg.batch_size, drop_remainder=True).take(batches).prefetch(AUTOTUNE))


def stream_eval_dataset(items, decode, num_classes, size_hw, style, batch_size=256):
    """Evaluation batches of a stream: `preprocess.eval_transform` (resize, or ImageNet's centre crop);
    `decode` as `stream_dataset`'s (images it flags are left out)."""
    from proxyless_tf.data import damaged, preprocess

    size_hw = tuple(int(v) for v in size_hw)

    def transform(item, label):
        image, ok = decode(item)
        return preprocess.eval_transform(image, size_hw, style), tf.one_hot(label, num_classes), ok

    return (damaged.drop_flagged(items.map(transform, num_parallel_calls=AUTOTUNE))
            .batch(batch_size).prefetch(AUTOTUNE))
