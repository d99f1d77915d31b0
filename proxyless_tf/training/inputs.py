"""What a retraining run reads, checked against the network before anything is written.

`prepare` opens the data (anything `data.sources.open_source` takes: a tfds name, an image
folder, a `tf.data.Dataset`, numpy arrays, an `ImageSource`), checks it against the
architecture (channels; classes against `num_classes` when one is asked for), carves the
validation examples once (the last ones of the training split, by position: no filter over
the whole split on every pass) and picks the input path: in memory when the source holds its
training split as an array of the network's size and the augmentation is batch-wise, else
streamed. Nothing here writes: every bad input is one `ConfigError` line while the run
directory is still untouched.
"""

import dataclasses

import numpy as np

from proxyless_tf.errors import ConfigError


@dataclasses.dataclass
class TrainInputs:
    """The checked inputs of one run; `train_batches(epoch, step)` is what `fit_resumable` needs."""

    source: object
    input_shape: tuple      # (H, W, C) the network takes
    num_classes: int
    num_train: int          # training examples an epoch draws from (validation carved out)
    num_val: int
    num_test: int
    steps: int              # batches per epoch
    in_memory: bool
    cfg: object
    arrays: tuple = None    # (x, y) of the training part, in memory only
    val_arrays: tuple = None
    eval_style: str = "small"

    @property
    def normalization(self):
        return tuple(self.source.mean), tuple(self.source.std)

    @property
    def class_names(self):
        return list(self.source.class_names)

    def train_batches(self, epoch=0, step=0):
        from proxyless_tf.training import pipeline

        if self.in_memory:
            x, y = self.arrays
            return pipeline.memory_dataset(x, y, self.num_classes, self.cfg, self.steps, epoch, step)
        return pipeline.stream_dataset(self._items().take(self.num_train), self.source.decode_checked,
                                       self.num_train, self.num_classes, self.input_shape[:2], self.cfg, self.steps,
                                       epoch, step)

    def val_batches(self):
        from proxyless_tf.training import pipeline

        if not self.num_val:
            return None
        if self.in_memory:
            return pipeline.memory_eval_dataset(*self.val_arrays, self.num_classes)
        return pipeline.stream_eval_dataset(self._items().skip(self.num_train).take(self.num_val),
                                            self.source.decode_checked, self.num_classes, self.input_shape[:2],
                                            self.eval_style)

    def test_batches(self):
        """The whole test split for the final evaluation (None when the source has none)."""
        from proxyless_tf.training import pipeline

        if not self.num_test:
            return None
        arrays = self.source.test_arrays()
        if arrays is not None and tuple(arrays[0].shape[1:3]) == tuple(self.input_shape[:2]):
            return pipeline.memory_eval_dataset(arrays[0], arrays[1], self.num_classes)
        return pipeline.stream_eval_dataset(self.source.items("test"), self.source.decode_checked, self.num_classes,
                                            self.input_shape[:2], self.eval_style)

    def _items(self):
        """The training items in the run's fixed order: a folder's files (listed class by class)
        permuted once by the seed, so the carved validation examples and a --train_examples
        subset hold every class; other sources in their own order."""
        from proxyless_tf.training import pipeline

        items = self.source.items("train")
        if self.source.kind == "folder":
            n = int(self.source.num_train)
            items = items.shuffle(n, seed=pipeline.seed_int(self.cfg.seed, 11), reshuffle_each_iteration=False)
        return items

    def fingerprint(self):
        """What a resume checkpoint must agree on, beside the config and the architecture."""
        return {"dataset": str(self.source.name), "num_train": self.num_train, "num_classes": self.num_classes,
                "input_shape": list(self.input_shape), "in_memory": self.in_memory}


def _open(data, data_dir=None, manual_dir=None):
    from proxyless_tf.data.sources import open_source

    return open_source(data, data_dir=data_dir, manual_dir=manual_dir)


def check_against(arch, source, num_classes=None, arch_source="<arch>"):
    """The network must take the source's images: its channels; `num_classes` (a flag) its classes."""
    h, w, c = (int(v) for v in arch.space.input_shape)
    sc = source.image_shape[2]
    if sc is not None and int(sc) != c:
        raise ConfigError(arch_source, "space.input_shape",
                          f"the network takes {c}-channel {h}x{w} images, {source.description} has {sc}-channel "
                          "images", f"use an architecture searched on this dataset (a space with {sc} input "
                          "channels)")
    if num_classes is not None and int(num_classes) != int(source.num_classes):
        raise ConfigError("<flags>", "--num_classes", f"{num_classes}, but {source.description} has "
                          f"{source.num_classes} classes", "leave --num_classes out to take the dataset's")
    if source.num_classes < 2:
        raise ConfigError(str(source.name), "classes", f"{source.num_classes} class", "a classifier needs at least 2")


def prepare(arch, data, cfg, num_classes=None, arch_source="<arch>", data_dir=None, manual_dir=None, flags=False):
    """Open `data`, check it and `cfg` against `arch`, and plan the input path (no writes).

    `flags`: the settings came from the command line, so errors name `<flags>` / `--name`."""
    where, prefix = ("<flags>", "--") if flags else ("<train config>", "")
    cfg.check(where, prefix)
    source = _open(data, data_dir, manual_dir)
    check_against(arch, source, num_classes, arch_source)
    h, w, c = (int(v) for v in arch.space.input_shape)
    n_all = int(source.num_train)
    if cfg.train_examples:
        n_all = min(n_all, int(cfg.train_examples))
    if cfg.val_examples >= n_all:
        raise ConfigError(where, f"{prefix}val_examples", f"{cfg.val_examples} held out of {n_all} training "
                          "examples leaves none to train on", "hold out fewer (or 0)")
    n_train = n_all - cfg.val_examples
    if n_train < cfg.batch_size:
        raise ConfigError(where, f"{prefix}batch_size", f"{cfg.batch_size} is larger than the {n_train} "
                          f"training examples of {source.description}", "use a smaller batch size")
    steps = cfg.steps_per_epoch or n_train // cfg.batch_size
    arrays = None
    if cfg.augment != "inception":
        arrays = source.train_arrays()
        if arrays is not None and tuple(arrays[0].shape[1:3]) != (h, w):
            arrays = None  # another size: the stream resizes each image
    train_arrays = val_arrays = None
    if arrays is not None:
        x, y = arrays[0], np.asarray(arrays[1])
        if source.kind == "folder":  # listed class by class: a permutation fixed by the seed
            order = np.random.default_rng(cfg.seed).permutation(len(x))[:n_all]
            x, y = x[order], y[order]
        x, y = x[:n_all], y[:n_all]
        train_arrays = (x[:n_train], y[:n_train])
        val_arrays = (x[n_train:], y[n_train:])
    return TrainInputs(source=source, input_shape=(h, w, c), num_classes=int(source.num_classes),
                       num_train=n_train, num_val=int(cfg.val_examples), num_test=int(source.num_test or 0),
                       steps=int(steps), in_memory=arrays is not None, cfg=cfg, arrays=train_arrays,
                       val_arrays=val_arrays, eval_style="imagenet" if cfg.augment == "inception" else "small")
