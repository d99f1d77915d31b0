"""The retraining run's settings, and the checks that reject a bad one before anything runs.

The checks live with the config, not in the CLI, so `training.train(...)` called from Python
refuses `batch_size=0` or `seed=-1` with the same one line as `python -m proxyless_tf.train`,
and before the run directory exists.
"""

import dataclasses
import math

from proxyless_tf.errors import ConfigError

AUGMENTS = ("none", "crop_flip", "inception")
MAX_BATCH = 65536          # far above any accelerator's batch; beyond it a typo, not a setting
MAX_EPOCHS = 100_000
MAX_SEED = 2 ** 31 - 1     # what tf.random's stateless seeds and numpy take without wrapping


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
    augment: str = "crop_flip"     # "crop_flip" (pad + random crop + flip), "inception" (random-resized crop
                                   # + flip: ImageNet), or "none"
    pad: int = 2                   # padding before the random crop of "crop_flip", in pixels
    seed: int = 0
    steps_per_epoch: int = None    # None: one pass over the train split
    train_examples: int = None     # use only the first N training images (smoke runs); None: all
    val_examples: int = 0          # held out from train for ModelCheckpoint's "best" (0: none)
    shuffle_buffer: int = 2000     # streamed sources: images in the shuffle buffer (in memory: whole epochs)
    deterministic: bool = False    # TF op determinism: a resumed run ends with the uninterrupted run's weights
    checkpoint_every: int = 100    # resume checkpoint every this many steps (and at every epoch end)
    cpu_kernels: bool = True       # on a CPU-only host: cpu_kernels.accelerate (same maths, ~1.5x faster steps)

    def check(self, source="<train config>", prefix=""):
        """Every field in its range, or one ConfigError naming it (`prefix`: "--" for flags)."""
        def bad(name, problem, fix=None):
            raise ConfigError(source, f"{prefix}{name}", problem, fix or f"pass a valid {prefix}{name}")

        def integer(name, lo, hi, none_ok=False):
            v = getattr(self, name)
            if v is None and none_ok:
                return
            if isinstance(v, bool) or not isinstance(v, int):
                bad(name, f"expected an integer, got {v!r}")
            if v < lo:
                bad(name, f"must be at least {lo}, got {v}")
            if v > hi:
                bad(name, f"{v} is more than the {hi} allowed (a typo?)")

        def number(name, lo, hi):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
                bad(name, f"{v} is not in [{lo}, {hi:g}]")

        integer("epochs", 1, MAX_EPOCHS)
        integer("batch_size", 1, MAX_BATCH)
        integer("seed", 0, MAX_SEED)
        integer("pad", 0, 64)
        integer("steps_per_epoch", 1, 10 ** 9, none_ok=True)
        integer("train_examples", 1, 10 ** 10, none_ok=True)
        integer("val_examples", 0, 10 ** 9)
        integer("shuffle_buffer", 1, 10 ** 7)
        integer("checkpoint_every", 0, 10 ** 9)
        for name, lo, hi in (("lr", 0, 100), ("warmup_epochs", 0, MAX_EPOCHS), ("momentum", 0, 0.9999),
                             ("weight_decay", 0, 1), ("label_smoothing", 0, 1), ("dropout", 0, 0.999)):
            number(name, lo, hi)
        if self.augment not in AUGMENTS:
            bad("augment", f"unknown augmentation {self.augment!r}", f"use one of {', '.join(AUGMENTS)}")
        return self
