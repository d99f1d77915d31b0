"""The search's configuration in one place: its sections, defaults, flag docs and value checks.

`SearchConfig` is one frozen dataclass whose fields are grouped in six sections (`SECTIONS`):
data, latency (table and target), optimisation, algorithm, derivation, run. Each field carries
its default, its section, its one-paragraph doc and whether an ordinary user needs it
(`user`): the CLI builds its flags from these fields (user flags in `--help`, the others in
`--helpfull`), so a default is written once, here. A config is checked when it is built
(`check_values`: everything that needs neither files, TensorFlow nor data), so a
`SearchConfig` that exists is a valid one; the checks that read files (space, table, data
directory) are `search.inputs.check_config`. `check_algorithm` is the algorithm section's
rules for callers that hold the values without a config (the `SuperNet` API), and
`default(name)` a field's default for them.

config.json in a run directory is written by section; a flat one (runs from before the
sections) reads back the same. `fingerprint()` is what a resume must match: unchanged in form
since the flat config, so a killed run of an older version resumes.
"""

import dataclasses
import json
import math
import os

from proxyless_tf import files as files_lib
from proxyless_tf.errors import ConfigError
from proxyless_tf.runtime.distribute import DEFAULT_TIMEOUT_S, STRATEGIES
from proxyless_tf.search.latency_losses import DEFAULT_LOSS_PARAMS, LATENCY_LOSSES

SECTIONS = {
    "data": "the dataset, the search space and the split",
    "latency": "the latency table and the target",
    "optimisation": "epochs, batches, the weight and architecture optimizers",
    "algorithm": "how the supernet samples, shares and rewards",
    "derivation": "how the final network is chosen from alpha",
    "run": "the run directory, seeds, devices, checkpoints",
}
SEARCH_MODES = ("two", "full", "full_v2", "reinforce")
WEIGHT_SHARING = ("independent", "nested")
WEIGHT_SAMPLING = ("alpha", "uniform")
SANDWICH = ("none", "largest", "largest_smallest")
WARMUP_PATHS = ("sampled", "largest")
DERIVE_MODES = ("band", "ceiling")
PROPOSALS = ("uniform", "alpha")


def _opt(section, default, doc, user=False, choices=None):
    return dataclasses.field(default=default, metadata={"section": section, "doc": doc, "user": user,
                                                        "choices": choices})


@dataclasses.dataclass(frozen=True, kw_only=True)
class SearchConfig:
    """Everything a search needs; each field's doc is its flag's help."""

    # ---- data ----
    dataset: str = _opt("data", "fashion_mnist", "A tfds name (fashion_mnist: local IDX files first; cifar10, "
                        "imagenet2012, ...) or an image folder DIR/<class>/*.png|jpg (or DIR/train/<class>/...).",
                        user=True)
    data_dir: str = _opt("data", None, "Directory of the IDX files, or the tfds data_dir.", user=True)
    manual_dir: str = _opt("data", None, "tfds manual download directory (ImageNet tar files).", user=True)
    space: str = _opt("data", "fashion_mnist.json", "Search space JSON (a bare name resolves in configs/spaces).",
                      user=True)
    resolution: int = _opt("data", None, "Input height/width of the network (default: the space's, or the data's "
                           "when the space writes \"input_shape\": [null, null, C]).", user=True)
    valid_size: int = _opt("data", None, "Images carved (class-balanced) from train for the arch step.")
    max_train: int = _opt("data", None, "Use only this many training images (quick runs).")
    # ---- latency ----
    latency_table: str = _opt("latency", None, "LatencyTable JSON ('~' allowed).", user=True)
    build_table: bool = _opt("latency", False, "Build the table with --table_backend when it does not exist.",
                             user=True)
    table_backend: str = _opt("latency", "litert", "Backend that builds a missing table.")
    table_threads: int = _opt("latency", 1, "Threads of the table backend.")
    table_clock: str = _opt("latency", None, "litert: clock of a table built now (ref = relative to an interleaved "
                            "reference network, the most repeatable on a busy machine; default: the backend's own).",
                            choices=("cpu", "wall", "ref"))
    target_ms: float = _opt("latency", None, "Latency target (ms); must be inside the space's reachable range.",
                            user=True)
    target_frac: float = _opt("latency", None, "Target as a position in the reachable range (0 fastest, 1 slowest), "
                              "used when --target_ms is not given.", user=True)
    latency_loss: str = _opt("latency", "mul#log", f"{', '.join(LATENCY_LOSSES)} or none (what each computes: "
                             "proxyless_tf/search/latency_losses.py).", user=True)
    loss_alpha: float = _opt("latency", DEFAULT_LOSS_PARAMS["mul#log"]["alpha"], "mul#log alpha.")
    loss_beta: float = _opt("latency", DEFAULT_LOSS_PARAMS["mul#log"]["beta"], "mul#log beta.")
    loss_lambda: float = _opt("latency", DEFAULT_LOSS_PARAMS["add#linear"]["lambda"],
                              "add#linear / add#abs / add#hinge lambda.")
    latency_resolution: int = _opt("latency", None, "Look the latency term up at this input height/width (the "
                                   "deployment one the table was measured at) while the network runs at --resolution.")
    latency_num_classes: int = _opt("latency", None, "Classifier width of the table's head entry (default: the "
                                    "dataset's); e.g. 1000 for a table measured for ImageNet. A constant: moves no "
                                    "choice.")
    # ---- optimisation ----
    epochs: int = _opt("optimisation", 1, "Search epochs (warm-up included).", user=True)
    warmup_epochs: int = _opt("optimisation", 0, "Weight-only epochs first.")
    arch_every: int = _opt("optimisation", 1, "An architecture step every this many weight steps.")
    steps_per_epoch: int = _opt("optimisation", None, "Steps per epoch (default: one pass over the train split).")
    batch_size: int = _opt("optimisation", 64, "Training batch size.", user=True)
    valid_batch_size: int = _opt("optimisation", None, "Validation batch size (default: batch_size).")
    weight_lr: float = _opt("optimisation", 0.025, "Initial weight learning rate (SGD Nesterov, cosine).")
    weight_momentum: float = _opt("optimisation", 0.9, "SGD momentum.")
    weight_decay: float = _opt("optimisation", 4e-5, "Weight decay.")
    arch_lr: float = _opt("optimisation", 1e-3, "Adam learning rate of alpha (beta1 = 0).")
    arch_beta2: float = _opt("optimisation", 0.999, "Adam beta2 of alpha.")
    # ---- algorithm ----
    mode: str = _opt("algorithm", "two", "two: ProxylessNAS binary gates; full: DARTS baseline; full_v2: gate "
                     "gradients of every op with one path's memory (recomputed in the backward); reinforce: "
                     "Proxyless-R (REINFORCE).", user=True, choices=SEARCH_MODES)
    weight_sharing: str = _opt("algorithm", "independent", "independent: every candidate op has its own weights (the "
                               "paper); nested: a layer's MBConv candidates are cut from shared kernels (k3 in k5 in "
                               "k7, e3 in e6; private BN) so the supernet learns on a small budget "
                               "(proxyless_tf/layers/nested.py).", choices=WEIGHT_SHARING)
    weight_sampling: str = _opt("algorithm", "alpha", "Path of each weight step: alpha (the paper: drawn from "
                                "softmax(alpha)) or uniform (every op trained as often, so the supernet does not "
                                "score alpha's favourites higher for having trained them more).",
                                choices=WEIGHT_SAMPLING)
    sandwich: str = _opt("algorithm", "none", "Fixed paths every weight step trains besides the sampled one (BigNAS's "
                         "sandwich rule): the largest network (widest, largest-kernel op everywhere), and with "
                         "largest_smallest also the smallest (skippable layers skipped, narrowest op elsewhere). Each "
                         "costs one more forward and backward per weight step. Also under --strategy; not with "
                         "--mode=full.", choices=SANDWICH)
    distill: float = _opt("algorithm", 0.0, "With --sandwich=largest or largest_smallest: weight w of the largest "
                          "path's softmax in the other paths' weight loss, (1 - w) * CE(labels) + w * CE(largest's "
                          "softmax); 1 is BigNAS's in-place distillation, 0 trains every path on the labels.")
    warmup_path: str = _opt("algorithm", "sampled", "Path of the warm-up epochs' weight steps: sampled (the paper: as "
                            "after the warm-up) or largest (the largest network only, once-for-all's first stage; the "
                            "sub-networks then start from its trained weights). Needs --warmup_epochs >= 1.",
                            choices=WARMUP_PATHS)
    reinforce_w: float = _opt("algorithm", 0.1, "reinforce: w of the reward acc * (target / latency)^w "
                              "(--latency_loss=none: reward = accuracy).")
    reinforce_baseline_decay: float = _opt("algorithm", 0.99, "reinforce: decay of the moving-average reward "
                                           "baseline.")
    reinforce_samples: int = _opt("algorithm", 10, "reinforce: architectures drawn per update, run on the same "
                                  "validation batch, their gradients averaged against the batch's mean reward (the "
                                  "official code's rl_batch_size, 10); 1: one draw per update against the "
                                  "moving-average baseline.")
    reinforce_w_under: float = _opt("algorithm", None, "reinforce: the reward's exponent for a network at or under "
                                    "the target (default: --reinforce_w, a soft constraint on both sides). 0 with "
                                    "--reinforce_w=1 is MnasNet's hard constraint: no reward for being faster than "
                                    "the target, about 1 % per 1 % over it.")
    # ---- derivation ----
    derive_tolerance: float = _opt("derivation", 0.1, "If the argmax net misses target_ms by more than this "
                                   "fraction, swap the cheapest layers toward it (0: plain argmax).")
    derive_mode: str = _opt("derivation", "band", "band: derive into target +- tolerance from both sides (networks "
                            "compared at one latency); ceiling: the target is a budget, only a net slower than "
                            "target x (1 + tolerance) is changed.", choices=DERIVE_MODES)
    derive_measure: bool = _opt("derivation", False, "Measure the derived network on the table's device (LiteRT or "
                                "TF tables built on this machine) and, when it misses the band, move the table's "
                                "target by its measured/predicted ratio, or between two networks measured on either "
                                "side, and derive again (at most 5 measurements, until one is within half the band).")
    measured_target_ms: float = _opt("derivation", None, "--derive_measure: the target on the device's clock when it "
                                     "differs from the table's (--target_ms then prices the latency loss, this one is "
                                     "the measured band); default: --target_ms.")
    measured_reference: str = _opt("derivation", None, "--derive_measure: an architecture file of the search space "
                                   "(e.g. the network whose latency is the target) measured right after every "
                                   "derived network; the target on the device is its first measurement, and each "
                                   "derived network's time is rescaled by how far the reference moved since then "
                                   "(one network's time drifts by several per cent over an hour; a network timed "
                                   "beside it drifts with it). Instead of --measured_target_ms.")
    derive_samples: int = _opt("derivation", 0, "0: derive from the argmax of alpha (the paper). N > 0: draw N "
                               "networks (--derive_proposal) that the table puts in the band, score each with the "
                               "supernet's weights on the validation split (BN re-estimated) and derive from the "
                               "best (SPOS/ENAS-style selection).")
    derive_proposal: str = _opt("derivation", "uniform", "--derive_samples: draw each layer's op uniformly or from "
                                "softmax(alpha).", choices=PROPOSALS)
    bn_recalibration_steps: int = _opt("derivation", 20, "Train batches re-estimating BN of the final argmax net.")
    # ---- run ----
    out_dir: str = _opt("run", "runs/search", "Run directory.", user=True)
    seed: int = _opt("run", 0, "Seed of the split, shuffles and path sampling.", user=True)
    verbose: int = _opt("run", 2, "Keras fit verbosity.", user=True)
    strategy: str = _opt("run", STRATEGIES[0], "tf.distribute strategy.", choices=STRATEGIES)
    cpu_devices: int = _opt("run", None, "With --strategy=mirrored: logical CPU devices.")
    cluster_timeout: int = _opt("run", DEFAULT_TIMEOUT_S, "With --strategy=multi_worker: seconds to join.")
    deterministic: bool = _opt("run", False, "Bit-for-bit repeatable: seeds everything and enables TF op "
                               "determinism, so a killed and resumed search ends with an uninterrupted run's "
                               "arch.json and alpha.")
    checkpoint_every: int = _opt("run", 100, "Write the resume checkpoint every this many steps (and at every "
                                 "epoch end); a killed search rerun with the same flags continues from it. 0: epoch "
                                 "ends only.")
    max_abs_alpha: float = _opt("run", 50.0, "Stop the search when any |alpha| exceeds this (a diverging "
                                "architecture step); 0: only non-finite alpha stops it.")
    cpu_kernels: bool = _opt("run", True, "On a CPU-only host, fused batch norm and small-map depthwise gradients "
                             "in the supernet (proxyless_tf/layers/cpu_kernels.py): same maths, a smaller traced "
                             "graph.")

    def __post_init__(self):
        check_values(self)

    def section(self, name):
        """{field: value} of one section, e.g. `cfg.section("latency")`."""
        return {f.name: getattr(self, f.name) for f in fields(name)}

    def fingerprint(self):
        """What must not change between a run and its resume (verbosity, checkpointing, the run
        directory's own path and the cluster wait may: a moved run directory still resumes).

        A field added after a version whose runs may still be resumed is left out while it has
        the value that version behaved as, so its fingerprint is the older one."""
        d = dataclasses.asdict(self)
        # the derivation (derive_*) only acts after the last step, so a killed run may be resumed with or without it
        for k in ("verbose", "checkpoint_every", "out_dir", "cluster_timeout", "cpu_kernels", "derive_measure",
                  "measured_target_ms", "measured_reference", "derive_samples", "derive_proposal"):
            d.pop(k)
        for k, older in (("latency_resolution", None), ("latency_num_classes", None), ("weight_sharing", "independent"),
                         ("weight_sampling", "alpha"), ("sandwich", "none"), ("warmup_path", "sampled"),
                         ("derive_mode", "band"), ("reinforce_w_under", None)):
            if d[k] == older:
                d.pop(k)
        if not d["distill"]:
            d.pop("distill")
        if d["mode"] != "reinforce" or d["reinforce_samples"] == 1:  # runs from before the field resume
            d.pop("reinforce_samples")                                # (REINFORCE ones with --reinforce_samples=1)
        return d


def fields(section=None):
    """The dataclass fields of `SearchConfig` (of one section), in declaration order."""
    if section is not None and section not in SECTIONS:
        raise KeyError(f"unknown section {section!r}: one of {tuple(SECTIONS)}")
    return [f for f in dataclasses.fields(SearchConfig) if section in (None, f.metadata["section"])]


def default(name):
    """The default of one field by its flat name: `default("reinforce_samples")` -> 10."""
    for f in dataclasses.fields(SearchConfig):
        if f.name == name:
            return f.default
    raise KeyError(f"{name!r} is not a field of SearchConfig")


def _bad(name, problem, fix, source="<flags>", prefix="--"):
    return ConfigError(source, f"{prefix}{name}", problem, fix)


def check_algorithm(mode=None, sandwich=None, distill=None, warmup_path=None, warmup_epochs=None,
                    reinforce_samples=None, reinforce_w_under=None, weight_sampling=None, source="<flags>",
                    prefix="--"):
    """The algorithm section's rules; a value left None is not checked (its owner checks it later).

    `source`/`prefix` name the values as the caller's user wrote them: `<flags>` and
    `--sandwich=none` for the CLI (prefix "--"), e.g. `<supernet>` and `sandwich='none'` for the
    Python API (prefix ""). Raises ConfigError."""
    def bad(name, problem, fix):
        return _bad(name, problem, fix, source, prefix)

    def arg(name, value):  # how the caller's user wrote a value
        return f"--{name}={value}" if prefix == "--" else f"{name}={value!r}"

    for name, value, allowed in (("mode", mode, SEARCH_MODES), ("sandwich", sandwich, SANDWICH),
                                 ("warmup_path", warmup_path, WARMUP_PATHS),
                                 ("weight_sampling", weight_sampling, WEIGHT_SAMPLING)):
        if value is not None and value not in allowed:
            raise bad(name, f"unknown {name} {value!r}", f"use one of {', '.join(allowed)}")
    if sandwich not in (None, "none") and mode == "full":  # full already trains every op every step
        raise bad("sandwich", f"{sandwich!r} adds nothing to {arg('mode', 'full')}, which trains every op every step",
                  f"use it with {arg('mode', 'two')} (or full_v2, reinforce), or pass {arg('sandwich', 'none')}")
    if distill is not None:
        if not 0.0 <= float(distill) <= 1.0:
            raise bad("distill", f"{distill} is not in [0, 1]",
                      "pass a weight from 0 (labels only) to 1 (BigNAS: the largest's softmax only)")
        if distill and sandwich is not None and not sandwich.startswith("largest"):
            raise bad("distill", f"needs the largest path as the teacher, but {arg('sandwich', sandwich)}",
                      f"add {arg('sandwich', 'largest_smallest')} (or largest), or drop {prefix}distill")
    if warmup_path not in (None, "sampled") and (mode == "full" or warmup_epochs == 0):
        raise bad("warmup_path", f"{warmup_path!r} needs warm-up epochs with one path per weight step, but "
                  + (f"{arg('warmup_epochs', warmup_epochs)} " if warmup_epochs is not None else "")
                  + arg("mode", mode), f"pass {prefix}warmup_epochs=1 or more and a {prefix}mode other than full, "
                  f"or drop {prefix}warmup_path")
    if reinforce_samples is not None and (int(reinforce_samples) != reinforce_samples or reinforce_samples < 1):
        raise bad("reinforce_samples", f"must be at least 1, a whole number, got {reinforce_samples}",
                  f"pass a positive {prefix}reinforce_samples: draw at least one architecture per update "
                  "(the official code: 10)")
    if reinforce_w_under is not None and reinforce_w_under < 0:
        raise bad("reinforce_w_under", f"{reinforce_w_under} would reward a slower network under the target",
                  "pass 0 (MnasNet's hard constraint) or a positive exponent")


def check_values(cfg):
    """Every check of `cfg` that needs neither a file, TensorFlow nor the data; raises ConfigError."""
    for f in fields():
        v, choices = getattr(cfg, f.name), f.metadata["choices"]
        if choices and v is not None and v not in choices:
            raise _bad(f.name, f"unknown value {v!r}", f"use one of {', '.join(choices)}")
    if cfg.latency_loss not in (None, "none") + LATENCY_LOSSES:
        raise ConfigError("<flags>", "latency_loss", f"unknown latency loss {cfg.latency_loss!r}",
                          f"use {', '.join(LATENCY_LOSSES)} or none")
    if cfg.epochs < 1 or cfg.warmup_epochs < 0 or cfg.warmup_epochs >= cfg.epochs:
        raise ConfigError("<flags>", "epochs", f"epochs={cfg.epochs}, warmup_epochs={cfg.warmup_epochs}",
                          "use epochs >= 1 and 0 <= warmup_epochs < epochs")
    for name in ("batch_size", "valid_batch_size", "valid_size", "max_train", "steps_per_epoch", "arch_every",
                 "latency_resolution", "latency_num_classes"):
        v = getattr(cfg, name)
        if v is not None and v < 1:
            raise _bad(name, f"must be at least 1, got {v}", f"pass a positive --{name}")
    check_algorithm(cfg.mode, cfg.sandwich, cfg.distill, cfg.warmup_path, cfg.warmup_epochs, cfg.reinforce_samples,
                    cfg.reinforce_w_under)
    if cfg.bn_recalibration_steps < 0:
        raise _bad("bn_recalibration_steps", f"must be >= 0, got {cfg.bn_recalibration_steps}", "pass 0 or more")
    for name in ("weight_lr", "arch_lr", "weight_momentum", "weight_decay", "arch_beta2", "loss_alpha",
                 "loss_beta", "loss_lambda", "derive_tolerance", "target_ms", "target_frac", "measured_target_ms"):
        v = getattr(cfg, name)
        if v is not None and (not math.isfinite(v) or v < 0):
            raise _bad(name, f"must be a finite number >= 0, got {v}", f"pass a valid --{name}")
    for name in ("target_ms", "measured_target_ms"):
        if getattr(cfg, name) is not None and getattr(cfg, name) <= 0:
            raise _bad(name, f"must be positive, got {getattr(cfg, name)}",
                       "pass a latency in milliseconds" + (", or --target_frac" if name == "target_ms" else ""))
    if cfg.target_ms is None and cfg.target_frac is not None and not 0.0 <= cfg.target_frac <= 1.0:
        raise ConfigError("<flags>", "target_frac", f"{cfg.target_frac} is not in [0, 1]",
                          "0 is the fastest architecture of the space, 1 the slowest")
    _check_derivation(cfg)


def _check_derivation(cfg):
    if cfg.measured_target_ms is not None and not cfg.derive_measure:
        raise _bad("measured_target_ms", "is the band of --derive_measure, which is off",
                   "pass --derive_measure too, or drop --measured_target_ms")
    if cfg.measured_reference is not None:
        if not cfg.derive_measure:
            raise _bad("measured_reference", "is measured by --derive_measure, which is off",
                       "pass --derive_measure too, or drop --measured_reference")
        if cfg.measured_target_ms is not None:
            raise _bad("measured_reference", "and --measured_target_ms both set the measured target",
                       "pass one of them")
    if cfg.derive_samples < 0:
        raise _bad("derive_samples", f"must be >= 0, got {cfg.derive_samples}",
                   "pass 0 (the argmax derivation) or a number of networks to draw, e.g. 20")
    if cfg.derive_samples and not cfg.derive_tolerance:
        raise _bad("derive_samples", "draws networks into the latency band, but --derive_tolerance=0",
                   "pass --derive_tolerance > 0 (e.g. 0.05)")
    if cfg.derive_measure and not cfg.derive_tolerance:
        raise _bad("derive_measure", "needs a latency band to measure against, but --derive_tolerance=0",
                   "pass --derive_tolerance > 0 (e.g. 0.05)")


def to_sections(cfg):
    """{section: {field: value}}: config.json's form."""
    return {s: cfg.section(s) for s in SECTIONS}


def write_config(path, cfg):
    """The search's whole configuration beside its checkpoint, by section: later tools (the
    supernet ranking, a reader of an old run) rebuild the same supernet and data split from it,
    not from a command line they would have to re-parse."""
    files_lib.write_text_atomic(path, json.dumps(to_sections(cfg), indent=2, default=str) + "\n")


def read_config(search_dir):
    """The `SearchConfig` a search wrote (by section, or flat before the sections); unknown keys
    (a newer run) are a clear error."""
    path = os.path.join(search_dir, "config.json")
    if not os.path.exists(path):
        raise ConfigError(path, "config.json", "missing: searches before config.json was written, or not a search "
                          "directory", "pass the --out_dir of a proxyless_tf.search run (rerun older searches)")
    values = files_lib.read_json_object(path, "search config", fix="pass the --out_dir of a proxyless_tf.search run")
    if values and all(k in SECTIONS and isinstance(v, dict) for k, v in values.items()):
        values = {k: v for section in values.values() for k, v in section.items()}
    elif values.get("mode") == "reinforce":  # flat, possibly from before the field existed: one draw per update
        values.setdefault("reinforce_samples", 1)
    known = {f.name for f in dataclasses.fields(SearchConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(path, unknown[0], "not a field of this version's SearchConfig",
                          "read it with the proxyless_tf version that wrote it")
    return SearchConfig(**values)
