"""The supernet-learning benchmark runs end to end and prints what the README quotes."""

import re

import pytest

from conftest import assert_one_line_error, run_cli
from resume_helpers import write_fake_fashion


@pytest.mark.slow
def test_bench_supernet_learning_prints_windows_and_ratios(tmp_path):
    (tmp_path / "fm").mkdir()
    data_dir = write_fake_fashion(tmp_path / "fm", n=200, n_test=20)
    proc = run_cli(["tools/bench_supernet_learning.py", f"--data_dir={data_dir}", "--steps=6", "--window=3",
                    "--batch=16", "--schemes=fixed,nested"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {m.group(1): [float(v) for v in re.findall(r"([\d.]+)%", m.group(2))]
            for m in re.finditer(r"^(fixed|nested)\s+train accuracy per 3 steps:(.*)$", proc.stdout, re.M)}
    assert set(rows) == {"fixed", "nested"} and all(len(w) == 2 for w in rows.values()), proc.stdout
    assert all(0.0 <= v <= 100.0 for w in rows.values() for v in w)
    ratio = re.search(r"^nested\s+last window / fixed path: ([\d.]+)$", proc.stdout, re.M)
    assert ratio and abs(float(ratio.group(1)) - rows["nested"][-1] / rows["fixed"][-1]) < 0.01, proc.stdout


def test_bench_supernet_learning_without_data_is_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_cli(["tools/bench_supernet_learning.py", f"--data_dir={empty}", "--steps=2"])
    assert_one_line_error(proc, str(empty), "--data_dir")


@pytest.mark.slow
def test_bench_train_step_prints_each_setting_and_its_ratio():
    proc = run_cli(["tools/bench_train_step.py", "--arch=fashion_mnist_example.json", "--batch=8", "--steps=2",
                    "--settings=eigen,onednn+kernels"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {m.group(1): (float(m.group(2)), float(m.group(3)))
            for m in re.finditer(r"^\s+(\S+)\s+([\d.]+) ms/step\s+x([\d.]+) vs eigen$", proc.stdout, re.M)}
    assert set(rows) == {"eigen", "onednn+kernels"}, proc.stdout
    assert rows["eigen"][1] == 1.0
    ms_eigen, ms_fast = rows["eigen"][0], rows["onednn+kernels"][0]
    assert abs(rows["onednn+kernels"][1] - ms_eigen / ms_fast) < 0.01 + 0.01 * ms_eigen / ms_fast


def test_bench_train_step_bad_arch_is_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"space": {}, "ops": [}')
    proc = run_cli(["tools/bench_train_step.py", f"--arch={bad}"])
    assert_one_line_error(proc, str(bad))
    # an empty batch "ran" at 6.7 ms/step before; now refused before any child starts
    proc = run_cli(["tools/bench_train_step.py", "--arch=fashion_mnist_example.json", "--batch=0"])
    assert_one_line_error(proc, "--batch", "must be at least 1")


@pytest.mark.slow
def test_bench_table_workers_prints_speedup_and_agreement_of_both_tables(tmp_path):
    import json

    import numpy as np

    from search_helpers import micro_space

    from proxyless_tf.latency.table import LatencyTable

    space = micro_space()
    sp = tmp_path / "micro.json"
    space.to_json(sp)
    res_path = tmp_path / "res.json"
    proc = run_cli(["tools/bench_table_workers.py", f"--space={sp}", "--workers=2", "--num_runs=5",
                    "--warmup_runs=1", "--archs=4", f"--out_dir={tmp_path / 'b'}", f"--json_out={res_path}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(res_path.read_text())
    m = re.search(r"workers ([\d.]+) s: speed-up ([\d.]+)x", proc.stdout)
    assert m and float(m.group(2)) == round(res["speedup"], 2), proc.stdout
    assert res["speedup"] == res["wall_s"]["1"] / res["wall_s"]["2"]
    one, two = (LatencyTable.load(tmp_path / "b" / f"table_{n}w.json") for n in (1, 2))
    assert len(two.device["workers"]) == 2 and list(one.entries) == list(two.entries)
    level = two.device["reference_ms"] / one.device["reference_ms"]
    assert res["reference_ms"]["2"][0] == two.device["reference_ms"]  # the merged table's scale is worker 0's
    for scale, div in (("ms", 1.0), ("ratio", level)):
        rel = [getattr(two.entries[k], one.statistic) / getattr(one.entries[k], one.statistic) / div - 1
               for k in one.entries]
        got = res[f"entry_rel_diff_{scale}"]
        assert res["entries"] == len(rel) and got["max_abs"] == pytest.approx(max(abs(r) for r in rel), rel=1e-12)
        assert got["median_abs"] == pytest.approx(float(np.median(np.abs(rel))), rel=1e-12)
        assert re.search(rf"^{scale}\s+scale, 2 workers vs 1: entries \(\w+\) median \|diff\| "
                         rf"{got['median_abs'] * 100:.1f} %", proc.stdout, re.M), proc.stdout


@pytest.mark.slow
def test_bench_input_prints_rates_per_core_and_the_cores_a_step_needs():
    proc = run_cli(["tools/bench_input.py", "--arch=fashion_mnist_example.json", "--num_classes=10",
                    "--num_images=6", "--jpeg_size=64x48", "--batch=4", "--pipeline_images=24", "--threads=1,2",
                    "--train_batch=4", "--train_steps=2"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"^input: 6 JPEG files 64x48, quality 90, crops of a photograph", proc.stdout, re.M), proc.stdout
    rows = {int(m.group(1)): [float(v) for v in m.groups()[1:]] for m in re.finditer(
        r"^\s+(\d+) parallel call\(s\):\s+([\d.]+) images/s\s+([\d.]+) CPU cores busy\s+([\d.]+) images/s per core$",
        proc.stdout, re.M)}
    assert sorted(rows) == [1, 2], proc.stdout
    for ips, busy, per_core in rows.values():
        assert ips > 0 and busy > 0 and per_core > 0
        assert per_core == pytest.approx(ips / busy, rel=0.02, abs=0.2)  # images per CPU-second
    step = re.search(r"^training step: .*fashion_mnist_example.json at 28x28x1, 10 classes, batch 4: ([\d.]+) ms/step "
                     r"= ([\d.]+) images/s", proc.stdout, re.M)
    assert step and float(step.group(1)) > 0, proc.stdout
    assert float(step.group(2)) == pytest.approx(4 / float(step.group(1)) * 1000, rel=0.01)
    need = re.search(r"^cores needed to feed one such step: ([\d.]+)\s+\(= ([\d.]+) / ([\d.]+), the per-core rate "
                     r"at 2 parallel", proc.stdout, re.M)
    assert need and float(need.group(3)) == pytest.approx(rows[2][2], abs=0.051), proc.stdout
    assert float(need.group(1)) == pytest.approx(float(need.group(2)) / float(need.group(3)), rel=0.01, abs=0.001)


def test_bench_input_bad_images_folder_is_one_line(tmp_path):
    proc = run_cli(["tools/bench_input.py", f"--images={tmp_path}", "--arch=fashion_mnist_example.json"])
    assert_one_line_error(proc, str(tmp_path), "--images", "no .jpg")
    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    proc = run_cli(["tools/bench_input.py", f"--images={tmp_path}", "--arch=fashion_mnist_example.json"])
    assert_one_line_error(proc, str(tmp_path / "a.jpg"), "cannot be decoded")
