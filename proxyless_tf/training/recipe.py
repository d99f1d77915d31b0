"""The retraining recipe: a derived network trained from scratch with plain `model.fit`.

Kept apart from the absl entry point (`proxyless_tf.train`) so a user, a test or a
notebook can run the same recipe with a config object (`training/config.py`) and any
dataset (`training/inputs.py`), no flags. The recipe follows the official ProxylessNAS
retraining: SGD Nesterov, cosine learning rate after a linear warm-up, label smoothing,
weight decay on convolution/dense kernels only (not on BN or biases), augmentation that fits
the dataset (configs/train_*.flags hold the settings per dataset).
"""

import os

import keras
import numpy as np
import tensorflow as tf

from proxyless_tf import files
from proxyless_tf.errors import ConfigError


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


def train(arch, data, cfg, run_dir, progress="lines", log_every=100, strategy=None, verbose=None, num_classes=None,
          data_dir=None, manual_dir=None):
    """Build the network of `arch` for `data`, fit it, evaluate it on the test split, save it.

    `data`: anything `proxyless_tf.data.sources.open_source` takes (a tfds name, an image
    folder, a `tf.data.Dataset` of (image, label), numpy arrays, an `ImageSource`), or the
    `TrainInputs` that `training.inputs.prepare` made of one. The network takes the source's
    images as raw pixels: its first layer is `Normalize(source.mean, source.std)`, so the
    saved `.keras` (and its TFLite export) needs no preprocessing beyond the resize.
    Every check (config, channels, classes, sizes, a resume checkpoint of another run) runs
    before `run_dir` is created or touched.

    `progress`: "bar" (Keras's progress bar, for a terminal), "lines" (a line every `log_every`
    steps and one per epoch, for a log file) or "none". `verbose` (Keras's 0/1/2), if given,
    overrides it: 0 none, 1 bar, 2 Keras's own line per epoch.

    Returns a dict with the test loss/accuracy (None without a test split), the path of the
    saved `.keras` model and the number of epochs run. A run killed and started again with
    the same `run_dir` and config resumes from its last checkpoint (every
    `cfg.checkpoint_every` steps and every epoch end; `resume.py`) on the same data order;
    with `cfg.deterministic` it ends with the same weights.

    With a `tf.distribute` `strategy` the model and its optimizer are created in its scope
    and `cfg.batch_size` is the global batch (Keras splits it across the replicas; its loss
    objects scale by 1/num_replicas themselves). On a multi-worker run only the chief
    writes `run_dir`; the other workers write `run_dir/workers/<task>`.
    """
    import dataclasses

    from proxyless_tf.data import damaged
    from proxyless_tf.runtime import distribute
    from proxyless_tf.runtime import resume
    from proxyless_tf.models.nets import build_model
    from proxyless_tf.training import inputs as inputs_lib

    if progress not in PROGRESS:
        raise ConfigError("<train config>", "progress", f"unknown progress display {progress!r}",
                          f"use one of {', '.join(PROGRESS)}")
    files.check_output_dir(run_dir)
    cfg.check()
    inputs = data if isinstance(data, inputs_lib.TrainInputs) else inputs_lib.prepare(
        arch, data, cfg, num_classes=num_classes, data_dir=data_dir, manual_dir=manual_dir)
    strategy = strategy or tf.distribute.get_strategy()
    run_dir = distribute.worker_dir(run_dir, strategy)
    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        resume.enable_determinism(cfg.seed)
    steps = inputs.steps
    with strategy.scope():
        model = build_model(arch, inputs.num_classes, dropout=cfg.dropout, normalization=inputs.normalization)
        if cfg.cpu_kernels:
            from proxyless_tf.layers import cpu_kernels
            cpu_kernels.accelerate(model)
        compile_model(model, cfg, steps)
    distribute.fix_multi_worker_fit(model, strategy)
    fingerprint = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("checkpoint_every", "cpu_kernels")}
    fingerprint.update(arch=arch.to_dict() if hasattr(arch, "to_dict") else list(arch.ops), **inputs.fingerprint())
    state = resume.ResumeState(os.path.join(run_dir, "resume"), fingerprint)
    meta = state.load()  # reads only: a foreign or damaged checkpoint fails here, run_dir untouched
    val = inputs.val_batches()
    os.makedirs(run_dir, exist_ok=True)
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
        resume.fit_resumable(model, lambda e, s: distribute.for_strategy(inputs.train_batches(e, s), strategy),
                             cfg.epochs, steps, cbs + [saver], start_epoch, start_step, verbose=verbose,
                             validation_data=val)
    test = inputs.test_batches()
    loss, acc = model.evaluate(test, verbose=0) if test is not None else (None, None)
    damaged.report(inputs.source)  # files the stream skipped as undecodable: one note line
    path = os.path.join(run_dir, "model.keras")
    tmp = os.path.join(run_dir, f"model.tmp{os.getpid()}.keras")
    model.save(tmp)  # then renamed: a crash while saving never leaves a half-written model.keras
    os.replace(tmp, path)
    state.clear()  # finished: the same command now trains afresh
    mean, std = inputs.normalization
    return {"test_loss": _float_or_none(loss), "test_accuracy": _float_or_none(acc), "model_path": path,
            "epochs": cfg.epochs, "num_test": inputs.num_test, "num_train": inputs.num_train,
            "num_classes": inputs.num_classes, "input_shape": list(inputs.input_shape),
            "dataset": str(inputs.source.name), "class_names": inputs.class_names,
            "normalization": {"mean": list(mean), "std": list(std)}, "augment": cfg.augment,
            "eval_style": inputs.eval_style}


def _float_or_none(v):
    return None if v is None else float(v)


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
