"""What commands print for a user: paths and commands to paste, durations, metrics, and the
progress of a fit as plain lines for a log file (a terminal gets Keras's bar instead)."""

import os
import shlex


def shown_path(path):
    """A path as a user would type it from here: relative when under the working directory."""
    path = os.path.abspath(path)
    rel = os.path.relpath(path, os.getcwd())
    return path if rel.startswith(os.pardir) else rel


def command(*words):
    """A shell command line, each word quoted as needed (paths with spaces survive a paste)."""
    return " ".join(shlex.quote(str(w)) for w in words)


def tool_command(script, *args):
    """`python tools/SCRIPT ARGS`: the project's tools/ folder as seen from the working directory."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", script)
    if not os.path.exists(path):  # an installed package: the tools are in the project's checkout
        return command("python", f"tools/{script}", *args) + "   # in a checkout of proxyless_tf"
    return command("python", shown_path(path), *args)


def duration(seconds):
    """12 s, 3 min 05 s, 1 h 02 min: how long something took, at the precision a reader wants."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def metrics_text(logs):
    """`loss 0.512  accuracy 0.8125  val_accuracy 0.8` from a Keras logs dict (the learning rate left out)."""
    logs = logs or {}
    keys = [k for k in ("loss", "accuracy") if k in logs] + sorted(k for k in logs if k.startswith("val_"))
    return "  ".join(f"{k} {float(logs[k]):.4g}" for k in keys)


# ---- progress of a fit, as lines for a log file (a terminal gets Keras's bar instead) ------

def progress_lines(epochs, steps, every, start_epoch=0, start_step=0):
    """A Keras callback: a line every `every` steps (0: none) and one at each epoch's end.

    `start_epoch`/`start_step`: where a resumed fit starts, so steps are counted in the epoch
    (Keras restarts its batch index at 0 in the partial epoch of a resume).
    """
    import time

    import keras

    class ProgressLines(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch, self.t0 = epoch, time.perf_counter()
            self.first = start_step if epoch == start_epoch else 0

        def on_train_batch_end(self, batch, logs=None):
            step = self.first + batch + 1
            if every and step % every == 0 and step < steps:
                per_step = (time.perf_counter() - self.t0) / (batch + 1)
                print(f"epoch {self.epoch + 1}/{epochs}  step {step}/{steps}  {metrics_text(logs)}  "
                      f"({per_step:.3g} s/step, epoch ends in {duration(per_step * (steps - step))})", flush=True)

        def on_epoch_end(self, epoch, logs=None):
            print(f"epoch {epoch + 1}/{epochs}  done in {duration(time.perf_counter() - self.t0)}  "
                  f"{metrics_text(logs)}", flush=True)

    return ProgressLines()
