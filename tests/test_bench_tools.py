"""The supernet-learning benchmark runs end to end and prints what the README quotes."""

import re

from conftest import assert_one_line_error, run_cli
from resume_helpers import write_fake_fashion


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
