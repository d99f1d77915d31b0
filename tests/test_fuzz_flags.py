"""Property-based fuzzing of flag combinations: the search's, TF_CONFIG's, and a tool's (count_macs).

The property is the one of tests/test_fuzz_readers.py, for flags: whatever combination a user
types, the checks that run before anything is written either accept it or raise one
`ConfigError` line; an accepted combination is one the run can honour (a bounded seed and batch,
an explicit target inside the table's reachable range, a TF_CONFIG whose task is one of its
workers). The search's checks run in-process (`SearchConfig` + `inputs.check_config`: what the
CLI does before TensorFlow loads); count_macs runs as a subprocess, as a user runs it, and must
exit 0 or 2 with one error line, never a traceback or an internal error.

Fixed seed (`derandomize=True`), small budgets; the `slow`-marked variants run the same
properties with larger ones. What they found is in tests/bad_inputs (cases `fuzz_flags_*`).
"""

import json
import math
import os
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT, run_cli
from proxyless_tf.errors import ConfigError
from proxyless_tf.runtime import distribute
from proxyless_tf.search import config as config_lib
from proxyless_tf.search import inputs
from proxyless_tf.search import value_checks

FAST = settings(derandomize=True, max_examples=80, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
SLOW = settings(FAST, max_examples=int(os.environ.get("PROXYLESS_FUZZ_EXAMPLES", 600)))
TOOL = settings(FAST, max_examples=6)  # a subprocess each (~0.3 s: count_macs never loads TensorFlow)
TOOL_SLOW = settings(FAST, max_examples=40)

BAD = os.path.join(ROOT, "tests", "bad_inputs")
SPACE = os.path.join(ROOT, "configs", "spaces", "fashion_mnist.json")
TABLE = os.path.join(ROOT, "configs", "latency", "fashion_mnist_litert1.json")
ARCH = os.path.join(ROOT, "configs", "archs", "fashion_mnist_example.json")
_DIR = tempfile.mkdtemp(prefix="proxyless_fuzz_flags_")
with open(os.path.join(_DIR, "a_file"), "w") as _f:
    _f.write("not a directory\n")

# Plausible-looking numbers (a typo, an off-by-one, a unit mix-up) twice as often as arbitrary ones:
# a value that passes the sign checks but not what the code behind the flag accepts is the interesting kind.
PLAUSIBLE_INTS = [0, -1, 1, 2, 3, 2**31 - 1, 2**31, 2**63, 10**9, 10**30, 65536, 65537, 50_000, 50_001]
PLAUSIBLE_FLOATS = [0.0, -1.0, 1e-9, 0.5, 0.999, 1.0, 1.5, 3.0, 100.0, 1e308]
hostile_ints = st.one_of(st.sampled_from(PLAUSIBLE_INTS), st.sampled_from(PLAUSIBLE_INTS), st.integers(-3, 70))
hostile_floats = st.one_of(st.sampled_from(PLAUSIBLE_FLOATS), st.sampled_from(PLAUSIBLE_FLOATS),
                           st.floats(allow_nan=True, allow_infinity=True))
PATHS = {
    "space": [SPACE, os.path.join(ROOT, "configs", "spaces", "proxyless_mobile.json"),
              os.path.join(BAD, "space_truncated.json"), os.path.join(BAD, "space_huge_int.json"),
              os.path.join(_DIR, "missing.json"), BAD, "/dev/null"],
    "latency_table": [TABLE, TABLE, os.path.join(ROOT, "configs", "latency", "proxyless_mobile_litert1.json"),
                      os.path.join(BAD, "table_nan_median.json"), os.path.join(_DIR, "missing.json"), None],
    "out_dir": [os.path.join(_DIR, "out"), os.path.join(_DIR, "a_file"), os.path.join(_DIR, "a_file", "run")],
    "data_dir": [None, None, _DIR, os.path.join(_DIR, "a_file")],
    "measured_reference": [None, None, ARCH, os.path.join(BAD, "arch_unknown_op.json")],
}


def _values_for(field):
    """The values a user can type for one SearchConfig field (what absl would hand over)."""
    name, choices = field.name, field.metadata["choices"]
    if name in PATHS:
        return st.sampled_from(PATHS[name])
    if name == "latency_loss":
        return st.sampled_from(["mul#log", "add#linear", "add#abs", "add#hinge", "none", "add#hing"])
    if choices:
        return st.sampled_from(list(choices) + ["bogus"])
    if field.type is bool:
        return st.booleans()
    if field.type is int:
        return hostile_ints
    if field.type is float:
        return hostile_floats
    return st.just(field.default)  # dataset, manual_dir: the data is H1's corpus


# A handful of flags changed at a time (what a user does), each to a hostile or an ordinary value;
# the table, run directory, target and loss are always given, mostly usable, so that a draw gets past
# the first check to the later ones (the fashion table reaches 0 ms, so mul#log is always refused).
FIELDS = {f.name: f for f in config_lib.fields()
          if f.name not in ("space", "latency_table", "out_dir", "target_frac", "latency_loss", "dataset", "manual_dir",
                            "build_table", "table_backend", "derive_measure")}
BASE = {"space": st.sampled_from(PATHS["space"][:1] * 6 + PATHS["space"]),
        "latency_table": st.sampled_from(PATHS["latency_table"][:1] * 6 + PATHS["latency_table"]),
        "out_dir": st.sampled_from(PATHS["out_dir"][:1] * 4 + PATHS["out_dir"]),
        "target_frac": st.one_of(st.floats(0, 1), st.floats(0, 1), st.none(), hostile_floats),
        "latency_loss": st.sampled_from(["add#abs", "add#abs", "add#linear", "add#hinge", "mul#log", "none",
                                         "add#hing"])}
search_flags = st.lists(st.sampled_from(sorted(FIELDS)), max_size=3, unique=True).flatmap(
    lambda names: st.fixed_dictionaries(dict(BASE, **{n: st.one_of(st.just(FIELDS[n].default), _values_for(FIELDS[n]))
                                                      for n in names})))
ACCEPTED = []  # how many draws got through every check (printed by the slow test: the fuzzer's reach)


def _search_property(values):
    try:
        cfg = config_lib.SearchConfig(**values)
        inputs.check_config(cfg)
    except ConfigError as e:
        assert str(e) and "\n" not in str(e) and e.fix, repr(str(e))
        return
    ACCEPTED.append(values)
    # accepted: every number inside what the run can honour
    assert 0 <= cfg.seed <= value_checks.MAX_SEED
    assert 1 <= cfg.batch_size <= value_checks.MAX_BATCH
    assert cfg.valid_batch_size is None or 1 <= cfg.valid_batch_size <= value_checks.MAX_BATCH
    assert cfg.cpu_devices is None or cfg.cpu_devices == 1 or cfg.strategy == "mirrored"
    for f in config_lib.fields():
        v = getattr(cfg, f.name)
        if f.type is float and v is not None:
            assert math.isfinite(v), f.name
        if f.type is int and v is not None:
            assert abs(v) <= value_checks.MAX_INT, f.name
    _optimizers_accept(cfg)
    if cfg.latency_table and cfg.target_ms is not None and cfg.latency_loss != "none":
        from proxyless_tf.latency.table import LatencyTable

        table = LatencyTable.load(cfg.latency_table)
        lo, hi = table.latency_range(inputs.latency_space(cfg, inputs.load_space(cfg.space, cfg.resolution)),
                                     cfg.latency_num_classes or table.num_classes)
        assert lo <= cfg.target_ms <= hi, (cfg.target_ms, lo, hi)


def _optimizers_accept(cfg):
    """The oracle for the optimisation flags: Keras builds what `run.build_supernet` asks of it from an
    accepted config (its own checks run only after TensorFlow has loaded, as an internal error)."""
    import keras

    schedule = keras.optimizers.schedules.CosineDecay(cfg.weight_lr, decay_steps=max(1, (cfg.steps_per_epoch or 1)
                                                                                        * cfg.epochs))
    keras.optimizers.SGD(schedule, momentum=cfg.weight_momentum, nesterov=True, weight_decay=cfg.weight_decay or None)
    keras.optimizers.Adam(cfg.arch_lr, beta_1=0.0, beta_2=cfg.arch_beta2)


@FAST
@given(search_flags)
def test_search_flags_are_accepted_only_when_the_run_can_honour_them(values):
    _search_property(values)


@pytest.mark.slow
@SLOW
@given(search_flags)
def test_search_flags_slow(values):
    _search_property(values)


# ---- TF_CONFIG (the distributed flags' environment) ------------------------------------------------

address = st.one_of(st.sampled_from(["localhost:2222", "10.0.0.1:1", "h:65535", "h:65536", "h:0", "h:", ":1",
                                     "localhost", "h:http", "h:２２", "[::1]:2222"]),
                    hostile_ints, st.none(), st.text(max_size=12))
job = st.one_of(st.lists(address, max_size=3), address, st.dictionaries(st.text(max_size=4), address, max_size=2))
tf_configs = st.one_of(
    st.fixed_dictionaries({"cluster": st.dictionaries(st.sampled_from(["worker", "chief", "ps", ""]), job, max_size=3),
                           "task": st.one_of(st.fixed_dictionaries(
                               {"type": st.one_of(st.sampled_from(["worker", "chief", "evaluator"]), hostile_ints),
                                "index": st.one_of(hostile_ints, st.sampled_from(["0", 0.0, True, None, [0]]))}),
                               hostile_ints, st.none())}),
    st.lists(st.integers(), max_size=2), st.none(), st.text(max_size=20))


def _tf_config_property(value, raw):
    os.environ["TF_CONFIG"] = raw if raw is not None else json.dumps(value)
    try:
        cfg = distribute.tf_config()
    except ConfigError as e:
        assert str(e) and "\n" not in str(e) and e.fix, repr(str(e))
        return
    finally:
        del os.environ["TF_CONFIG"]
    # accepted: what TensorFlow's server and the cluster watchdog read is well-formed
    task, cluster = cfg["task"], cfg["cluster"]
    assert isinstance(task["index"], int) and not isinstance(task["index"], bool)
    assert 0 <= task["index"] < len(cluster[task["type"]])
    for addresses in cluster.values():
        for a in addresses:
            host, port = a.rsplit(":", 1)
            assert host and 1 <= int(port) <= 65535


@FAST
@given(tf_configs, st.one_of(st.none(), st.none(), st.sampled_from(["", "{", "[" * 5000, "1e999", "null", "\x01"])))
def test_tf_config_is_a_cluster_or_one_config_error(value, raw):
    _tf_config_property(value, raw)


@pytest.mark.slow
@SLOW
@given(tf_configs, st.one_of(st.none(), st.sampled_from(["", "{", "[" * 5000, "1e999", "null", "\x01"])))
def test_tf_config_slow(value, raw):
    _tf_config_property(value, raw)


# ---- a tool: count_macs as a user runs it -----------------------------------------------------------

macs_args = st.tuples(
    st.one_of(st.none(), hostile_ints, st.sampled_from(["1e3", "ten", "", "0x10", "٣"])),
    st.lists(st.sampled_from([ARCH, os.path.join(BAD, "arch_unknown_op.json"), os.path.join(BAD, "arch_truncated.json"),
                              os.path.join(_DIR, "missing.json"), BAD, "/dev/null", "--nonsense", "--params=maybe"]),
             max_size=2))


def _macs_property(case):
    num_classes, paths = case
    args = ["tools/count_macs.py"] + ([] if num_classes is None else [f"--num_classes={num_classes}"]) + paths
    proc = run_cli(args, cwd=ROOT, timeout=120)
    assert proc.returncode in (0, 2), (args, proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    if proc.returncode == 2:
        lines = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
        assert len(lines) == 1 and "(fix: " in lines[0], proc.stderr[-2000:]
    else:
        assert sum(os.path.basename(p).split(".")[0] in proc.stdout for p in paths) == len(paths), proc.stdout


@TOOL
@given(macs_args)
def test_count_macs_flags_exit_0_or_one_error_line(case):
    _macs_property(case)


@pytest.mark.slow
@TOOL_SLOW
@given(macs_args)
def test_count_macs_flags_slow(case):
    _macs_property(case)


def teardown_module():
    shutil.rmtree(_DIR, ignore_errors=True)
