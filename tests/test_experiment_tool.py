"""tools/experiment_matched_latency.py end to end on a micro space: every stage runs, a rerun resumes."""

import json
import os

from conftest import ROOT, run_cli
from test_search_cli import write_micro


def test_matched_latency_experiment_runs_every_contender_and_resumes(tmp_path):
    space, table, sp, tp = write_micro(tmp_path)
    out = tmp_path / "exp"
    argv = [os.path.join(ROOT, "tools", "experiment_matched_latency.py"), f"--out_dir={out}", f"--space={sp}",
            f"--latency_table={tp}", "--reference_op=mb_k3_e3", "--seeds=0", "--num_random=2", "--tolerance=0.1",
            "--parallel=2", "--child_threads=1", "--nomeasure",
            "--search_args=--dataset=fashion_mnist,--epochs=2,--warmup_epochs=1,--max_train=128,--valid_size=40,"
            "--batch_size=16,--steps_per_epoch=2,--latency_loss=add#abs,--verbose=2",
            "--train_args=--dataset=fashion_mnist,--epochs=1,--train_examples=128,--batch_size=32,--steps_per_epoch=2"]
    proc = run_cli(argv, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    from proxyless_tf.experiments import uniform_arch

    target = table.predict(uniform_arch(space, "mb_k3_e3"), 10)
    assert abs(res["target_ms"] - target) < 1e-9
    assert {g: s["n"] for g, s in res["groups"].items()} == {"aware": 1, "blind": 1, "random": 2, "mbv2": 1}
    for row in res["rows"]:
        assert 0.0 <= row["test_accuracy"] <= 1.0
        if row["group"] == "random":
            assert abs(row["predicted_ms"] - target) <= 0.1 * target
    assert len({tuple(r["ops"]) for r in res["rows"] if r["group"] == "random"}) == 2
    assert res["cost"]["per_seed"][0]["search_rss_mib"] > 100  # a TF process, measured through wait4
    assert (out / "pareto.png").stat().st_size > 1000 and (out / "alpha_heatmap.png").stat().st_size > 1000
    # a second run finds every search and training done and only re-reports
    again = run_cli(argv, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("[skip]") == 7 and "[start" not in again.stdout
