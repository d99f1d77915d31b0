"""Building a latency table: every key measured, a killed build resumes, bad input is one line."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, assert_one_line_error, cli_env, run_cli
from latency_helpers import TINY_SPACE, tiny_space, write_space
from proxyless_tf.errors import ConfigError
from proxyless_tf.latency import keys as keys_lib
from proxyless_tf.latency.backends import LiteRTBackend
from proxyless_tf.latency.builder import build_table
from proxyless_tf.latency.table import LatencyTable

FAST = ["--warmup_runs=2", "--num_runs=5"]


def _entries(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)["entries"]
    except (OSError, ValueError, KeyError):
        return {}


@pytest.mark.slow
def test_killed_build_resumes_and_keeps_what_it_measured(tmp_path):
    space_path = write_space(tmp_path)
    out = str(tmp_path / "table.json")
    keys = keys_lib.required_keys(tiny_space(), 10)
    assert len(keys) == 7  # stem, first block, head, 2 shared by layers 0-1, 2 of layer 2
    cmd = [sys.executable, os.path.join(ROOT, "tools", "build_latency_table.py"), f"--space={space_path}",
           f"--out={out}", "--num_classes=10", "--noprogress", *FAST]
    proc = subprocess.Popen(cmd, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    try:
        while len(_entries(out)) < 2:
            assert proc.poll() is None, "build ended before it could be killed"
            assert time.time() < deadline, "no partial progress written"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    before = _entries(out)
    assert 2 <= len(before) < len(keys), "the kill came too late to test a resume"
    done = subprocess.run(cmd, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    t = LatencyTable.load(out)
    assert sorted(t.entries) == sorted(keys)
    for k, v in before.items():  # kept exactly: same floats, not measured again
        assert t.entries[k].to_dict() == v
    assert t.device["backend"] == "litert" and t.device["threads"] == 1 and t.device["num_runs"] == 5
    assert all(e.count == 5 for e in t.entries.values())


def test_resume_refuses_another_space_or_device(tmp_path):
    out = str(tmp_path / "t.json")
    space = tiny_space()
    fast = LiteRTBackend(threads=1, warmup_runs=1, num_runs=3, clock="wall")
    t = LatencyTable(fast.describe(), {}, 10, space.name, space.fingerprint(), path=out)
    t.save()
    with pytest.raises(ConfigError) as e:
        build_table(tiny_space(head={"out_channels": 48}), fast, out, 10, progress=False)
    assert e.value.field == "space.fingerprint" and out in str(e.value)
    with pytest.raises(ConfigError) as e:
        build_table(space, LiteRTBackend(threads=2, warmup_runs=1, num_runs=3, clock="wall"), out, 10,
                    progress=False)
    assert e.value.field == "device.threads"
    with pytest.raises(ConfigError) as e:
        build_table(space, fast, out, 1000, progress=False)
    assert e.value.field == "num_classes"
    assert LatencyTable.load(out).entries == {}  # nothing was written into it


@pytest.mark.parametrize("content,field", [
    (b'{"format": 1, "device": {"backend": "litert"}, "entries": {', "line 1"),        # truncated
    (b'{"format": 1, "device": {"backend": "litert"} "entries": {}}', "line 1"),     # malformed
    (b'{"format": 1, "device": {"backend": "\xff\xfe"}, "entries": {}}', "<file>"),  # not UTF-8
])
def test_bad_table_file_is_one_line_and_writes_nothing(tmp_path, content, field):
    table = tmp_path / "bad.json"
    table.write_bytes(content)
    plot = tmp_path / "plot.png"
    proc = run_cli(["tools/validate_latency.py", f"--table={table}", f"--space={write_space(tmp_path)}",
                    "--samples=3", "--fit", "--fit_samples=3", f"--plot={plot}"], timeout=120)
    assert_one_line_error(proc, str(table), field)
    assert table.read_bytes() == content
    assert sorted(os.listdir(tmp_path)) == ["bad.json", "tiny_space.json"]


def test_unknown_op_in_space_is_one_line_and_writes_nothing(tmp_path):
    bad = dict(TINY_SPACE, candidates=["mb_k3_e3", "mb_k4_x3"])
    space_path = write_space(tmp_path, bad, "bad_space.json")
    out = tmp_path / "table.json"
    proc = run_cli(["tools/build_latency_table.py", f"--space={space_path}", f"--out={out}", *FAST], timeout=120)
    assert_one_line_error(proc, space_path, "candidates[1]", "mb_k4_x3")
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == ["bad_space.json"]


def test_bad_entry_or_unknown_backend_is_a_config_error(tmp_path):
    from proxyless_tf.latency.backends import make_backend

    bad = tmp_path / "t.json"
    bad.write_text('{"format": 1, "device": {"backend": "litert"}, "num_classes": 10, '
                   '"entries": {"stem:16x16x1:k3:s1:8": {"median": -1, "p5": 0, "p95": 0, "count": 1}}}')
    with pytest.raises(ConfigError) as e:
        LatencyTable.load(bad)
    assert e.value.field == "entries['stem:16x16x1:k3:s1:8'].median" and e.value.source == str(bad)
    with pytest.raises(ConfigError, match="unknown backend 'gpu'"):
        make_backend("gpu")
    with pytest.raises(ConfigError, match="do not apply"):
        make_backend("litert", serial="abc")
    with pytest.raises(ConfigError, match="threads=0"):
        make_backend("litert", threads=0)


def test_reference_clock_stores_its_scale_and_a_resume_keeps_it(tmp_path):
    """clock='ref': entries are target/reference ratios x the table's reference_ms, fixed once."""
    from proxyless_tf.latency.backends import LiteRTBackend
    from proxyless_tf.latency.builder import build_table
    from proxyless_tf.latency.table import LatencyTable

    space = tiny_space()
    out = tmp_path / "t.json"
    b = LiteRTBackend(threads=1, clock="ref", warmup_runs=2, num_runs=10, rounds=2, retries=0, round_pause_s=0)
    table = build_table(space, b, out, num_classes=4, progress=False)
    ref_ms = table.device["reference_ms"]
    assert ref_ms > 0 and table.statistic == "median" and "interleaved" in table.device["timer"]
    assert all(e.floor > 0 and e.count == 10 for e in table.entries.values())
    # resume with a fresh backend: the stored scale is adopted, not re-measured
    data = json.loads(out.read_text())
    dropped = sorted(data["entries"])[0]
    del data["entries"][dropped]
    out.write_text(json.dumps(data))
    b2 = LiteRTBackend(threads=1, clock="ref", warmup_runs=2, num_runs=10, rounds=2, retries=0, round_pause_s=0)
    again = build_table(space, b2, out, num_classes=4, progress=False)
    assert b2.reference_ms == ref_ms and LatencyTable.load(out).device["reference_ms"] == ref_ms
    assert dropped in again.entries


def test_build_progress_in_a_log_file_is_a_line_every_ten_blocks(tmp_path, capsys):
    """Not a terminal (pytest captures stdout): no redrawn bar, a plain line every 10 blocks and at the end."""
    from proxyless_tf.latency.table import LatencyStats

    class Instant:  # a backend that answers at once: only the progress output is under test
        statistic = "p5"

        def describe(self):
            return {"backend": "instant"}

        def measure(self, model):
            return LatencyStats(0.2, 0.1, 0.3, 3)

    space = tiny_space()
    n = len(keys_lib.required_keys(space, 10))
    build_table(space, Instant(), tmp_path / "t.json", 10, progress=True)
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith(f"{n} keys, 0 already measured, {n} to go")
    assert [l.split(" blocks")[0].strip() for l in out[1:]] == [f"{n}/{n}"]  # 7 keys: only the final line
    assert "━" not in "".join(out)
