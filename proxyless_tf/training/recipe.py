"""The retraining recipe: a derived network trained from scratch with plain `model.fit`.

Kept apart from the absl entry point (`proxyless_tf.train`) so a user, a test or a
notebook can run the same recipe with a config object and no flags. The recipe follows
the official ProxylessNAS retraining: SGD Nesterov, cosine learning rate after a linear
warm-up, label smoothing, weight decay on convolution/dense kernels only (not on BN or
biases), light augmentation that fits the dataset.
"""

import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf

from proxyless_tf.errors import ConfigError


@dataclasses.dataclass
class TrainConfig:
    """Hyper-parameters of one retraining run (defaults: Fashion-MNIST on a small CPU)."""

    epochs: int = 15
    batch_size: int = 128
    lr: float = 0.1                # peak learning rate, reached after the warm-up
    warmup_epochs: float = 1.0
    momentum: float = 0.9
    weight_decay: float = 4e-5
    label_smoothing: float = 0.1
    dropout: float = 0.1
    augment: str = "crop_flip"     # "crop_flip" (pad + random crop + horizontal flip) or "none"
    pad: int = 2                   # padding before the random crop, in pixels
    seed: int = 0
    steps_per_epoch: int = None    # None: one pass over the train split
    val_examples: int = 0          # held out from train for ModelCheckpoint's "best" (0: none)
    deterministic: bool = False    # TF op determinism: a resumed run ends with the uninterrupted run's weights
    checkpoint_every: int = 100    # resume checkpoint every this many steps (and at every epoch end)
    cpu_kernels: bool = True       # on a CPU-only host: cpu_kernels.accelerate (same maths, ~1.5x faster steps)


@dataclasses.dataclass
class Splits:
    """Normalised float32 NHWC images and int labels, plus what an app needs to reproduce them."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    mean: tuple
    std: tuple
    labels: list


# ---- learning rate ----------------------------------------------------------------------

def lr_schedule(cfg, steps_per_epoch):
    """Linear warm-up from 0 to cfg.lr, then cosine decay to 0 over the remaining steps."""
    total = max(1, int(cfg.epochs * steps_per_epoch))
    warm = min(int(cfg.warmup_epochs * steps_per_epoch), total - 1)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0, decay_steps=max(1, total - warm), alpha=0.0,
        warmup_target=cfg.lr, warmup_steps=warm)


def make_optimizer(cfg, steps_per_epoch):
    opt = keras.optimizers.SGD(learning_rate=lr_schedule(cfg, steps_per_epoch), momentum=cfg.momentum,
                               nesterov=True, weight_decay=cfg.weight_decay)
    # Decay only kernels: BN scales/shifts and biases are not regularised (official recipe).
    opt.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    return opt


# ---- data pipeline ----------------------------------------------------------------------

def _augment_batch_fn(cfg, shape):
    """Crop and flip a whole batch at once, seeded by (seed, the batch's place in the stream).

    Batch-wise (one pad, two gathers, one select) rather than per image: on 2 cores the
    per-image version cost 21 ms of CPU per batch of 128 beside a ~300 ms training step.
    Seeded by position, so the batches at a position do not depend on where the process
    started (a resumed run).
    """
    from proxyless_tf.data.datasets import mix_seed

    h, w, _ = shape
    pad = int(cfg.pad)
    crop_key, flip_key = mix_seed(cfg.seed, 1), mix_seed(cfg.seed, 2)

    def aug(first, x):
        n = tf.shape(x)[0]
        if pad:
            x = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])  # zero = the normalised pad value 0
            off = tf.random.stateless_uniform((n, 2), tf.stack([crop_key, first]), 0, 2 * pad + 1, tf.int32)
            x = tf.gather(x, off[:, :1] + tf.range(h)[None], axis=1, batch_dims=1)
            x = tf.gather(x, off[:, 1:] + tf.range(w)[None], axis=2, batch_dims=1)
        flip = tf.random.stateless_uniform((n,), tf.stack([flip_key, first])) < 0.5
        return tf.where(flip[:, None, None, None], tf.reverse(x, axis=[2]), x)

    return aug


def train_dataset(x, y, num_classes, cfg, steps=None, epoch=0, step=0):
    """Shuffled, augmented, one-hot (for label smoothing) batches from (epoch, step) to the end.

    Epoch e is a permutation seeded by (seed, e) and each augmentation is seeded by its
    place in the stream, so the batches at a position do not depend on whether the process
    started there (a resumed run) or at the beginning. Only indices go through the
    element-wise part of the pipeline; images are gathered and augmented a batch at a time.
    """
    from proxyless_tf.data.datasets import epoch_elements

    if cfg.augment not in ("crop_flip", "none"):
        raise ConfigError("<train config>", "augment", f"unknown augmentation {cfg.augment!r}",
                          "use 'crop_flip' or 'none'")
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
        xb = tf.gather(images, idx)
        if aug is not None:
            xb = aug(pos[0], xb)
        return xb, tf.one_hot(tf.gather(labels, idx), num_classes)

    return ds.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def eval_dataset(x, y, num_classes, batch_size=512):
    ds = tf.data.Dataset.from_tensor_slices((x, tf.one_hot(y, num_classes)))
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


# ---- the run ----------------------------------------------------------------------------

def compile_model(model, cfg, steps_per_epoch):
    model.compile(
        optimizer=make_optimizer(cfg, steps_per_epoch),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=cfg.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
    return model


def tensorboard_available():
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """`ModelCheckpoint` that never leaves a half-written file: each save goes to a temporary
    file beside the target (`best.tmp.keras`), then `os.replace` puts it in place, so a kill
    during the write leaves the previous best. (Keras writes the target in place.)"""

    def _save_model(self, epoch, batch, logs):
        target = self._get_file_path(epoch, batch, logs)  # placeholders ({epoch}, ...) filled
        tmp = self._tmp_of(target)
        if os.path.exists(tmp):
            os.remove(tmp)  # a killed save's leftover must not be renamed into place below
        final = self.filepath
        self.filepath = self._tmp_of(final)
        try:
            super()._save_model(epoch, batch, logs)  # saves only on an improvement (save_best_only)
        finally:
            self.filepath = final
        if os.path.exists(tmp):
            os.replace(tmp, target)

    @staticmethod
    def _tmp_of(path):
        """best.keras -> best.tmp.keras (Keras checks the extension: .keras, .h5, .weights.h5)."""
        if path.endswith(".weights.h5"):
            return path[:-len(".weights.h5")] + ".tmp.weights.h5"
        stem, ext = os.path.splitext(path)
        return f"{stem}.tmp{ext}"


def make_callbacks(run_dir, has_val, best=None, append=False):
    """best.keras (written atomically), TensorBoard and a CSV log (resuming is `train`'s business, `resume.py`).

    `best`: the best monitored value so far (a resumed run must not overwrite best.keras
    with a worse epoch); `append`: continue the CSV log of a resumed run.
    TensorBoard logging needs the `tensorboard` package, which TF 2.21 no longer pulls in;
    without it the run goes on with the CSV log alone instead of failing at the first epoch.
    """
    monitor = "val_accuracy" if has_val else "accuracy"
    cbs = [
        AtomicModelCheckpoint(os.path.join(run_dir, "best.keras"), monitor=monitor,
                              mode="max", save_best_only=True, initial_value_threshold=best),
        keras.callbacks.CSVLogger(os.path.join(run_dir, "train_log.csv"), append=append),
    ]
    if tensorboard_available():
        cbs.append(keras.callbacks.TensorBoard(os.path.join(run_dir, "tensorboard"), update_freq="epoch",
                                               write_graph=False, profile_batch=0))
    else:
        print("note: `tensorboard` is not installed; logging to train_log.csv only "
              "(pip install tensorboard to get TensorBoard logs)")
    return cbs


PROGRESS = ("bar", "lines", "none")


def train(arch, splits, cfg, run_dir, progress="lines", log_every=100, strategy=None, verbose=None):
    """Build the network of `arch`, fit it on `splits`, evaluate on the test split, save it.

    `progress`: "bar" (Keras's progress bar, for a terminal), "lines" (a line every `log_every`
    steps and one per epoch, for a log file) or "none". `verbose` (Keras's 0/1/2), if given,
    overrides it: 0 none, 1 bar, 2 Keras's own line per epoch.

    Returns a dict with the test loss/accuracy, the path of the saved `.keras` model and the
    number of epochs run. A run killed and started again with the same `run_dir` and config
    resumes from its last checkpoint (every `cfg.checkpoint_every` steps and every epoch end;
    `resume.py`) on the same data order; with `cfg.deterministic` it ends with the same weights.

    With a `tf.distribute` `strategy` the model and its optimizer are created in its scope
    and `cfg.batch_size` is the global batch (Keras splits it across the replicas; its loss
    objects scale by 1/num_replicas themselves). On a multi-worker run only the chief
    writes `run_dir`; the other workers write `run_dir/workers/<task>`.
    """
    import dataclasses

    from proxyless_tf.runtime import distribute
    from proxyless_tf.runtime import resume
    from proxyless_tf.models.nets import build_model

    if progress not in PROGRESS:
        raise ConfigError("<train config>", "progress", f"unknown progress display {progress!r}",
                          f"use one of {', '.join(PROGRESS)}")
    strategy = strategy or tf.distribute.get_strategy()
    run_dir = distribute.worker_dir(run_dir, strategy)
    os.makedirs(run_dir, exist_ok=True)
    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        resume.enable_determinism(cfg.seed)
    x, y = splits.x_train, splits.y_train
    val = None
    if cfg.val_examples:
        x, y = x[:-cfg.val_examples], y[:-cfg.val_examples]
        val = eval_dataset(splits.x_train[-cfg.val_examples:], splits.y_train[-cfg.val_examples:],
                           splits.num_classes)
    steps = cfg.steps_per_epoch or len(x) // cfg.batch_size
    if steps < 1:
        raise ConfigError("<train config>", "batch_size", f"{cfg.batch_size} is larger than the "
                          f"{len(x)} training examples", "use a smaller batch size")
    with strategy.scope():
        model = build_model(arch, splits.num_classes, dropout=cfg.dropout)
        if cfg.cpu_kernels:
            from proxyless_tf.layers import cpu_kernels
            cpu_kernels.accelerate(model)
        compile_model(model, cfg, steps)
    distribute.fix_multi_worker_fit(model, strategy)
    fingerprint = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("checkpoint_every", "cpu_kernels")}
    fingerprint.update(arch=arch.to_dict() if hasattr(arch, "to_dict") else list(arch.ops), num_train=len(x),
                       num_classes=splits.num_classes)
    state = resume.ResumeState(os.path.join(run_dir, "resume"), fingerprint)
    meta = state.load()
    start_epoch, start_step, metrics, best = 0, 0, None, None
    if meta:
        metrics = state.restore(model, meta)
        start_epoch, start_step, best = meta["epoch"], meta["step"], meta["extra"].get("best")
        _truncate_log(os.path.join(run_dir, "train_log.csv"), start_epoch)
        print(f"train: resuming {run_dir} at epoch {start_epoch + 1} step {start_step} (of {steps})", flush=True)
    cbs = make_callbacks(run_dir, val is not None, best=best, append=meta is not None)
    saver = resume.make_callback(state, steps, cfg.checkpoint_every, start_epoch, start_step, metrics,
                                 extra_fn=lambda: {"best": _finite_or_none(cbs[0].best)})
    if getattr(strategy, "watchdog", None) is not None:
        cbs.append(distribute.cluster_joined_callback(strategy.watchdog))
    if verbose is None:
        verbose = 1 if progress == "bar" else 0
        if progress == "lines":
            from proxyless_tf import messages

            cbs.append(messages.progress_lines(cfg.epochs, steps, log_every, start_epoch, start_step))
    with distribute.worker_loss_as_error(strategy, state):
        resume.fit_resumable(model, lambda e, s: distribute.for_strategy(
                                 train_dataset(x, y, splits.num_classes, cfg, steps, e, s), strategy),
                             cfg.epochs, steps, cbs + [saver], start_epoch, start_step, verbose=verbose,
                             validation_data=val)
    loss, acc = model.evaluate(eval_dataset(splits.x_test, splits.y_test, splits.num_classes), verbose=0)
    path = os.path.join(run_dir, "model.keras")
    tmp = os.path.join(run_dir, f"model.tmp{os.getpid()}.keras")
    model.save(tmp)  # then renamed: a crash while saving never leaves a half-written model.keras
    os.replace(tmp, path)
    state.clear()  # finished: the same command now trains afresh
    return {"test_loss": float(loss), "test_accuracy": float(acc), "model_path": path, "epochs": cfg.epochs}


def _finite_or_none(v):
    """ModelCheckpoint's best so far as JSON: None before its first epoch (or while infinite)."""
    if v is None:
        return None
    v = float(v)
    return v if np.isfinite(v) else None


def _truncate_log(path, epochs):
    """Keep the CSV header and the rows of the `epochs` epochs the resumed checkpoint includes."""
    if os.path.exists(path):
        with open(path) as f:
            lines = f.readlines()
        with open(path, "w") as f:
            f.writelines(lines[:1 + epochs])


# ---- data: the train and test splits as arrays, read with proxyless_tf.data.idx --------------------

FASHION_MNIST_LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                        "Sneaker", "Bag", "Ankle boot"]
DATASET_INPUT_SHAPES = {"fashion_mnist": (28, 28, 1)}
FASHION_TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def normalise(images_u8, mean, std):
    """uint8 NHW(C) -> float32 NHWC, (x/255 - mean) / std: the input every exported model expects."""
    x = images_u8.astype(np.float32) / 255.0
    if x.ndim == 3:
        x = x[..., None]
    return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def load_fashion_mnist(data_dir=None):
    """The real Fashion-MNIST (60,000 train / 10,000 test) from its IDX files, normalised.

    Retraining and export need the test split too, which the search's `data.search_data`
    never touches; the files are found and read by `proxyless_tf.data.idx`.
    """
    from proxyless_tf.data import idx as data
    from proxyless_tf.data.labels import check_labels
    from proxyless_tf.data.normalization import NORMALIZATION

    d = data.find_fashion_dir(data_dir)
    if d is None or not all(os.path.exists(os.path.join(d, f)) for f in FASHION_TEST_FILES):
        raise ConfigError(data_dir or data.FASHION_DIRS[0], "--data_dir", "Fashion-MNIST IDX files not found "
                          f"({', '.join(data.FASHION_FILES + FASHION_TEST_FILES)})",
                          "install Debian's dataset-fashion-mnist or pass --data_dir=DIR with those files")
    xtr, ytr = data.load_fashion_local(d)
    xte = data.read_idx(os.path.join(d, FASHION_TEST_FILES[0]))
    yte = data.read_idx(os.path.join(d, FASHION_TEST_FILES[1]))
    check_labels(yte, 10, os.path.join(d, FASHION_TEST_FILES[1]), len(xte))
    mean, std = NORMALIZATION["fashion_mnist"]
    return Splits(normalise(xtr, mean, std), ytr.astype(np.int32), normalise(xte, mean, std),
                  yte.astype(np.int32), 10, mean, std, list(FASHION_MNIST_LABELS))


def load_dataset(name, data_dir=None, train_examples=None):
    """Train/test splits of a dataset by name (the offline Fashion-MNIST; others: not yet)."""
    if name != "fashion_mnist":
        raise ConfigError("<flags>", "--dataset", f"retraining supports only fashion_mnist so far, not {name!r}",
                          "use --dataset=fashion_mnist, or call training.train() with your own Splits")
    splits = load_fashion_mnist(data_dir)
    if train_examples:
        splits.x_train, splits.y_train = splits.x_train[:train_examples], splits.y_train[:train_examples]
    return splits
