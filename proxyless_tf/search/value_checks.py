"""The bounds of a search's numbers: the type, sign and size checks of `SearchConfig`'s values.

Why bounds and not only signs: a flag is any integer absl parses, and a few values a user can
type would not fail but exhaust the machine (a batch of 10**9 images is built whole; the
validation stream cycles, so it is built even from a small split), hang it (10**9 REINFORCE
draws per update) or overflow TensorFlow's int32 deep inside a step (a seed, a step count).
Every bound is far beyond real use and each error line names the flag and a sensible value.
`config.check_values` calls `check_numbers` first, so the later checks compare real numbers.
"""

import dataclasses
import math

from proxyless_tf import space as space_lib
from proxyless_tf.errors import ConfigError

MAX_INT = 2**31 - 1  # every integer of a search reaches TensorFlow (steps, batch sizes, seeds) as int32 at most
MAX_SEED = MAX_INT - 1024  # layer i samples with seed + i: every derived seed stays an int32 too
MAX_BATCH = 1 << 16  # one batch is materialised whole (the validation stream cycles: any size would be built)
MAX_CPU_DEVICES = 64
MAX_REINFORCE_SAMPLES = 1024  # architectures run on one validation batch per update, one after the other
MAX_DERIVE_SAMPLES = 10_000  # networks drawn at once and each scored on the validation split (seconds each)


def check_numbers(cfg):
    """Raise ConfigError (naming the flag) for the first number of `cfg` (a `SearchConfig`) out of its bounds."""
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if f.type is float and v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                                                  or not math.isfinite(v)):
            raise _bad(f.name, f"must be a finite number, got {v!r}", f"pass a valid --{f.name}")
        if f.type is int and v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            raise _bad(f.name, f"must be a whole number, got {v!r}", f"pass an integer --{f.name}")
        if f.type is int and v is not None and abs(v) > MAX_INT:
            raise _bad(f.name, f"{v} is beyond the largest integer a search uses ({MAX_INT})",
                       f"pass a smaller --{f.name}")
    for name in ("batch_size", "valid_batch_size", "valid_size", "max_train", "steps_per_epoch", "arch_every",
                 "resolution", "latency_resolution", "latency_num_classes", "table_threads"):
        v = getattr(cfg, name)
        if v is not None and v < 1:
            raise _bad(name, f"must be at least 1, got {v}", f"pass a positive --{name}")
    for name in ("batch_size", "valid_batch_size"):
        v = getattr(cfg, name)
        if v is not None and v > MAX_BATCH:
            raise _bad(name, f"{v} images in one batch is more than the {MAX_BATCH} a search can hold",
                       f"pass a --{name} of at most {MAX_BATCH} (e.g. 64 to 1024)")
    if not 0 <= cfg.seed <= MAX_SEED:
        raise _bad("seed", f"must be between 0 and {MAX_SEED}, got {cfg.seed}", "pass e.g. --seed=0")
    if cfg.latency_num_classes is not None:
        space_lib.check_num_classes(cfg.latency_num_classes, field="--latency_num_classes")
    if cfg.verbose not in (0, 1, 2):
        raise _bad("verbose", f"must be 0, 1 or 2 (Keras fit's verbosity), got {cfg.verbose}", "pass --verbose=2")
    for name in ("checkpoint_every", "cluster_timeout"):
        if getattr(cfg, name) < 0:
            raise _bad(name, f"must be >= 0, got {getattr(cfg, name)}", f"pass 0 (see --helpfull) or a positive "
                       f"--{name}")
    if cfg.max_abs_alpha is not None and (not math.isfinite(cfg.max_abs_alpha) or cfg.max_abs_alpha < 0):
        raise _bad("max_abs_alpha", f"must be a finite number >= 0, got {cfg.max_abs_alpha}",
                   "pass 0 (only non-finite alpha stops the search) or a bound such as 50")
    if cfg.reinforce_samples is not None and cfg.reinforce_samples > MAX_REINFORCE_SAMPLES:
        raise _bad("reinforce_samples", f"{cfg.reinforce_samples} architectures per update is more than the "
                   f"{MAX_REINFORCE_SAMPLES} allowed", "pass e.g. 10 (the official code's rl_batch_size)")
    # what Keras's optimizers take (SGD refuses a momentum outside [0, 1] only once TensorFlow has loaded;
    # Adam divides by 1 - beta2^t, 0 at beta2 = 1)
    if not 0.0 <= cfg.weight_momentum <= 1.0:
        raise _bad("weight_momentum", f"must be in [0, 1], got {cfg.weight_momentum}", "pass e.g. 0.9")
    if not 0.0 <= cfg.arch_beta2 < 1.0:
        raise _bad("arch_beta2", f"must be in [0, 1), got {cfg.arch_beta2}", "pass e.g. 0.999")
    if cfg.derive_samples > MAX_DERIVE_SAMPLES:
        raise _bad("derive_samples", f"{cfg.derive_samples} networks is more than the {MAX_DERIVE_SAMPLES} allowed",
                   "pass e.g. 20")
    _check_devices(cfg)


def _check_devices(cfg):
    if cfg.cpu_devices is not None:
        if not 1 <= cfg.cpu_devices <= MAX_CPU_DEVICES:
            raise _bad("cpu_devices", f"must be between 1 and {MAX_CPU_DEVICES}, got {cfg.cpu_devices}",
                       "pass e.g. --cpu_devices=2")
        if cfg.cpu_devices > 1 and cfg.strategy != "mirrored":
            raise _bad("cpu_devices", f"splits the CPU for --strategy=mirrored, not --strategy={cfg.strategy}",
                       "add --strategy=mirrored, or drop --cpu_devices")


def _bad(name, problem, fix):
    return ConfigError("<flags>", f"--{name}", problem, fix)
