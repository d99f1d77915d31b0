"""The search's Keras callbacks: a guard that stops at NaN/inf or a diverging α, a checkpoint
written only while the numbers are finite, and the per-epoch α history."""

import math
import os

import numpy as np

from proxyless_tf import files as files_lib
from proxyless_tf.errors import ConfigError

WATCHED = ("loss", "arch_loss", "expected_ms")


def _finite(logs, names=WATCHED):
    for n in names:
        if n in (logs or {}):
            v = float(np.asarray(logs[n]))
            if not math.isfinite(v):
                return n, v
    return None


def alpha_divergence(model, bound):
    """None, or (layer name, max |α|) of the first layer whose α is non-finite or beyond `bound`.

    α of a healthy search stays within a few units (Adam moves it by about arch_lr a step);
    |α| in the tens means the architecture step is running away, and soon exp(α) overflows.
    """
    for m in model.mixed_ops:
        a = np.abs(np.asarray(m.alpha.numpy(), np.float64))
        worst = float(np.max(a))
        if not np.all(np.isfinite(a)) or (bound and worst > bound):
            return m.name, worst
    return None


def make_callbacks(out_dir, alpha_history, max_abs_alpha=50.0):
    """(guard, checkpoint, history) callbacks writing into `out_dir`; `alpha_history` is the list
    the history appends to (a resumed run passes the one its checkpoint kept)."""
    import keras

    class NaNGuard(keras.callbacks.Callback):
        """Stops at the first non-finite loss or diverging α; the checkpoints then refuse to save.

        `bad` is (epoch, step, what, detail); `offset(epoch)` (set by the resume callback)
        gives the batches of a resumed epoch that ran before this process.
        """

        def __init__(self):
            super().__init__()
            self.bad = None
            self.epoch = 0
            self.offset = lambda epoch: 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.bad is not None:
                return
            step = batch + 1 + self.offset(self.epoch)
            bad = _finite(logs)
            if bad:
                self.bad = (self.epoch + 1, step, bad[0], "became NaN/inf")
            else:
                div = alpha_divergence(self.model, max_abs_alpha)
                if div:
                    self.bad = (self.epoch + 1, step, "alpha",
                                f"diverged (max |alpha| {div[1]:.4g} in {div[0]}, bound {max_abs_alpha:g})")
            if self.bad:
                self.model.stop_training = True

    guard = NaNGuard()

    class GoodCheckpoint(keras.callbacks.Callback):
        """Weights, both optimizers and α to checkpoints/last.weights.h5, atomically, while finite."""

        def __init__(self):
            super().__init__()
            self.path = os.path.join(out_dir, "checkpoints", "last.weights.h5")
            self.saved_epoch = None

        def on_epoch_end(self, epoch, logs=None):
            if guard.bad or _finite(logs):
                return
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            tmp = self.path.replace("last.weights.h5", "tmp.weights.h5")
            self.model.save_weights(tmp, overwrite=True)
            os.replace(tmp, self.path)
            self.model.derive_arch().to_json(os.path.join(out_dir, "checkpoints", "arch_last.json"))
            self.saved_epoch = epoch + 1

    class AlphaHistory(keras.callbacks.Callback):
        """Per epoch: α probabilities of every layer, the argmax ops and the epoch's metrics."""

        def on_epoch_end(self, epoch, logs=None):
            alpha_history.append({
                "epoch": epoch + 1,
                "metrics": {k: float(np.asarray(v)) for k, v in (logs or {}).items()},
                "argmax": self.model.derive_arch().ops,
                "probs": self.model.alpha_probs(),
            })
            files_lib.write_json_atomic(os.path.join(out_dir, "alpha_history.json"), alpha_history)

    return guard, GoodCheckpoint(), AlphaHistory()


def check_stopped(guard, ckpt):
    """The guard's stop as one ConfigError naming the step, the last good checkpoint and the fix."""
    if not guard.bad:
        return
    epoch, step, name, what = guard.bad
    where = (f"kept at {ckpt.path} (epoch {ckpt.saved_epoch})" if ckpt.saved_epoch
             else "none was written (it failed in the first epoch)")
    fix = ("lower --arch_lr (or raise --max_abs_alpha) and rerun" if name == "alpha"
           else "lower --weight_lr or --arch_lr and rerun")
    raise ConfigError("<training>", name, f"{what} at epoch {epoch} step {step}; search stopped; "
                      f"last good checkpoint {where}", f"{fix} with another --out_dir")
