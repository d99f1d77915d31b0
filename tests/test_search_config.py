"""The search configuration: sections, one default per field, value checks, and the resume
fingerprint and config.json of runs made before the sections (a killed old run still resumes)."""

import dataclasses
import json
import math

import pytest

from proxyless_tf.errors import ConfigError
from proxyless_tf.search import config as config_lib
from proxyless_tf.search.config import SearchConfig
from search_helpers import micro_space

# SearchConfig(...).fingerprint() as the flat SearchConfig of commit 3532597 returned it (captured
# by running that code), for the two configurations below: a resume compares these dicts key by key
OLD_DEFAULT_FINGERPRINT = {
    "space": "configs/spaces/fashion_mnist.json", "dataset": "fashion_mnist", "data_dir": None, "manual_dir": None,
    "valid_size": None, "max_train": None, "resolution": None, "latency_table": None, "build_table": False,
    "table_backend": "litert", "table_threads": 1, "table_clock": None, "target_ms": None, "target_frac": None,
    "latency_loss": "mul#log", "loss_alpha": 0.2, "loss_beta": 0.3, "loss_lambda": 0.1, "mode": "two",
    "reinforce_w": 0.1, "reinforce_baseline_decay": 0.99, "epochs": 1, "warmup_epochs": 0, "arch_every": 1,
    "steps_per_epoch": None, "batch_size": 64, "valid_batch_size": None, "weight_lr": 0.025, "weight_momentum": 0.9,
    "weight_decay": 4e-05, "arch_lr": 0.001, "arch_beta2": 0.999, "bn_recalibration_steps": 20,
    "derive_tolerance": 0.1, "seed": 0, "strategy": "default", "cpu_devices": None, "deterministic": False,
    "max_abs_alpha": 50.0}
REINFORCE = dict(space="configs/spaces/fashion_mnist.json", out_dir="runs/x", mode="reinforce",
                 sandwich="largest_smallest", distill=0.5, reinforce_samples=4, reinforce_w=0.2, reinforce_w_under=0.0,
                 latency_table="t.json", target_ms=3.5, warmup_epochs=1, epochs=3, weight_sharing="nested")
OLD_REINFORCE_FINGERPRINT = dict(
    OLD_DEFAULT_FINGERPRINT, latency_table="t.json", target_ms=3.5, mode="reinforce", weight_sharing="nested",
    sandwich="largest_smallest", distill=0.5, reinforce_w=0.2, reinforce_samples=4, reinforce_w_under=0.0, epochs=3,
    warmup_epochs=1)


def test_fingerprints_are_the_ones_runs_before_the_sections_wrote():
    assert SearchConfig(space="configs/spaces/fashion_mnist.json", out_dir="runs/search").fingerprint() == \
        OLD_DEFAULT_FINGERPRINT
    assert SearchConfig(**REINFORCE).fingerprint() == OLD_REINFORCE_FINGERPRINT
    # and what may change on a resume does not enter it
    moved = SearchConfig(**dict(REINFORCE, out_dir="elsewhere", verbose=0, checkpoint_every=7, derive_samples=5))
    assert moved.fingerprint() == OLD_REINFORCE_FINGERPRINT


def test_a_flat_config_json_from_before_the_sections_reads_back(tmp_path):
    old = {  # dataclasses.asdict(SearchConfig(**REINFORCE)) as commit 3532597 wrote it, key for key
        "space": "configs/spaces/fashion_mnist.json", "out_dir": "runs/x", "dataset": "fashion_mnist",
        "data_dir": None, "manual_dir": None, "valid_size": None, "max_train": None, "resolution": None,
        "latency_resolution": None, "latency_num_classes": None, "latency_table": "t.json", "build_table": False,
        "table_backend": "litert", "table_threads": 1, "table_clock": None, "target_ms": 3.5, "target_frac": None,
        "latency_loss": "mul#log", "loss_alpha": 0.2, "loss_beta": 0.3, "loss_lambda": 0.1, "mode": "reinforce",
        "weight_sharing": "nested", "weight_sampling": "alpha", "sandwich": "largest_smallest", "distill": 0.5,
        "warmup_path": "sampled", "reinforce_w": 0.2, "reinforce_baseline_decay": 0.99, "reinforce_samples": 4,
        "reinforce_w_under": 0.0, "epochs": 3, "warmup_epochs": 1, "arch_every": 1, "steps_per_epoch": None,
        "batch_size": 64, "valid_batch_size": None, "weight_lr": 0.025, "weight_momentum": 0.9,
        "weight_decay": 4e-05, "arch_lr": 0.001, "arch_beta2": 0.999, "bn_recalibration_steps": 20,
        "derive_tolerance": 0.1, "derive_mode": "band", "derive_measure": False, "measured_target_ms": None,
        "measured_reference": None, "derive_samples": 0, "derive_proposal": "uniform", "seed": 0, "verbose": 2,
        "strategy": "default", "cpu_devices": None, "cluster_timeout": 120, "deterministic": False,
        "checkpoint_every": 100, "max_abs_alpha": 50.0, "cpu_kernels": True}
    (tmp_path / "config.json").write_text(json.dumps(old, indent=2))
    back = config_lib.read_config(str(tmp_path))
    assert back == SearchConfig(**REINFORCE)
    assert back.fingerprint() == OLD_REINFORCE_FINGERPRINT
    # the new file is by section, and reads back to the same config
    config_lib.write_config(str(tmp_path / "config.json"), back)
    written = json.loads((tmp_path / "config.json").read_text())
    assert list(written) == ["data", "latency", "optimisation", "algorithm", "derivation", "run"]
    assert written["algorithm"]["sandwich"] == "largest_smallest" and written["run"]["out_dir"] == "runs/x"
    assert sum(len(v) for v in written.values()) == len(old) == 59
    assert config_lib.read_config(str(tmp_path)) == back
    (tmp_path / "config.json").write_text(json.dumps(dict(written, derivation={"derive_bogus": 1})))
    with pytest.raises(ConfigError, match="derive_bogus: not a field"):
        config_lib.read_config(str(tmp_path))


def test_every_field_has_one_section_a_doc_and_one_default():
    names = [f.name for f in config_lib.fields()]
    assert len(names) == len(set(names)) == 59
    by_section = {s: [f.name for f in config_lib.fields(s)] for s in config_lib.SECTIONS}
    assert sum(len(v) for v in by_section.values()) == 59
    assert "sandwich" in by_section["algorithm"] and "target_ms" in by_section["latency"]
    assert all(f.metadata["doc"].strip() for f in config_lib.fields())
    assert config_lib.default("reinforce_samples") == 10 and config_lib.default("loss_alpha") == 0.2
    assert SearchConfig().section("optimisation")["batch_size"] == 64 == config_lib.default("batch_size")
    with pytest.raises(KeyError):
        config_lib.default("reinforce_sample")
    with pytest.raises(dataclasses.FrozenInstanceError):
        SearchConfig().epochs = 3


def test_the_choices_are_the_ones_the_supernet_and_the_distributed_step_know():
    """The config is checked without TensorFlow, so it holds its own lists; they must be the code's."""
    from proxyless_tf.layers import nested
    from proxyless_tf.runtime import distribute
    from proxyless_tf.search import sampled_derivation, supernet

    assert config_lib.SEARCH_MODES == supernet.SEARCH_MODES and config_lib.SANDWICH == supernet.SANDWICH
    assert config_lib.WARMUP_PATHS == supernet.WARMUP_PATHS and config_lib.WEIGHT_SAMPLING == supernet.WEIGHT_SAMPLING
    assert config_lib.WEIGHT_SHARING == nested.WEIGHT_SHARING and config_lib.PROPOSALS == sampled_derivation.PROPOSALS
    assert config_lib.default("strategy") == "default" and config_lib.default("cluster_timeout") == \
        distribute.DEFAULT_TIMEOUT_S == 120


def test_supernet_compile_defaults_are_the_configs():
    """One default per setting: the Python API's compile() and the CLI agree (they used to differ:
    reinforce_samples 1 in compile, 10 on the command line)."""
    import inspect

    from proxyless_tf.search.supernet import SuperNet

    params = inspect.signature(SuperNet.compile).parameters
    names = {"latency_loss": "latency_loss", "arch_every": "arch_every", "warmup_epochs": "warmup_epochs",
             "reinforce_w": "reinforce_w", "baseline_decay": "reinforce_baseline_decay",
             "reinforce_samples": "reinforce_samples", "reinforce_w_under": "reinforce_w_under"}
    for arg, field in names.items():
        assert params[arg].default == config_lib.default(field), arg
    assert params["reinforce_samples"].default == 10


def test_supernet_refuses_what_the_cli_refuses_with_the_same_rule():
    """sandwich + mode=full was refused only by the CLI; the SuperNet now calls the same check."""
    from proxyless_tf.search.supernet import SuperNet

    with pytest.raises(ConfigError, match="adds nothing to mode='full'") as e:
        SuperNet(micro_space(), 4, None, mode="full", sandwich="largest")
    assert e.value.source == "<supernet>" and e.value.field == "sandwich"
    with pytest.raises(ConfigError, match="unknown weight_sampling 'gumbel'"):
        SuperNet(micro_space(), 4, None, weight_sampling="gumbel")


@pytest.mark.parametrize("kwargs, field, needle", [
    (dict(mode="two_paths"), "--mode", "use one of two, full, full_v2, reinforce"),
    (dict(mode="full", sandwich="largest"), "--sandwich", "adds nothing to --mode=full"),
    (dict(distill=0.5), "--distill", "but --sandwich=none (fix: add --sandwich=largest_smallest"),
    (dict(distill=1.5, sandwich="largest"), "--distill", "1.5 is not in [0, 1]"),
    (dict(warmup_path="largest"), "--warmup_path", "--warmup_epochs=0"),
    (dict(reinforce_samples=0), "--reinforce_samples", "must be at least 1, a whole number, got 0"),
    (dict(reinforce_w_under=-1.0), "--reinforce_w_under", "slower network"),
    (dict(epochs=2, warmup_epochs=2), "epochs", "warmup_epochs=2"),
    (dict(batch_size=0), "--batch_size", "at least 1, got 0"),
    (dict(arch_lr=math.nan), "--arch_lr", "finite"),
    (dict(target_ms=0.0), "--target_ms", "must be positive"),
    (dict(target_frac=1.5), "target_frac", "not in [0, 1]"),
    (dict(latency_loss="add#hing"), "latency_loss", "unknown latency loss 'add#hing'"),
    (dict(derive_samples=3, derive_tolerance=0.0), "--derive_samples", "--derive_tolerance=0"),
    (dict(measured_target_ms=3.0), "--measured_target_ms", "pass --derive_measure too"),
    (dict(derive_proposal="best"), "--derive_proposal", "use one of uniform, alpha"),
])
def test_a_bad_value_is_refused_when_the_config_is_built(kwargs, field, needle):
    with pytest.raises(ConfigError) as e:
        SearchConfig(**kwargs)
    assert e.value.source == "<flags>" and e.value.field == field and needle in str(e.value), str(e.value)


def test_check_algorithm_names_the_values_as_the_api_caller_wrote_them():
    """The checks `SuperNet` and `compile` share with the CLI: the same rule, the caller's names."""
    with pytest.raises(ConfigError) as e:
        config_lib.check_algorithm(mode="full", sandwich="largest_smallest", source="<supernet>", prefix="")
    assert str(e.value).startswith("<supernet>: sandwich: 'largest_smallest' adds nothing to mode='full'")
    with pytest.raises(ConfigError, match=r"distill: needs the largest path.*sandwich='none'"):
        config_lib.check_algorithm(sandwich="none", distill=0.5, source="<supernet>", prefix="")
    with pytest.raises(ConfigError, match="reinforce_samples.*at least one"):
        config_lib.check_algorithm(reinforce_samples=2.5, source="<compile>", prefix="")
    # a value the caller does not hold yet (None) is not checked: warmup_path without warmup_epochs
    config_lib.check_algorithm(mode="two", warmup_path="largest", source="<supernet>", prefix="")
    config_lib.check_algorithm(mode="reinforce", sandwich="largest", distill=1.0, warmup_path="largest",
                               warmup_epochs=1, reinforce_samples=10, reinforce_w_under=0.0)


def test_a_run_from_before_reinforce_samples_reads_back_as_one_draw_and_resumes_with_one(tmp_path):
    import dataclasses
    import json

    from proxyless_tf.search import config as search_config

    old = dataclasses.asdict(search_config.SearchConfig(space="s.json", out_dir="o", mode="reinforce"))
    del old["reinforce_samples"], old["reinforce_w_under"]  # a config.json written before the fields
    (tmp_path / "config.json").write_text(json.dumps(old))
    back = search_config.read_config(str(tmp_path))
    assert back.reinforce_samples == 1  # what that code drew per update
    fp = back.fingerprint()
    assert "reinforce_samples" not in fp and "reinforce_w_under" not in fp  # the old fingerprint
    new = dict(space="s.json", out_dir="o")
    assert search_config.SearchConfig(mode="reinforce", **new).fingerprint()["reinforce_samples"] == 10
    assert "reinforce_samples" not in search_config.SearchConfig(mode="two", reinforce_samples=10, **new).fingerprint()
