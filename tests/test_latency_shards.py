"""One latency table from several workers: the merge's checks and arithmetic, and host processes for real."""

import json

import pytest

from conftest import assert_one_line_error, run_cli
from search_helpers import micro_space, synthetic_ms

from proxyless_tf.errors import ConfigError
from proxyless_tf.latency import keys as keys_lib
from proxyless_tf.latency import shards
from proxyless_tf.latency.table import LatencyStats, LatencyTable

DEVICE = {"backend": "litert", "threads": 1, "clock": "ref", "host_cpu": "x", "hostname": "h", "date": "d"}


def _write_shards(tmp_path, space, count=2, ref=(1.0, 1.25), device=None, drop=()):
    keys = keys_lib.required_keys(space, 10)
    paths = []
    for i in range(count):
        dev = dict(device or DEVICE, shard=f"{i}/{count}", reference_ms=ref[i], build_seconds=10.0 + i)
        entries = {}
        for k in shards.shard_keys(keys, i, count):
            if k in drop:
                continue
            # what worker i stores: the measured ratio x its own reference_ms
            ratio = synthetic_ms(k)
            entries[k] = LatencyStats(ratio * ref[i], 0.9 * ratio * ref[i], 1.1 * ratio * ref[i], 20, ratio * ref[i])
        p = tmp_path / f"t.shard{i}-of-{count}.json"
        LatencyTable(dev, entries, 10, space.name, space.fingerprint(), statistic="median").save(p)
        paths.append(str(p))
    return keys, paths


def test_shards_partition_the_keys_round_robin():
    keys = [f"k{i}" for i in range(7)]
    parts = [shards.shard_keys(keys, i, 3) for i in range(3)]
    assert parts == [["k0", "k3", "k6"], ["k1", "k4"], ["k2", "k5"]]
    assert shards.parse_shard("1/3") == (1, 3)
    for bad in ("3/3", "1", "a/b", "0/0"):
        with pytest.raises(ConfigError, match="--shard"):
            shards.parse_shard(bad)
    assert shards.shard_path("/x/t.json", 1, 3) == "/x/t.shard1-of-3.json"


def test_merge_puts_every_shard_on_worker_0s_reference_scale(tmp_path):
    space = micro_space()
    keys, paths = _write_shards(tmp_path, space)
    table = shards.merge(space, 10, paths, tmp_path / "t.json")
    assert list(table.entries) == keys  # complete, in the space's key order
    for k in keys:  # every entry = its ratio x worker 0's reference (1.0 ms), whichever worker measured it
        e = table.entries[k]
        assert (e.median, e.p5, e.p95, e.floor) == pytest.approx(
            (synthetic_ms(k), 0.9 * synthetic_ms(k), 1.1 * synthetic_ms(k), synthetic_ms(k)), rel=1e-12)
    assert table.device["reference_ms"] == 1.0 and "shard" not in table.device
    assert [w["shard"] for w in table.device["workers"]] == ["0/2", "1/2"]
    assert [w["reference_ms"] for w in table.device["workers"]] == [1.0, 1.25]
    assert table.device["build_seconds"] == 11.0  # the slowest worker's time: they ran side by side
    back = LatencyTable.load(tmp_path / "t.json")
    assert back.entries == table.entries


def test_merge_refuses_a_table_that_would_lie(tmp_path):
    space = micro_space()
    keys, paths = _write_shards(tmp_path, space, drop=(keys_lib.required_keys(space, 10)[1],))
    with pytest.raises(ConfigError, match=r"shard1-of-2.json: entries: 1 of its"):
        shards.merge(space, 10, paths, tmp_path / "t.json")
    assert not (tmp_path / "t.json").exists()
    # worker 1 measured on another phone model: a mixed table would predict neither
    keys, paths = _write_shards(tmp_path, space)
    d = json.loads(open(paths[1]).read())
    d["device"]["host_cpu"] = "another CPU"
    open(paths[1], "w").write(json.dumps(d))
    with pytest.raises(ConfigError, match=r"device.host_cpu: this worker measured with host_cpu='another CPU'"):
        shards.merge(space, 10, paths, tmp_path / "t.json")
    # shards dealt for 3 workers cannot be merged as 2
    keys, paths = _write_shards(tmp_path, space, count=3, ref=(1.0, 1.0, 1.0))
    with pytest.raises(ConfigError, match=r"device.shard: is '0/3', expected '0/2'"):
        shards.merge(space, 10, paths[:2], tmp_path / "t.json")


@pytest.mark.slow
def test_two_host_processes_build_one_table(tmp_path):
    """--workers=2 with LiteRT (clock=ref): both shards measured for real, merged on one scale."""
    space = micro_space()
    sp = tmp_path / "micro.json"
    space.to_json(sp)
    out = tmp_path / "table.json"
    args = ["tools/build_latency_table.py", f"--space={sp}", f"--out={out}", "--backend=litert", "--workers=2",
            "--clock=ref", "--warmup_runs=2", "--num_runs=10", "--rounds=2", "--num_classes=10", "--noprogress"]
    proc = run_cli(args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    keys = keys_lib.required_keys(space, 10)
    table = LatencyTable.load(out)
    assert list(table.entries) == keys and "from 2 workers" in proc.stdout
    parts = [LatencyTable.load(shards.shard_path(out, i, 2)) for i in range(2)]
    assert [p.device["shard"] for p in parts] == ["0/2", "1/2"]
    ref = [p.device["reference_ms"] for p in parts]
    for i, part in enumerate(parts):
        assert list(part.entries) == shards.shard_keys(keys, i, 2)
        for k, e in part.entries.items():
            assert table.entries[k].median == pytest.approx(e.median * ref[0] / ref[i], rel=1e-12)
    # the same command again: complete, nothing measured, the table unchanged
    before = out.read_text()
    again = run_cli(args)
    assert again.returncode == 0 and "is complete" in again.stdout and out.read_text() == before
    # a table of one worker is not silently continued by several
    single = tmp_path / "single.json"
    LatencyTable(dict(DEVICE), {}, 10, space.name, space.fingerprint()).save(single)
    bad = run_cli([a if not a.startswith("--out=") else f"--out={single}" for a in args])
    assert_one_line_error(bad, str(single), "device.workers", "not merged shards")


def test_worker_flags_that_cannot_work_are_one_line(tmp_path):
    space = micro_space()
    sp = tmp_path / "micro.json"
    space.to_json(sp)
    base = ["tools/build_latency_table.py", f"--space={sp}", f"--out={tmp_path / 't.json'}"]
    assert_one_line_error(run_cli(base + ["--backend=adb", "--workers=2", "--benchmark_binary=x"]),
                          "--workers", "--serial=SERIAL_A,SERIAL_B")
    assert_one_line_error(run_cli(base + ["--serial=A,B"]), "--serial", "adb")
    assert_one_line_error(run_cli(base + ["--workers=2", "--shard=0/2"]), "--shard")
    assert_one_line_error(run_cli(base + ["--shard=2/2"]), "--shard", "0/2")
