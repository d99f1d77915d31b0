"""A user's `tf.data.Dataset` of (image, label) pairs as an ImageSource.

A user with data in a format of their own writes the few lines that make such a dataset and
hands it to `run_search`, `training.train` or export like any tfds name. The dataset is read once
when the source is made: the labels (checked against `num_classes`, or giving it), and the
images too when the split is small and of one size, which is then held in memory like arrays.
"""

import numpy as np

from proxyless_tf.data import normalization
from proxyless_tf.data.image_source import (IN_MEMORY_BYTES, ImageSource, Reader, class_names_for, measured_stats,
                                            num_classes_of)
from proxyless_tf.data.labels import check_labels
from proxyless_tf.errors import ConfigError


class TfDataReader(Reader):
    """A user's tf.data.Dataset of (image, label): read once for the labels (and the images,
    when the split is small and of one size: then it is held in memory like arrays)."""

    def __init__(self, splits, scanned):
        self.splits = splits    # {"train": ds, "test": ds or None}
        self.scanned = scanned  # {split: (labels, images or None)}

    def items(self, split):
        images = self.scanned[split][1]
        if images is not None:
            import tensorflow as tf

            return tf.data.Dataset.from_tensor_slices((images, self.scanned[split][0]))
        return self.splits[split].map(_int64_label)

    def labels(self, split):
        return self.scanned[split][0]

    def arrays(self, split):
        labels, images = self.scanned.get(split) or (None, None)
        return None if images is None else (images, labels)


def _int64_label(x, y):
    import tensorflow as tf

    return x, tf.cast(y, tf.int64)


def _check_spec(ds, source):
    """The element spec of a user's dataset: (image of rank 3, or 2, of integer pixels; scalar label)."""
    import tensorflow as tf

    spec = ds.element_spec
    if not isinstance(spec, tuple) or len(spec) != 2 or not all(isinstance(s, tf.TensorSpec) for s in spec):
        raise ConfigError(source, "element_spec", f"elements are {spec}, not (image, label)",
                          "map the dataset to (image, label) pairs, e.g. ds.map(lambda d: (d['image'], d['label']))")
    image, label = spec
    if int(ds.cardinality()) == int(tf.data.INFINITE_CARDINALITY):
        raise ConfigError(source, "dataset", "is infinite (repeated)", "pass one pass over the data: drop .repeat()")
    if image.shape.rank == 4 or label.shape.rank == 1:
        raise ConfigError(source, "element_spec", f"a batched dataset (image {image.shape}, label {label.shape})",
                          "pass ds.unbatch(): sources are datasets of single images")
    if image.shape.rank not in (2, 3) or label.shape.rank != 0:
        raise ConfigError(source, "element_spec", f"image of shape {image.shape}, label of shape {label.shape}",
                          "pass (H x W x C image, scalar label) pairs")
    if not image.dtype.is_integer or not label.dtype.is_integer:
        raise ConfigError(source, "element_spec", f"image {image.dtype.name}, label {label.dtype.name}",
                          "pass uint8 pixels 0..255 and integer labels (the normalisation is applied for you)")
    if image.shape.rank == 3 and image.shape[2] is None:
        raise ConfigError(source, "element_spec", f"image of shape {image.shape}: the channel count is unknown",
                          "set it, e.g. ds.map(lambda x, y: (tf.ensure_shape(x, [None, None, 3]), y))")
    if image.dtype != tf.uint8 or image.shape.rank == 2:
        def fix_image(x, y):
            x = tf.cast(tf.clip_by_value(tf.cast(x, tf.int64), 0, 255), tf.uint8)
            return (x[..., None] if x.shape.rank == 2 else x), y

        ds = ds.map(fix_image)
    return ds


def _scan(ds, source):
    """(labels int64, images uint8 or None): one pass; the images are kept while the split is of
    one size and under IN_MEMORY_BYTES."""
    import tensorflow as tf

    shape = ds.element_spec[0].shape
    labels, images, total = [], None, 0
    try:
        if shape.is_fully_defined():
            images, per_image = [], int(np.prod(shape))
            for x, y in ds.batch(1024).prefetch(2):
                labels.append(y.numpy())
                if images is not None:
                    images.append(x.numpy())
                    total += len(y) * per_image
                    if total > IN_MEMORY_BYTES:
                        images = None
        else:
            for y in ds.map(lambda x, y: y).batch(4096).prefetch(2):
                labels.append(y.numpy())
    except tf.errors.OpError as e:  # the user's pipeline failed: a file it reads, a map it runs
        first = (e.message or type(e).__name__).strip().splitlines()[0][:200]
        raise ConfigError(source, "dataset", f"reading it failed ({first})",
                          "check the dataset: iterate it once yourself to see where") from None
    labels = np.concatenate(labels).astype(np.int64) if labels else np.zeros(0, np.int64)
    return labels, (np.concatenate(images) if images else None)


def from_tf_data(train, test=None, *, num_classes=None, class_names=None, name="tf.data"):
    """An ImageSource of a user's tf.data.Dataset of (image, label) pairs (and a test one).

    The training split is read once (labels, checked against `num_classes` or giving it as the
    largest label + 1; the images too when they are few and of one size)."""
    fix = "pass labels in [0, num_classes), or the right num_classes"
    train = _check_spec(train, name)
    labels, images = _scan(train, name)
    if not len(labels):
        raise ConfigError(name, "train", "the dataset is empty", "pass a dataset with images")
    num_classes = num_classes_of(labels, num_classes, name, fix)
    scanned = {"train": (labels, images)}
    splits = {"train": train, "test": None}
    num_test = 0
    if test is not None:
        splits["test"] = test = _check_spec(test, f"{name} (test)")
        scanned["test"] = _scan(test, f"{name} (test)")
        check_labels(scanned["test"][0], num_classes, f"{name} (test)", fix=fix)
        num_test = len(scanned["test"][0])
    shape = tuple(train.element_spec[0].shape)
    if len(shape) == 2:
        shape = shape + (1,)
    shape = (shape[0], shape[1], int(shape[2]))
    reader = TfDataReader(splits, scanned)
    stats = normalization.known(name, shape[2])
    if stats is None and images is not None:
        stats = measured_stats(images, shape[2])
    if stats is None:
        stats = normalization.measure(train.map(lambda x, y: x).take(normalization.STATS_IMAGES), shape[2])
    return ImageSource(name, "tf.data", num_classes, class_names_for(class_names, num_classes, name), shape,
                       len(labels), num_test, stats[0], stats[1], f"{len(labels)} images from a tf.data.Dataset",
                       reader)
