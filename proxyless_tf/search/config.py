"""The search's configuration: one dataclass, its resume fingerprint, and its file in the run directory."""

import dataclasses
import json
import os

from proxyless_tf import files as files_lib
from proxyless_tf.errors import ConfigError


@dataclasses.dataclass
class SearchConfig:
    """Everything a search needs; field docs are the CLI's flag docs."""

    space: str
    out_dir: str
    dataset: str = "fashion_mnist"
    data_dir: str = None
    manual_dir: str = None
    valid_size: int = None
    max_train: int = None
    resolution: int = None
    latency_resolution: int = None
    latency_num_classes: int = None
    latency_table: str = None
    build_table: bool = False
    table_backend: str = "litert"
    table_threads: int = 1
    table_clock: str = None
    target_ms: float = None
    target_frac: float = None
    latency_loss: str = "mul#log"
    loss_alpha: float = 0.2
    loss_beta: float = 0.3
    loss_lambda: float = 0.1
    mode: str = "two"
    weight_sharing: str = "independent"
    weight_sampling: str = "alpha"
    sandwich: str = "none"
    distill: float = 0.0
    warmup_path: str = "sampled"
    reinforce_w: float = 0.1
    reinforce_baseline_decay: float = 0.99
    reinforce_samples: int = 10
    reinforce_w_under: float = None
    epochs: int = 1
    warmup_epochs: int = 0
    arch_every: int = 1
    steps_per_epoch: int = None
    batch_size: int = 64
    valid_batch_size: int = None
    weight_lr: float = 0.025
    weight_momentum: float = 0.9
    weight_decay: float = 4e-5
    arch_lr: float = 1e-3
    arch_beta2: float = 0.999
    bn_recalibration_steps: int = 20
    derive_tolerance: float = 0.1
    derive_mode: str = "band"
    derive_measure: bool = False
    measured_target_ms: float = None
    measured_reference: str = None
    derive_samples: int = 0
    derive_proposal: str = "uniform"
    seed: int = 0
    verbose: int = 2
    strategy: str = "default"
    cpu_devices: int = None
    cluster_timeout: int = 120
    deterministic: bool = False
    checkpoint_every: int = 100
    max_abs_alpha: float = 50.0
    cpu_kernels: bool = True

    def fingerprint(self):
        """What must not change between a run and its resume (verbosity, checkpointing, the run
        directory's own path and the cluster wait may: a moved run directory still resumes)."""
        d = dataclasses.asdict(self)
        # the derivation (derive_*) only acts after the last step, so a killed run may be resumed with or without it
        for k in ("verbose", "checkpoint_every", "out_dir", "cluster_timeout", "cpu_kernels", "derive_measure",
                  "measured_target_ms", "measured_reference", "derive_samples", "derive_proposal"):
            d.pop(k)
        for k in ("latency_resolution", "latency_num_classes"):  # unset: a run from before they existed resumes
            if d[k] is None:
                d.pop(k)
        if d["weight_sharing"] == "independent":
            d.pop("weight_sharing")
        if d["weight_sampling"] == "alpha":  # a run from before the field existed resumes
            d.pop("weight_sampling")
        if d["sandwich"] == "none":  # a run from before the field existed resumes
            d.pop("sandwich")
        if not d["distill"]:  # a run from before the field existed resumes
            d.pop("distill")
        if d["warmup_path"] == "sampled":  # a run from before the field existed resumes
            d.pop("warmup_path")
        if d["derive_mode"] == "band":  # a run from before the field existed resumes
            d.pop("derive_mode")
        if d["mode"] != "reinforce" or d["reinforce_samples"] == 1:  # runs from before the field resume
            d.pop("reinforce_samples")                                # (REINFORCE ones with --reinforce_samples=1)
        if d["reinforce_w_under"] is None:  # a run from before the field existed resumes
            d.pop("reinforce_w_under")
        return d


def write_config(path, cfg):
    """The search's whole configuration beside its checkpoint: later tools (the supernet ranking,
    a reader of an old run) rebuild the same supernet and data split from it, not from a command
    line they would have to re-parse."""
    files_lib.write_text_atomic(path, json.dumps(dataclasses.asdict(cfg), indent=2, default=str) + "\n")


def read_config(search_dir):
    """The `SearchConfig` a finished search wrote; unknown keys (a newer run) are a clear error."""
    path = os.path.join(search_dir, "config.json")
    if not os.path.exists(path):
        raise ConfigError(path, "config.json", "missing: searches before config.json was written, or not a search "
                          "directory", "pass the --out_dir of a proxyless_tf.search run (rerun older searches)")
    values = json.load(open(path))
    if values.get("mode") == "reinforce":
        values.setdefault("reinforce_samples", 1)  # written before the field existed: one draw per update
    known = {f.name for f in dataclasses.fields(SearchConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(path, unknown[0], "not a field of this version's SearchConfig",
                          "read it with the proxyless_tf version that wrote it")
    return SearchConfig(**values)
