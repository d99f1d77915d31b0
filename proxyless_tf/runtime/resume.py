"""Kill and resume a `fit` exactly: the whole training state at a step, written atomically.

Why not `keras.callbacks.BackupAndRestore`: it writes `latest.weights.h5` in place (a kill
during the write leaves a file that cannot be read), and with `save_freq=N` it restores
mid-epoch weights but restarts the epoch from its first batch, so batches are seen twice.
It also misses state that `.weights.h5` files leave out: the `SeedGenerator` states (the
supernet's path sampling, dropout) and the metric accumulators (the epoch's averages).

Here a checkpoint is (epoch, step) plus:
- `state-E-S.weights.h5`: weights and every optimizer (Keras writes every `Optimizer`
  attribute of the model, so the supernet's α optimizer too);
- `state-E-S.npz`: the `SeedGenerator` states and the metric variables;
- `state.json`: the pointer to both, the run's configuration and caller data (the α
  history, ...), replaced atomically last, so a kill at any moment leaves either the old or
  the new checkpoint, never half of one.

A resumed fit starts at exactly that step: `fit_resumable` finishes the partial epoch with
a first `fit(steps_per_epoch=steps - step)` and runs the remaining epochs in a second. The
data must then be a function of (epoch, step) (`make_dataset(epoch, step)`), which
`data.search_data` and `training.train_stream` provide.
"""

import json
import os

import numpy as np

from proxyless_tf.errors import ConfigError

STATE = "state.json"


def enable_determinism(seed):
    """Same seed, same numbers: seeds Python/NumPy/TF and makes TF pick deterministic kernels.

    `enable_op_determinism` costs speed only where an op has a faster non-deterministic
    kernel (on CPU: few; on GPU: scatter/segment reductions, some convolution backprops).
    """
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def rng_variables(model):
    """State variables of every `SeedGenerator` in `model` (layers' sampling, dropout)."""
    out, seen = [], set()
    for layer in model._flatten_layers(include_self=True, recursive=True):
        for sg in getattr(layer, "_seed_generators", []) or []:
            if id(sg.state) not in seen:
                seen.add(id(sg.state))
                out.append(sg.state)
    return out


def metric_variables(model):
    return [v for m in model.metrics for v in m.variables]


def load_failure_reason(error, path):
    """The line of a load error that says why: a weights file from before nested candidates'
    batch norms were concatenated (`layers/nested.py`) says so; otherwise Keras' "A total of N
    objects could not be loaded" is followed by its first object's own error, which names the
    layer and the mismatch."""
    if old_nested_layout(path):
        return ("written by a version with a batch-norm layer per nested candidate (before 2026-12-08); "
                "this one holds them concatenated per role")
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("A total of"):
        return lines[1]
    return lines[0] if lines else ""


def old_nested_layout(path):
    """Whether the .weights.h5 file at `path` holds nested candidates' per-candidate BN layers."""
    import h5py

    found = []
    try:
        with h5py.File(path, "r") as f:
            f.visit(lambda name: found.append(name) if name.endswith("nested/bn_layers") else None)
    except (OSError, ValueError):
        return False
    return bool(found)


class ResumeState:
    """The checkpoint of one run directory (`directory`), tied to the run's `config` dict.

    A checkpoint written for another configuration is refused with one line that names the
    differing fields: resuming it would mix two runs.
    """

    def __init__(self, directory, config):
        self.dir = directory
        self.config = json.loads(json.dumps(config, default=str))
        self.path = os.path.join(directory, STATE)

    def load(self):
        """The checkpoint's metadata dict, or None when there is none.

        Everything a resume will read is checked here, before the run touches its directory: a
        `state.json` that is not an object or lacks a field, a checkpoint file it names that is
        missing or damaged (a truncated `.weights.h5`) is one line that says to start over.
        """
        from proxyless_tf import readers

        if not os.path.lexists(self.path):
            return None
        fix = f"delete {self.dir} to start over"
        try:
            meta = readers.read_json_object(self.path, "resume state", fix=fix)
        except ConfigError as e:
            raise ConfigError(self.path, e.field, f"resume state is unreadable ({e.problem})", fix) from None
        if not isinstance(meta.get("config"), dict):
            raise ConfigError(self.path, "config", f"expected a JSON object, got {type(meta.get('config')).__name__}",
                              fix)
        changed = sorted(k for k in set(meta["config"]) | set(self.config)
                         if meta["config"].get(k) != self.config.get(k))
        if changed:
            raise ConfigError(self.path, "config", "this run directory holds a resumable run of another command "
                              f"(differs in {', '.join(changed)})",
                              f"rerun with the same flags, use another output directory, or delete {self.dir}")
        for name, kind in (("epoch", int), ("step", int), ("weights", str), ("arrays", str), ("extra", dict)):
            v = meta.get(name)
            if not isinstance(v, kind) or isinstance(v, bool) or (kind is int and v < 0):
                want = "a non-negative integer" if kind is int else f"a JSON {'object' if kind is dict else 'string'}"
                raise ConfigError(self.path, name, f"expected {want}, got {type(v).__name__} {str(v)[:40]}", fix)
        for name in ("weights", "arrays"):
            if os.path.basename(meta[name]) != meta[name] or meta[name] in ("", ".", ".."):
                raise ConfigError(self.path, name, f"{meta[name][:80]!r} is not a file name inside {self.dir}", fix)
        readers.check_h5(os.path.join(self.dir, meta["weights"]), "checkpoint weights file", fix)
        readers.check_regular(os.path.join(self.dir, meta["arrays"]), "checkpoint arrays file", fix=fix)
        return meta

    def restore(self, model, meta):
        """Weights, optimizers and SeedGenerator states into `model`; returns the metric arrays."""
        opt = getattr(model, "optimizer", None)
        if opt is not None and not opt.built:
            opt.build(model.trainable_variables)
        fix = f"delete {self.dir} to start over"
        weights, arrays_path = os.path.join(self.dir, meta["weights"]), os.path.join(self.dir, meta["arrays"])
        try:
            model.load_weights(weights)
        except Exception as e:  # keras/h5py raise many types for a damaged or foreign file
            raise ConfigError(weights, "<file>", f"checkpoint weights cannot be loaded ({type(e).__name__}: "
                              f"{load_failure_reason(e, weights)[:160]})", fix) from None
        try:
            arrays = dict(np.load(arrays_path, allow_pickle=False))
            num_rng, num_metrics = int(arrays["num_rng"]), int(arrays["num_metrics"])
            rng_arrays = [arrays[f"rng{i}"] for i in range(num_rng)]
            metric_arrays = [arrays[f"metric{i}"] for i in range(num_metrics)]
        except Exception as e:  # zipfile/numpy errors for a truncated .npz, KeyError for a foreign one
            raise ConfigError(arrays_path, "<file>", f"checkpoint arrays cannot be loaded ({type(e).__name__})",
                              fix) from None
        rng = rng_variables(model)
        if len(rng) != num_rng:
            raise ConfigError(self.path, "rng", f"{len(rng)} random generators, the checkpoint has "
                              f"{num_rng}", fix)
        for v, a in zip(rng, rng_arrays):
            v.assign(a)
        return metric_arrays

    def save(self, model, epoch, step, extra=None):
        """Checkpoint after `step` batches of `epoch` (step 0: the epoch has not started)."""
        import keras

        os.makedirs(self.dir, exist_ok=True)
        tag = f"{epoch:05d}-{step:08d}"
        weights, arrays = f"state-{tag}.weights.h5", f"state-{tag}.npz"
        tmp = os.path.join(self.dir, f"tmp-{tag}.weights.h5")
        model.save_weights(tmp, overwrite=True)
        os.replace(tmp, os.path.join(self.dir, weights))
        rng, mets = rng_variables(model), metric_variables(model)
        data = {f"rng{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(rng)}
        data.update({f"metric{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(mets)})
        with open(os.path.join(self.dir, "tmp.npz"), "wb") as f:
            np.savez(f, num_rng=len(rng), num_metrics=len(mets), **data)
        os.replace(os.path.join(self.dir, "tmp.npz"), os.path.join(self.dir, arrays))
        meta = {"epoch": int(epoch), "step": int(step), "weights": weights, "arrays": arrays,
                "config": self.config, "extra": extra or {}}
        with open(self.path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(meta, f)
        os.replace(self.path + ".tmp", self.path)
        for name in os.listdir(self.dir):  # older checkpoints, and temporaries of a killed save
            if name not in (STATE, weights, arrays) and (name.startswith("state-") or name.startswith("tmp")):
                os.remove(os.path.join(self.dir, name))

    def clear(self):
        """Remove the checkpoint (after a finished run, so the same command runs afresh)."""
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)


def make_callback(state, steps, every, start_epoch, start_step, metrics=None, extra_fn=None, ok_fn=None):
    """A callback that writes `state` every `every` steps and at every epoch end.

    `metrics`: the arrays `ResumeState.restore` returned, put back at the first epoch's
    start (after `fit` reset them), so the resumed epoch's averages are the uninterrupted
    run's. `extra_fn()`: JSON data stored with each checkpoint; `ok_fn()`: False skips a
    save (the numbers went bad; the last good checkpoint stays).
    """
    import keras

    class Resume(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epoch = start_epoch
            self.pending = metrics

        def offset(self, epoch):
            """Batches of `epoch` done before this fit started (the partial epoch of a resume)."""
            return start_step if epoch == start_epoch else 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
            if self.pending is not None:
                for v, a in zip(metric_variables(self.model), self.pending):
                    v.assign(a)
                if self.offset(epoch) == 0:  # an epoch-boundary checkpoint: averages start afresh
                    for m in self.model.metrics:
                        m.reset_state()
                self.pending = None

        def _save(self, epoch, step):
            if ok_fn is None or ok_fn():
                state.save(self.model, epoch, step, extra_fn() if extra_fn else None)

        def on_train_batch_end(self, batch, logs=None):
            step = batch + 1 + self.offset(self.epoch)
            if every and step < steps and (self.epoch * steps + step) % every == 0:
                self._save(self.epoch, step)

        def on_epoch_end(self, epoch, logs=None):
            self._save(epoch + 1, 0)

    return Resume()


def fit_resumable(model, make_dataset, epochs, steps, callbacks, start_epoch=0, start_step=0, verbose=1, **kwargs):
    """`fit` from (start_epoch, start_step) to the end: the partial epoch first, then the rest.

    `make_dataset(epoch, step)` must yield exactly the batches from that point to the end of
    training, the same ones an uninterrupted run sees there. `kwargs` go to both `fit` calls.
    `shuffle` is off unless asked for: the dataset is already shuffled (by epoch seed, so that a
    resumed run sees the same order), and Keras warns on every `fit` that it ignores it otherwise.
    """
    kwargs.setdefault("shuffle", False)
    if start_step:
        model.fit(make_dataset(start_epoch, start_step), initial_epoch=start_epoch, epochs=start_epoch + 1,
                  steps_per_epoch=steps - start_step, callbacks=callbacks, verbose=verbose, **kwargs)
        if model.stop_training:
            return
        start_epoch += 1
    if start_epoch < epochs:
        model.fit(make_dataset(start_epoch, 0), initial_epoch=start_epoch, epochs=epochs, steps_per_epoch=steps,
                  callbacks=callbacks, verbose=verbose, **kwargs)
