"""An image folder as an ImageSource: DIR/<class>/*.{png,jpg,jpeg,bmp,gif}, classes the sorted
folder names, or DIR/train/<class>/... with DIR/test/<class>/....

The folder is scanned without TensorFlow (`image_files.probe`: two small reads per file), so an
empty folder, a single class, a truncated file or a grayscale folder under an RGB space is found
in the first second of a command, before anything is written. Files that are unreadable,
truncated or not images are skipped and counted (one `note:` line); a class left without images
is an error. A file damaged inside its compressed data passes the scan and is refused by the
decoder: skipped and counted too, in a `note:` line when the folder is decoded into memory (when
opened), else at the end of the run that streamed it (`data.damaged`). Without a test folder, a
class-balanced `test_fraction` of every class is held out, chosen by `seed` from the sorted file
list: the same files every run.

The images are read as a stream (`tf.io.read_file` + `tf.io.decode_image`), never all at once,
except a folder of one image size whose decoded training split fits in
`IN_MEMORY_BYTES`: it is decoded once when opened and held as arrays, which makes a
folder of Fashion-MNIST PNGs as fast as the IDX files.
"""

import dataclasses
import os

import numpy as np

from proxyless_tf.data import damaged, image_files, normalization
from proxyless_tf.data.image_source import IN_MEMORY_BYTES, ImageSource, Reader, measured_stats, to_channels
from proxyless_tf.errors import ConfigError

FIX_LAYOUT = "put each class's images in DIR/<class>/ (.png, .jpg, .jpeg, .bmp, .gif), or pass a tfds name"
_SCANS = {}  # path -> FolderScan of a check (`scan`) that the next `open_folder` reuses, once


def is_folder_path(name):
    """A `--dataset` value that names a path (a tfds name is a bare word, maybe with a /config)."""
    name = os.fspath(name)
    return os.path.exists(os.path.expanduser(name)) or name.startswith(("/", ".", "~"))


@dataclasses.dataclass
class FolderScan:
    root: str
    class_names: list
    files: dict            # split -> (paths, labels); "test" only with a test folder
    channels: int          # 1 when every image is grayscale, else 3
    size: tuple            # (h, w) shared by every image, or None
    skipped: list          # (path, reason) of the files left out


def _subdirs(d):
    try:
        with os.scandir(d) as it:
            return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))
    except OSError as e:
        raise ConfigError(d, "<folder>", f"cannot be listed ({e.strerror})", "check the path and its permissions") \
            from None


def _images_under(d):
    found = []
    for top, dirs, names in os.walk(d):
        dirs[:] = sorted(x for x in dirs if not x.startswith("."))
        found.extend(os.path.join(top, n) for n in sorted(names) if image_files.is_image_name(n))
    return found


def _loose_images(d):
    with os.scandir(d) as it:
        return any(e.is_file() and image_files.is_image_name(e.name) for e in it)


def _classes(root, what):
    names = _subdirs(root)
    if not names:
        problem = ("holds images but no class folders" if _loose_images(root) else
                   "is empty: no class folders with images")
        raise ConfigError(root, "<folder>", f"{what} {problem}", FIX_LAYOUT)
    return names


def scan(root):
    """The FolderScan of `root` (a directory path); raises ConfigError for a folder that is no dataset."""
    root = os.path.expanduser(os.fspath(root))
    if not os.path.exists(root):
        raise ConfigError(root, "<folder>", "does not exist", "pass an image folder, or a tfds name such as cifar10")
    if not os.path.isdir(root):
        raise ConfigError(root, "<folder>", "is a file, not an image folder", FIX_LAYOUT)
    key = os.path.abspath(root)
    if key in _SCANS:
        return _SCANS[key]
    top = _subdirs(root)
    split_layout = "train" in top and _subdirs(os.path.join(root, "train"))
    if split_layout:
        roots = {"train": os.path.join(root, "train")}
        if "test" in top:
            roots["test"] = os.path.join(root, "test")
    else:
        roots = {"train": root}
    class_names = _classes(roots["train"], "the image folder" if not split_layout else "its train/ folder")
    if len(class_names) < 2:
        raise ConfigError(roots["train"], "<folder>", f"one class folder ({class_names[0]}): a classifier needs "
                          "two or more", "add a folder of images for every class")
    if "test" in roots:
        test_names = _classes(roots["test"], "its test/ folder")
        if test_names != class_names:
            extra = sorted(set(test_names) ^ set(class_names))
            raise ConfigError(roots["test"], "<folder>", f"its class folders differ from train/'s ({', '.join(extra)} "
                              "in only one of them)", "give test/ and train/ the same class folders")
    files, skipped, channels, sizes = {}, [], set(), set()
    for split, d in roots.items():
        paths, labels = [], []
        for label, name in enumerate(class_names):
            usable = 0
            for path in _images_under(os.path.join(d, name)):
                try:
                    info = image_files.probe(path)
                except image_files.BadImage as e:
                    skipped.append((path, str(e)))
                    continue
                paths.append(path)
                labels.append(label)
                channels.add(info.channels)
                sizes.add((info.height, info.width))
                usable += 1
            if not usable:
                raise ConfigError(os.path.join(d, name), "<folder>", "class folder without usable images"
                                  + (f" ({sum(1 for p, _ in skipped if p.startswith(os.path.join(d, name, '')))} "
                                     "skipped as unreadable)" if skipped else ""),
                                  "add images of this class, or remove the folder")
        files[split] = (paths, np.asarray(labels, np.int64))
    if skipped:
        path, reason = skipped[0]
        print(f"note: {root}: skipped {len(skipped)} unreadable or truncated image file(s), e.g. {path}: {reason}",
              flush=True)
    result = FolderScan(root, class_names, files, 1 if channels == {1} else 3,
                        next(iter(sizes)) if len(sizes) == 1 else None, skipped)
    _SCANS[key] = result
    return result


def held_out(labels, fraction, seed):
    """(train_indices, test_indices): round(fraction * n) of every class's n files (at most n - 1),
    drawn by `seed`."""
    if not 0.0 <= fraction < 1.0:
        raise ConfigError("<flags>", "test_fraction", f"{fraction} is not in [0, 1)",
                          "hold out a fraction such as 0.1, or 0 for no test split")
    rng = np.random.default_rng(seed)
    test = []
    for c in range(int(labels.max()) + 1):
        idx = np.flatnonzero(labels == c)
        k = min(int(round(len(idx) * fraction)), len(idx) - 1)
        if k > 0:
            test.append(rng.choice(idx, k, replace=False))
    test = np.sort(np.concatenate(test)) if test else np.zeros(0, np.int64)
    mask = np.ones(len(labels), bool)
    mask[test] = False
    return np.flatnonzero(mask), test


class FolderReader(Reader):
    """The files of each split; decoded on demand, or held as arrays (see the module doc)."""

    def __init__(self, files, channels, size):
        self.files = files      # split -> (paths, labels)
        self.channels = channels
        self.size = size
        self.held = {}          # split -> (x, y) once decoded into memory
        self.tally = damaged.Tally()  # the files a stream skipped as undecodable

    def items(self, split):
        import tensorflow as tf

        if split in self.held:
            return tf.data.Dataset.from_tensor_slices(self.held[split])
        paths, labels = self.files[split]
        return tf.data.Dataset.from_tensor_slices((np.asarray(paths, object).astype(str), labels))

    def decode(self, item):
        import tensorflow as tf

        if item.dtype == tf.uint8:  # held in memory: already an image
            return item
        x = tf.io.decode_image(tf.io.read_file(item), channels=0, expand_animations=False)
        x = to_channels(x, self.channels)
        h, w = self.size or (None, None)
        return tf.ensure_shape(x, (h, w, self.channels))

    def decode_checked(self, item):
        import tensorflow as tf

        if item.dtype == tf.uint8:  # held in memory: already an image
            return damaged.always_ok(item)
        h, w = self.size or (8, 8)  # the placeholder of a refused file: any size the transforms take
        return damaged.decode_checked(self.decode, item, (h, w, self.channels), self.tally)

    def damaged(self):
        return self.tally.paths()

    def labels(self, split):
        return self.held[split][1] if split in self.held else self.files[split][1]

    def arrays(self, split):
        return self.held.get(split)

    def hold(self, split):
        """Decode every file of `split` into memory; files the decoder refuses are left out:
        returns their paths. (The index of every image travels with it, so `ignore_errors` is
        enough here: the missing indices are the refused files.)"""
        import tensorflow as tf

        paths, labels = self.files[split]
        ds = (tf.data.Dataset.from_tensor_slices((np.arange(len(paths)), np.asarray(paths, object).astype(str)))
              .map(lambda i, p: (i, self.decode(p)), num_parallel_calls=tf.data.AUTOTUNE)
              .ignore_errors().batch(1024).prefetch(2))
        index, images = [], []
        for i, x in ds:
            index.append(i.numpy())
            images.append(x.numpy())
        index = np.concatenate(index) if index else np.zeros(0, np.int64)
        h, w = self.size
        x = np.concatenate(images) if images else np.zeros((0, h, w, self.channels), np.uint8)
        self.held[split] = (x, labels[index])
        refused = np.ones(len(paths), bool)
        refused[index] = False
        return [str(paths[i]) for i in np.flatnonzero(refused)]


def open_folder(root, test_fraction=0.1, seed=0, channels=None):
    """The ImageSource of an image folder (see the module doc). `channels` decodes to that many
    channels instead of the folder's own (1 if every image is grayscale, else 3)."""
    s = scan(root)
    _SCANS.pop(os.path.abspath(s.root), None)  # the next open scans again: files may have changed since
    if channels not in (None, 1, 3):
        raise ConfigError(s.root, "channels", f"{channels} channels", "decode an image folder to 1 or 3 channels")
    c = channels or s.channels
    files = dict(s.files)
    if "test" not in files:
        tr, te = held_out(files["train"][1], test_fraction, seed)
        paths = np.asarray(files["train"][0], object)
        labels = files["train"][1]
        files = {"train": (list(paths[tr]), labels[tr]), "test": (list(paths[te]), labels[te])}
    reader = FolderReader(files, c, s.size)
    n_train = len(files["train"][0])
    if s.size and n_train * s.size[0] * s.size[1] * c <= IN_MEMORY_BYTES:
        refused = sorted(p for split in files for p in reader.hold(split))
        if refused:
            print(damaged.note(s.root, refused, "when opened"), flush=True)
        for split in files:
            if not len(reader.held[split][1]) and split == "train":
                raise ConfigError(s.root, "<folder>", "no training image could be decoded",
                                  "check the image files")
        x = reader.held["train"][0]
        stats = measured_stats(x, c)
        n_train = len(x)
    else:
        sample = np.sort(np.random.default_rng(seed).choice(n_train, min(n_train, normalization.STATS_IMAGES),
                                                            replace=False))
        paths = np.asarray(files["train"][0], object)[sample].astype(str)
        import tensorflow as tf

        images = tf.data.Dataset.from_tensor_slices(paths).map(reader.decode_checked,
                                                               num_parallel_calls=tf.data.AUTOTUNE)
        stats = normalization.measure(damaged.drop_flagged(images), c)
    n_test = len(reader.labels("test"))
    shape = (s.size[0], s.size[1], c) if s.size else (None, None, c)
    where = "in memory" if reader.held else "streamed"
    return ImageSource(s.root, "folder", len(s.class_names), list(s.class_names), shape, n_train, n_test,
                               stats[0], stats[1],
                               f"image folder {s.root} ({len(s.class_names)} classes, {where})", reader)
