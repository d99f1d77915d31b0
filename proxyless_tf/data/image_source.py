"""`ImageSource`: one labelled image dataset, whatever it came from, as every entry point reads it.

The search, retraining, export's calibration and evaluation and the experiment tools all take
an `ImageSource` (or anything `open_source` turns into one): a tfds name, an image folder, the
local Fashion-MNIST IDX files, numpy arrays or a `tf.data.Dataset` of (image, label). What they
need to know before touching a pixel — classes, image shape, split sizes, the normalisation —
is decided when the source is opened, and every problem with the data is one `ConfigError`
then, not a traceback in the middle of training.

A source hands out its splits two ways: decoded (`train()`, `test()`: uint8 images in a fixed
order, decoded lazily) and, for pipelines that select before they decode (the search's
validation split), as cheap items (`items(split)`: encoded bytes, file paths or the images
themselves) with `decode(item)`, or `decode_checked(item)`: (image, ok), where ok is False for a
file damaged inside its data (an image folder's streamed split; `data.damaged`), which the
pipeline drops and `damaged_files()` names. Sources small enough to hold decoded in memory also give
numpy arrays (`train_arrays()`), the fast path of search and retraining.
"""

import dataclasses
import os

import numpy as np

from proxyless_tf.data import normalization
from proxyless_tf.data.labels import check_labels
from proxyless_tf.errors import ConfigError

IN_MEMORY_BYTES = 256 << 20  # a decoded split up to this size is held in memory (Fashion-MNIST 47 MB, CIFAR 150 MB)
KINDS = ("idx", "tfds", "folder", "arrays", "tf.data")


def default_cache_dir():
    """Where label scans and carved validation splits are kept between runs."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "proxyless_tf")


@dataclasses.dataclass(eq=False)
class ImageSource:
    """A labelled image dataset as the search, retraining and export read it."""

    name: str              # "fashion_mnist", "cifar10", "imagenet2012", the folder path, "arrays", ...
    kind: str              # one of KINDS
    num_classes: int
    class_names: list      # len == num_classes
    image_shape: tuple     # (H, W, C) of the stored images; H and W are None when sizes vary
    num_train: int
    num_test: int          # 0 when there is no test split
    mean: tuple            # per channel, of pixels scaled to [0, 1]
    std: tuple
    description: str       # for messages: "tfds cifar10", "image folder DIR (12 classes)"
    reader: object = dataclasses.field(default=None, repr=False)  # a Reader: where the pixels come from

    @property
    def channels(self):
        return int(self.image_shape[2])

    def items(self, split="train"):
        """tf.data of (item, int64 label) in the split's fixed order; `decode(item)` is the uint8 image."""
        return self.reader.items(split)

    def decode(self, item):
        return self.reader.decode(item)

    def decode_checked(self, item):
        """(uint8 image, ok): ok False (and the image a placeholder) for a file the decoder refuses."""
        return self.reader.decode_checked(item)

    def damaged_files(self):
        """The files a stream of this source skipped so far as undecodable (sorted paths)."""
        return self.reader.damaged()

    def _decoded(self, split):
        import tensorflow as tf

        from proxyless_tf.data.damaged import drop_flagged

        arrays = self.reader.arrays(split)
        if arrays is not None:
            return tf.data.Dataset.from_tensor_slices(arrays)

        def decoded(item, y):
            image, ok = self.reader.decode_checked(item)
            return image, y, ok

        return drop_flagged(self.reader.items(split).map(decoded, num_parallel_calls=tf.data.AUTOTUNE))

    def train(self):
        """tf.data of (uint8 image HxWxC, int64 label), fixed order, decoded lazily."""
        return self._decoded("train")

    def test(self):
        return self._decoded("test") if self.num_test else None

    def train_labels(self):
        """int64 labels of the train split, without decoding any image."""
        return self.reader.labels("train")

    def test_labels(self):
        return self.reader.labels("test") if self.num_test else None

    def train_arrays(self):
        """(x uint8 NHWC, y int64) when the split is held in memory, else None (streamed)."""
        return self.reader.arrays("train")

    def test_arrays(self):
        return self.reader.arrays("test") if self.num_test else None


class Reader:
    """Where a source's pixels come from; one subclass per kind of storage."""

    def items(self, split):
        raise NotImplementedError

    def decode(self, item):
        return item  # items that are already images

    def decode_checked(self, item):
        from proxyless_tf.data.damaged import always_ok

        return always_ok(self.decode(item))

    def damaged(self):
        return []

    def labels(self, split):
        raise NotImplementedError

    def arrays(self, split):
        return None


class ArrayReader(Reader):
    """Splits held in memory as numpy arrays."""

    def __init__(self, splits):
        self.splits = splits  # {"train": (x, y), "test": (x, y) or None}

    def items(self, split):
        import tensorflow as tf

        return tf.data.Dataset.from_tensor_slices(self.splits[split])

    def labels(self, split):
        return self.splits[split][1]

    def arrays(self, split):
        return self.splits.get(split)


def class_names_for(class_names, num_classes, source):
    if class_names is None:
        return [str(i) for i in range(num_classes)]
    names = [str(n) for n in class_names]
    if len(names) != num_classes:
        raise ConfigError(source, "class_names", f"{len(names)} names for {num_classes} classes",
                          "pass one name per class, or leave class_names out")
    return names


def num_classes_of(labels, num_classes, source, fix):
    """The class count given, or the largest label + 1; labels checked against it."""
    labels = np.asarray(labels)
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ConfigError(source, "labels", f"labels of type {labels.dtype} (class indices are integers)", fix)
    if num_classes is None:
        if not labels.size:
            raise ConfigError(source, "labels", "no training images", "pass a dataset with images")
        num_classes = int(labels.max()) + 1
    elif isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 2:
        raise ConfigError(source, "num_classes", f"{num_classes!r} is not a class count of 2 or more",
                          "pass the number of classes")
    num_classes = int(num_classes)
    check_labels(labels, num_classes, source, fix=fix)
    if num_classes < 2:
        raise ConfigError(source, "labels", "every label is 0: one class, and a classifier needs two or more",
                          "pass a dataset with at least two classes")
    return num_classes


def _uint8_images(x, source, field):
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise ConfigError(source, field, f"images of shape {x.shape}",
                          "pass an N x H x W x C (or N x H x W) array of uint8 pixels")
    if not np.issubdtype(x.dtype, np.integer):
        raise ConfigError(source, field, f"pixels of type {x.dtype}; sources take uint8 pixels 0..255 (the "
                          "normalisation is applied for you)",
                          "pass np.clip(x * 255, 0, 255).astype(np.uint8) for [0, 1] floats")
    if x.dtype != np.uint8:
        if x.size and (x.min() < 0 or x.max() > 255):
            raise ConfigError(source, field, f"pixel values {x.min()}..{x.max()} outside 0..255",
                              "pass uint8 pixels")
        x = x.astype(np.uint8)
    return x


def measured_stats(images_u8, channels):
    """(mean, std) of the pixels of every image of an in-memory split (a streamed one is sampled:
    `normalization.measure`). All of them, not a sample: summing a few hundred MB costs a second,
    and a folder written from a standard dataset then gets that dataset's published values."""
    total, total_sq, count = np.zeros(channels), np.zeros(channels), 0
    for start in range(0, len(images_u8), 4096):  # float64 in chunks: a copy of the whole split would not fit
        x = images_u8[start:start + 4096].reshape(-1, channels).astype(np.float64) / 255.0
        total += x.sum(0)
        total_sq += np.square(x).sum(0)
        count += len(x)
    if not count:
        return (0.5,) * channels, (0.25,) * channels
    mean = total / count
    std = np.maximum(np.sqrt(np.maximum(total_sq / count - mean ** 2, 0.0)), normalization.MIN_STD)
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)


def from_arrays(x, y, x_test=None, y_test=None, *, num_classes=None, class_names=None, name="arrays",
                description=None, kind="arrays", stats=None):
    """An ImageSource of numpy arrays: x uint8 (N, H, W[, C]), y integer labels in [0, num_classes)."""
    fix = "pass labels in [0, num_classes), or the right num_classes"
    x = _uint8_images(x, name, "x")
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != len(x):
        raise ConfigError(name, "y", f"labels of shape {y.shape} for {len(x)} images", "pass one label per image")
    num_classes = num_classes_of(y, num_classes, name, fix)
    y = y.astype(np.int64)
    test = None
    if x_test is not None or y_test is not None:
        if x_test is None or y_test is None:
            raise ConfigError(name, "x_test", "a test split needs both x_test and y_test", "pass both, or neither")
        x_test = _uint8_images(x_test, name, "x_test")
        y_test = np.asarray(y_test)
        if x_test.shape[1:] != x.shape[1:]:
            raise ConfigError(name, "x_test", f"test images of shape {x_test.shape[1:]}, train {x.shape[1:]}",
                              "pass test images of the training images' shape")
        if y_test.ndim != 1 or len(y_test) != len(x_test):
            raise ConfigError(name, "y_test", f"labels of shape {y_test.shape} for {len(x_test)} images",
                              "pass one label per image")
        check_labels(y_test, num_classes, f"{name} (test)", fix=fix)
        test = (x_test, y_test.astype(np.int64))
    c = x.shape[3]
    stats = stats or normalization.known(name, c) or measured_stats(x, c)
    return ImageSource(name, kind, num_classes, class_names_for(class_names, num_classes, name), tuple(x.shape[1:]),
                       len(x), len(test[0]) if test else 0, stats[0], stats[1],
                       description or f"{len(x)} images in arrays", ArrayReader({"train": (x, y), "test": test}))


def to_channels(image, channels):
    """A natively decoded image (1, 2, 3 or 4 channels) as `channels` (1 or 3): alpha dropped,
    colour averaged to gray or gray repeated (a folder may mix grayscale and colour files)."""
    import tensorflow as tf

    n = tf.shape(image)[-1]
    if channels == 1:
        return tf.cond(n >= 3, lambda: tf.image.rgb_to_grayscale(image[..., :3]), lambda: image[..., :1])
    return tf.cond(n >= 3, lambda: image[..., :3], lambda: tf.image.grayscale_to_rgb(image[..., :1]))
