"""`open_source`: anything a user calls a dataset, as one `ImageSource`.

The entry points (search, retraining, export, the experiment tools) take a `--dataset` value or,
from Python, an object; this is the one place that tells them apart: a tfds name, an image
folder path, the local Fashion-MNIST IDX files, numpy arrays, a `tf.data.Dataset` or a source
already opened. `ImageSource`, `from_arrays` and `from_tf_data` are this module's public names
too, so a caller needs one import.
"""

import os

from proxyless_tf.data.image_source import ImageSource, default_cache_dir, from_arrays
from proxyless_tf.data.tf_data import from_tf_data
from proxyless_tf.errors import ConfigError

__all__ = ["ImageSource", "from_arrays", "from_tf_data", "open_source"]


def _is_tf_dataset(obj):
    return type(obj).__module__.startswith("tensorflow") and hasattr(obj, "element_spec")


def open_source(dataset, data_dir=None, manual_dir=None, *, test_fraction=0.1, seed=0, channels=None,
                num_classes=None, class_names=None, cache_dir=None):
    """An ImageSource for `dataset`, which is one of:

    - an ImageSource (returned as it is);
    - a directory path: an image folder, DIR/<class>/*.png|jpg|jpeg|bmp|gif, or DIR/train/<class>/...
      and DIR/test/<class>/... (without a test folder a class-balanced `test_fraction` of the files,
      chosen by `seed`, is the test split);
    - "fashion_mnist": the local IDX files when present (`data_dir` or the system's), else tfds;
    - any other tfds name with an image and a label feature (`data_dir`, `manual_dir` as tfds has them);
    - a tf.data.Dataset of (image, label) (`num_classes`, or the largest label + 1);
    - a tuple (x, y) or (x, y, x_test, y_test) of numpy arrays.

    `channels` decodes a folder's or a tfds dataset's images to that many channels (1: grayscale,
    3: colour) instead of the stored count — an explicit conversion; arrays and tf.data must
    already have it. `num_classes`, when given for a folder or tfds name, must be the dataset's.
    `cache_dir`: where tfds label scans are kept (default ~/.cache/proxyless_tf).
    Raises ConfigError (one line) for anything wrong with the data.
    """
    if isinstance(dataset, ImageSource):
        source = dataset
    elif isinstance(dataset, (tuple, list)) and len(dataset) in (2, 4) and not isinstance(dataset, str):
        source = from_arrays(*dataset, num_classes=num_classes, class_names=class_names)
    elif isinstance(dataset, (str, os.PathLike)):
        source = _open_named(os.fspath(dataset), data_dir, manual_dir, test_fraction, seed, channels,
                             class_names, cache_dir)
        if num_classes is not None and num_classes != source.num_classes:
            raise ConfigError(source.name, "num_classes", f"the dataset has {source.num_classes} classes, not "
                              f"{num_classes}", f"pass num_classes={source.num_classes}, or leave it out")
    elif _is_tf_dataset(dataset):
        source = from_tf_data(dataset, num_classes=num_classes, class_names=class_names)
    else:
        raise ConfigError("<dataset>", "dataset", f"a {type(dataset).__name__} is not a dataset",
                          "pass a tfds name, an image folder path, a tf.data.Dataset of (image, label), "
                          "(x, y) numpy arrays or an ImageSource")
    if channels is not None and source.channels != channels:
        raise ConfigError(source.name, "channels", f"the images have {source.channels} channel(s), not {channels}",
                          f"convert the images to {channels} channel(s) before passing them")
    return source


def _open_named(name, data_dir, manual_dir, test_fraction, seed, channels, class_names, cache_dir):
    from proxyless_tf.data import folder, idx

    if folder.is_folder_path(name):
        return folder.open_folder(name, test_fraction=test_fraction, seed=seed, channels=channels)
    idx.check_data_dir(data_dir, name)
    local = idx.find_fashion_dir(data_dir) if name == "fashion_mnist" and channels in (None, 1) else None
    if local:
        x, y = idx.load_fashion_local(local)
        test = idx.load_fashion_test(local)
        return from_arrays(x, y, *(test or (None, None)), num_classes=10,
                           class_names=class_names or list(idx.FASHION_MNIST_LABELS), name="fashion_mnist",
                           description=f"IDX files in {local}", kind="idx")
    from proxyless_tf.data import tfds_data

    return tfds_data.open_tfds(name, data_dir, manual_dir, channels=channels,
                               cache_dir=cache_dir if cache_dir is not None else default_cache_dir())
