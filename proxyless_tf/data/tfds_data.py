"""A tfds dataset with an `image` and a `label` feature as an ImageSource.

The images are read undecoded (`tfds.decode.SkipDecoding`): the label scan, the carving of the
search's validation split and any selection of examples run on the encoded bytes, and an image
is decoded only when it is used. The label scan is cached (one file per dataset, split and
size), so a 1.28 M-image ImageNet is scanned once per machine. A dataset of one image size whose
decoded split fits in `IN_MEMORY_BYTES` (CIFAR-10, Fashion-MNIST) is decoded once, on first
use, and held as arrays.

Labels are checked against the class count wherever a split's labels are read (a scan, or the
arrays held), and the test split's are scanned when the dataset is opened: a label out of range
is one `error:` line naming the split before a run writes anything, not an all-zero one-hot
target in the final evaluation. (The training split of a streamed dataset is scanned only by
the search, which carves its validation split from it.)
"""

import os

import numpy as np

from proxyless_tf.data import normalization
from proxyless_tf.data.image_source import IN_MEMORY_BYTES, ImageSource, Reader, measured_stats, to_channels
from proxyless_tf.data.labels import check_labels
from proxyless_tf.errors import ConfigError

IMAGENET_HOWTO = ("download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from image-net.org "
                  "into {manual_dir} (or pass --manual_dir=DIR); tfds prepares them on first use")
TEST_SPLITS = ("test", "validation")   # the first a dataset has is its test split, unless it is named here:
TEST_SPLIT = {"imagenet2012": "validation"}  # (ImageNet's "test" split has no labels)
FIX_LABELS = ("prepare the dataset again (delete its folder under the tfds data_dir, then rerun), or fix the "
              "builder's label feature")


def _first_line(e):
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def _load(name, split, data_dir, manual_dir):
    """tf.data of (encoded image, int64 label) of one split, in file order (prepared when needed)."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    kwargs = {}
    if manual_dir:
        kwargs["download_and_prepare_kwargs"] = {"download_config": tfds.download.DownloadConfig(manual_dir=manual_dir)}
    try:
        ds = tfds.load(name, split=split, data_dir=data_dir, shuffle_files=False,
                       decoders={"image": tfds.decode.SkipDecoding()}, **kwargs)
    except Exception as e:  # tfds raises many types; the user needs one line
        if name == "imagenet2012":
            where = manual_dir or os.path.join(data_dir or "~/tensorflow_datasets", "downloads", "manual")
            raise ConfigError(name, "dataset", "ImageNet is not prepared and its tar files were not found",
                              IMAGENET_HOWTO.format(manual_dir=where)) from None
        raise ConfigError(name, "dataset", f"cannot load it with tfds ({_first_line(e)})",
                          "check --dataset/--data_dir, or prepare it with network access once") from None
    return ds.map(lambda ex: (ex["image"], tf.cast(ex["label"], tf.int64)))


class TfdsReader(Reader):
    def __init__(self, name, data_dir, manual_dir, stored_channels, channels, shape, cache_dir, sizes, test_split,
                 num_classes):
        self.name, self.data_dir, self.manual_dir, self.test_split = name, data_dir, manual_dir, test_split
        self.num_classes = num_classes
        self.stored_channels, self.channels, self.shape = stored_channels, channels, shape
        self.cache_dir, self.sizes = cache_dir, dict(sizes)  # split -> number of examples, when tfds knows it
        self._labels, self._held = {}, {}

    def items(self, split):
        return _load(self.name, self.split_name(split), self.data_dir, self.manual_dir)

    def split_name(self, split):
        return self.test_split if split == "test" else split

    def decode(self, item):
        import tensorflow as tf

        if item.dtype == tf.uint8:  # a feature stored without encoding
            x = item
        else:
            x = tf.io.decode_image(item, channels=self.stored_channels or 0, expand_animations=False)
        if self.channels != self.stored_channels:
            x = to_channels(x, self.channels)
        return tf.ensure_shape(x, self.shape)

    def labels(self, split):
        """The split's int64 labels, scanned once (undecoded) and cached; checked against the
        class count before they are used or cached."""
        if split in self._labels:
            return self._labels[split]
        n = self.sizes.get(split)
        path = None
        if self.cache_dir and n:  # the name carries the split size, so a stale cache is not reused
            path = os.path.join(self.cache_dir, f"labels_{self.name.replace('/', '_')}_{split}_{n}.npy")
        where = f"{self.name} ({self.split_name(split)} split)"
        if path and os.path.exists(path):
            labels = np.load(path)
            try:
                check_labels(labels, self.num_classes, where, fix=FIX_LABELS)
            except ConfigError:  # a scan of an earlier copy of the dataset: scanned again below
                os.remove(path)
                return self.labels(split)
        else:
            labels = np.concatenate([b.numpy() for b in self.items(split).map(lambda x, y: y).batch(65536)]
                                    or [np.zeros(0, np.int64)]).astype(np.int64)
            check_labels(labels, self.num_classes, where, fix=FIX_LABELS)
            if path:  # to a temporary name, then renamed: a killed scan never leaves half a cache
                os.makedirs(self.cache_dir, exist_ok=True)
                tmp = f"{path}.tmp.{os.getpid()}.npy"
                np.save(tmp, labels)
                os.replace(tmp, path)
        self._labels[split] = labels
        return labels

    def arrays(self, split):
        import tensorflow as tf

        h, w, c = self.shape
        if h is None or split not in self.sizes and split not in self._labels:
            return None
        n = self.sizes.get(split) or len(self.labels(split))
        if n * h * w * c > IN_MEMORY_BYTES:
            return None
        if split not in self._held:
            ds = self.items(split).map(lambda x, y: (self.decode(x), y), num_parallel_calls=tf.data.AUTOTUNE)
            xs, ys = [], []
            for x, y in ds.batch(1024).prefetch(2):
                xs.append(x.numpy())
                ys.append(y.numpy())
            y = np.concatenate(ys).astype(np.int64)
            check_labels(y, self.num_classes, f"{self.name} ({self.split_name(split)} split)", fix=FIX_LABELS)
            self._held[split] = (np.concatenate(xs), y)
        return self._held[split]


def open_tfds(name, data_dir=None, manual_dir=None, channels=None, cache_dir=None):
    """The ImageSource of tfds dataset `name` (see the module doc); `channels` converts its images."""
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # noqa: BLE001 - DatasetNotFoundError and friends: one line
        raise ConfigError(name, "--dataset", f"neither an image folder nor a tfds dataset ({_first_line(e)})",
                          "pass an image folder path (DIR/<class>/*.png), or a tfds name such as cifar10") from None
    feats = builder.info.features
    if "image" not in feats or "label" not in feats or not hasattr(feats["label"], "num_classes"):
        raise ConfigError(name, "--dataset", f"has no image and class-label features (it has "
                          f"{', '.join(sorted(feats.keys()))})", "pass a tfds image classification dataset")
    stored = tuple(feats["image"].shape)
    stored_channels = stored[2] if len(stored) == 3 else None
    c = channels or stored_channels
    if c is None:
        raise ConfigError(name, "channels", "the dataset does not say how many channels its images have",
                          "pass channels=1 or 3")
    shape = (stored[0], stored[1], int(c))
    _load(name, "train", data_dir, manual_dir)  # prepares the dataset, or says in one line why it cannot
    known_splits = dict(builder.info.splits) or dict(tfds.builder(name, data_dir=data_dir).info.splits)
    test_split = TEST_SPLIT.get(name) or next((s for s in TEST_SPLITS if s in known_splits), None)
    if not known_splits:  # tfds.testing.mock_data: no split metadata, every split name is accepted
        test_split = TEST_SPLIT.get(name, "test")
    elif test_split not in known_splits:
        test_split = None
    sizes = {}
    for split, tfds_split in (("train", "train"), ("test", test_split)):
        n = known_splits[tfds_split].num_examples if tfds_split in known_splits else None
        if n:
            sizes[split] = int(n)
    label = feats["label"]
    reader = TfdsReader(name, data_dir, manual_dir, stored_channels, int(c), shape, cache_dir, sizes, test_split,
                        int(label.num_classes))
    num_train = sizes.get("train") or len(reader.labels("train"))
    num_test = 0
    if test_split:  # its labels scanned (once per machine) and checked now, not in the final evaluation
        test_labels = reader.labels("test")
        num_test = sizes.get("test") or len(test_labels)
    stats = normalization.known(name, shape[2])
    if stats is None:
        arrays = reader.arrays("train")
        if arrays is not None:
            stats = measured_stats(arrays[0], shape[2])
        else:
            images = reader.items("train").take(normalization.STATS_IMAGES).map(lambda x, y: reader.decode(x))
            stats = normalization.measure(images, shape[2])
    where = f" in {data_dir}" if data_dir else ""
    return ImageSource(name, "tfds", int(label.num_classes), list(label.names), shape, num_train, num_test,
                       stats[0], stats[1], f"tfds {name}{where}", reader)
