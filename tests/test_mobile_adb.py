"""The adb path end to end against a fake phone that really runs the pushed model.

A fake `adb` (tests/fake_adb.py) goes first on PATH: it lists devices, stores pushed files,
and answers `benchmark_model` command lines by running the .tflite with LiteRT here and
printing benchmark_model's text. So push -> run -> parse -> table is the real code path;
only the phone is simulated.
"""

import json
import os
import sys

import keras
import pytest

from conftest import ROOT, assert_one_line_error, run_cli
from proxyless_tf.errors import ConfigError
from proxyless_tf.latency.backends import make_backend
from proxyless_tf.latency.table import LatencyTable

TINY_SPACE = {"name": "tiny_adb", "input_shape": [16, 16, 1], "stem": {"out_channels": 4, "kernel": 3, "stride": 2},
              "first_block": {"op": "mb_k3_e1", "out_channels": 4},
              "stages": [{"width": 8, "depth": 2, "stride": 2}], "head": {"out_channels": 16},
              "candidates": ["mb_k3_e3"], "allow_zero": True, "bn_eps": 0.001}


class FakePhone:
    def __init__(self, tmp_path, monkeypatch):
        self.state = tmp_path / "fake_adb_state"
        (self.state / "fs").mkdir(parents=True)
        bindir = tmp_path / "bin"
        bindir.mkdir()
        adb = bindir / "adb"
        adb.write_text(f"#!{sys.executable}\nimport runpy, sys\nsys.argv[0] = 'adb'\n"
                       f"runpy.run_path({os.path.join(ROOT, 'tests', 'fake_adb.py')!r}, run_name='__main__')\n")
        adb.chmod(0o755)
        self.binary = tmp_path / "benchmark_model"
        self.binary.write_text("not really an arm64 binary\n")
        monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.setenv("FAKE_ADB_STATE", str(self.state))
        monkeypatch.delenv("ADB", raising=False)
        self.configure([{"serial": "FAKE01", "state": "device"}])

    def configure(self, devices, **kw):
        (self.state / "config.json").write_text(json.dumps(dict({"devices": devices, "format": "new"}, **kw)))

    def runs(self):
        p = self.state / "runs.jsonl"
        return [json.loads(l) for l in p.read_text().splitlines()] if p.exists() else []

    def shell_log(self):
        return (self.state / "shell.log").read_text().splitlines()


@pytest.fixture
def phone(tmp_path, monkeypatch):
    return FakePhone(tmp_path, monkeypatch)


def _tiny_model():
    inp = keras.Input((16, 16, 3))
    x = keras.layers.DepthwiseConv2D(3, padding="same")(keras.layers.Conv2D(8, 3, padding="same")(inp))
    return keras.Model(inp, keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(x)))


@pytest.mark.parametrize("fmt", ["new", "old"])
def test_parsed_median_is_what_the_phone_measured(phone, fmt):
    phone.configure([{"serial": "FAKE01", "state": "device"}, {"serial": "OTHER", "state": "device"}], format=fmt)
    be = make_backend("adb", serial="FAKE01", benchmark_binary=str(phone.binary), threads=1, warmup_runs=3,
                      num_runs=25, cpu_mask="f0")
    st = be.measure(_tiny_model())
    (run,) = phone.runs()
    t = run["timed_us"]
    assert st.count == 25 == t["count"]
    if fmt == "new":  # percentiles printed: taken as printed
        assert (st.median, st.p5, st.p95) == pytest.approx((t["median"] / 1e3, t["p5"] / 1e3, t["p95"] / 1e3),
                                                           rel=1e-12)
    else:  # only avg/std: median := avg (printed with %g, 6 significant digits)
        assert st.median == pytest.approx(t["avg"] / 1e3, rel=1e-5)
    # Pinned, fixed threads, warm-ups, --min_secs=0, every word quoted for the device shell.
    line = [l for l in phone.shell_log() if "benchmark_model" in l and "--graph" in l][0]
    assert line.startswith("taskset f0 /data/local/tmp/proxyless_tf/benchmark_model --graph=/data/local/tmp/")
    for flag in ("--num_threads=1", "--warmup_runs=3", "--num_runs=25", "--min_secs=0", "--warmup_min_secs=0"):
        assert flag in line
    assert be.describe()["model"] == "Fake Pixel"


@pytest.mark.slow
def test_build_latency_table_on_the_phone_and_device_dying_keeps_the_table(phone, tmp_path):
    space = tmp_path / "tiny.json"
    space.write_text(json.dumps(TINY_SPACE))
    out = tmp_path / "adb_table.json"
    args = ["tools/build_latency_table.py", "--backend=adb", "--serial=FAKE01", f"--benchmark_binary={phone.binary}",
            "--threads=1", "--warmup_runs=2", "--num_runs=9", "--cpu_mask=f0", f"--space={space}", f"--out={out}",
            "--num_classes=3", "--noprogress"]
    env = {"PATH": os.environ["PATH"], "FAKE_ADB_STATE": os.environ["FAKE_ADB_STATE"]}
    proc = run_cli(args, **env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = LatencyTable.load(out)
    runs = phone.runs()
    assert len(table) == len(runs) == 5  # stem, first block, 2 layers x 1 candidate, head
    # Each entry is the median the phone measured for it, in ms (entries are saved in run order).
    for st, run in zip(table.entries.values(), runs):
        assert st.median == pytest.approx(run["timed_us"]["median"] / 1e3, rel=1e-12) and st.count == 9
    assert table.device["backend"] == "adb" and table.device["cpu_mask"] == "f0"

    # Drop two entries (an interrupted build), then the phone dies during the next run.
    d = json.loads(out.read_text())
    for k in list(d["entries"])[-2:]:
        del d["entries"][k]
    out.write_text(json.dumps(d))
    before = out.read_text()
    phone.configure([{"serial": "FAKE01", "state": "device"}], die_on_run=True)
    proc = run_cli(args, **env)
    assert_one_line_error(proc, "FAKE01", "went away")
    assert out.read_text() == before  # the entries measured before are intact


@pytest.mark.slow
def test_two_phones_by_serial_measure_one_table(phone, tmp_path):
    """--serial=A,B: one worker per phone, each measures its round-robin share, merged into one table."""
    from proxyless_tf.latency import keys as keys_lib
    from proxyless_tf.latency import shards
    from proxyless_tf.space import SearchSpace

    phone.configure([{"serial": "FAKE01", "state": "device"}, {"serial": "FAKE02", "state": "device"}])
    space = tmp_path / "tiny.json"
    space.write_text(json.dumps(TINY_SPACE))
    out = tmp_path / "two_phones.json"
    args = ["tools/build_latency_table.py", "--backend=adb", "--serial=FAKE01,FAKE02",
            f"--benchmark_binary={phone.binary}", "--threads=1", "--warmup_runs=2", "--num_runs=9", f"--space={space}",
            f"--out={out}", "--num_classes=3", "--noprogress"]
    env = {"PATH": os.environ["PATH"], "FAKE_ADB_STATE": os.environ["FAKE_ADB_STATE"]}
    proc = run_cli(args, **env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    keys = keys_lib.required_keys(SearchSpace.from_dict(TINY_SPACE), 3)
    table = LatencyTable.load(out)
    assert list(table.entries) == keys and len(keys) == 5
    runs = phone.runs()
    for i, serial in enumerate(("FAKE01", "FAKE02")):
        # each phone ran exactly its shard's keys, in order, and each entry is what that phone measured
        mine = [r for r in runs if r["serial"] == serial]
        share = shards.shard_keys(keys, i, 2)
        assert len(mine) == len(share) == (3, 2)[i]
        for key, run in zip(share, mine):
            assert table.entries[key].median == pytest.approx(run["timed_us"]["median"] / 1e3, rel=1e-12)
    assert table.device["serial"] == "FAKE01,FAKE02" and table.device["model"] == "Fake Pixel"
    assert [w["serial"] for w in table.device["workers"]] == ["FAKE01", "FAKE02"]

    # a second phone of another model: the shards are measured, but never merged into one table
    phone.configure([{"serial": "FAKE01", "state": "device"}, {"serial": "FAKE02", "state": "device",
                                                                 "model": "Fake Pixel 9"}])
    mixed = tmp_path / "mixed.json"
    proc = run_cli([a if not a.startswith("--out=") else f"--out={mixed}" for a in args], **env)
    assert_one_line_error(proc, "mixed.shard1-of-2.json", "device.model", "Fake Pixel 9", "one model")
    assert not mixed.exists()


def test_device_problems_are_one_clear_error(phone):
    kw = dict(benchmark_binary=str(phone.binary))
    phone.configure([])
    with pytest.raises(ConfigError, match="no Android device"):
        make_backend("adb", **kw)
    phone.configure([{"serial": "A1", "state": "unauthorized"}])
    with pytest.raises(ConfigError, match="unauthorized.*Allow USB debugging"):
        make_backend("adb", **kw)
    phone.configure([{"serial": "A1", "state": "offline"}])
    with pytest.raises(ConfigError, match="offline"):
        make_backend("adb", serial="A1", **kw)
    phone.configure([{"serial": "A1", "state": "device"}, {"serial": "B2", "state": "device"}])
    with pytest.raises(ConfigError, match="2 devices attached.*--serial"):
        make_backend("adb", **kw)
    with pytest.raises(ConfigError, match="no such device"):
        make_backend("adb", serial="C3", **kw)


def test_missing_benchmark_model_and_corrupt_model(phone, tmp_path):
    with pytest.raises(ConfigError, match="no benchmark_model given"):
        make_backend("adb")
    be = make_backend("adb", benchmark_binary=str(tmp_path / "nope" / "benchmark_model"))
    with pytest.raises(ConfigError, match="benchmark_model does not exist"):
        be.measure_tflite(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 64)
    be = make_backend("adb", benchmark_binary="/data/local/tmp/benchmark_model")
    with pytest.raises(ConfigError, match="not on the device"):
        be.measure_tflite(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 64)
    be = make_backend("adb", benchmark_binary=str(phone.binary))
    with pytest.raises(ConfigError, match="not a TFLite model"):
        be.measure_tflite(b"garbage, not a flatbuffer")
    # A flatbuffer header with a broken body: the phone's benchmark_model refuses it.
    with pytest.raises(ConfigError, match="run failed"):
        be.measure_tflite(b"\x1c\x00\x00\x00TFL3" + b"\xff" * 64)


@pytest.mark.slow
def test_predictor_fit_runs_through_the_phone(phone, tmp_path):
    """validate_latency --fit --repeat on a phone table: whole networks go through adb and benchmark_model
    like the blocks did (the fake phone runs them), and the fitted predictor lands in the table with the
    phone's statistic (median) and the held-out, repeat and lower-pass figures beside it."""
    space = tmp_path / "tiny.json"
    space.write_text(json.dumps(TINY_SPACE))
    out = tmp_path / "adb_table.json"
    env = {"PATH": os.environ["PATH"], "FAKE_ADB_STATE": os.environ["FAKE_ADB_STATE"]}
    proc = run_cli(["tools/build_latency_table.py", "--backend=adb", "--serial=FAKE01",
                    f"--benchmark_binary={phone.binary}", "--threads=1", "--warmup_runs=2", "--num_runs=9",
                    f"--space={space}", f"--out={out}", "--num_classes=3", "--noprogress"], **env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    blocks = len(phone.runs())
    proc = run_cli(["tools/validate_latency.py", f"--table={out}", f"--space={space}", "--fit", "--fit_samples=6",
                    "--samples=3", "--repeat", f"--plot={tmp_path / 'p.png'}", "--serial=FAKE01",
                    f"--benchmark_binary={phone.binary}"], **env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = phone.runs()
    assert len(runs) - blocks == 6 + 3 + 3  # fit, held-out, held-out again: all on the phone
    assert all(r.get("serial", "FAKE01") == "FAKE01" for r in runs)
    table = LatencyTable.load(out)
    cal = table.calibration
    assert table.statistic == "median" and cal["holdout"]["n"] == 3
    assert cal["holdout_repeat"]["n"] == 3 and cal["holdout_best_of_two"]["n"] == 3
    for line in ("held-out predictor", "repeat measurement", "predictor vs lower pass"):
        assert line in proc.stdout
    # the stored predictor is the one `predict` uses: scale * raw sum + per_block * blocks + offset
    import proxyless_tf as pt

    arch = pt.SearchSpace.from_json(str(space)).sample(0)
    want = cal["scale"] * table.raw_sum(arch, 3) + cal.get("per_block", 0.0) * table.num_blocks(arch) + cal["offset"]
    if not cal.get("corrections"):
        assert table.predict(arch, 3) == pytest.approx(max(want, 0.0), rel=1e-9)
