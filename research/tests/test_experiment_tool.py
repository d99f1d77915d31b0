"""research/tools/experiment_matched_latency.py end to end on a micro space: every stage runs, a rerun resumes."""

import json
import os

import numpy as np
import pytest

from conftest import ROOT, assert_one_line_error, run_cli
from test_search_cli import write_micro


@pytest.mark.slow
def test_matched_latency_experiment_runs_every_contender_and_resumes(tmp_path):
    """Matched on the measurement (the default): a real LiteRT table of the micro space, built here;
    the target is the uniform network's measured latency, random archs are kept by measurement,
    the searches derive with --derive_measure."""
    from proxyless_tf.latency import backends, builder

    space, _, sp, _ = write_micro(tmp_path)
    tp = tmp_path / "litert.json"
    table = builder.build_table(space, backends.make_backend("litert", threads=1, clock="ref", warmup_runs=5,
                                                             num_runs=20), str(tp), 10, progress=False)
    out = tmp_path / "exp"
    argv = [os.path.join(ROOT, "research", "tools", "experiment_matched_latency.py"), f"--out_dir={out}", f"--space={sp}",
            f"--latency_table={tp}", "--reference_op=mb_k3_e3", "--seeds=0", "--num_random=2", "--tolerance=0.5",
            "--screen_tolerance=1.0", "--final_rounds=2", "--parallel=2", "--search_parallel=1", "--child_threads=1",
            "--search_args=--dataset=fashion_mnist,--epochs=2,--warmup_epochs=1,--max_train=128,--valid_size=40,"
            "--batch_size=16,--steps_per_epoch=2,--latency_loss=add#abs,--verbose=2",
            "--train_args=--dataset=fashion_mnist,--epochs=1,--train_examples=128,--batch_size=32,--steps_per_epoch=2"]
    proc = run_cli(argv, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    measured = json.loads((out / "measured.json").read_text())
    from research.experiments import uniform_arch

    mbv2 = uniform_arch(space, "mb_k3_e3")
    target = measured[",".join(mbv2.ops)]
    assert res["target_ms"] == target and res["match_on"] == "measured"
    assert {g: s["n"] for g, s in res["groups"].items()} == {"aware": 1, "blind": 1, "random": 2, "mbv2": 1}
    for row in res["rows"]:
        assert 0.0 <= row["test_accuracy"] <= 1.0
        if row["group"] == "random":  # kept by its first measurement
            assert abs(measured[",".join(row["ops"])] - target) <= 0.5 * target
            assert abs(row["predicted_ms"] - table.predict(mbv2, 10)) <= 1.0 * table.predict(mbv2, 10)
        if row["group"] in ("aware", "blind"):  # the search measured its derived network itself
            assert row["search_measured_ms"] > 0 and 1 <= row["derive_measure_rounds"] <= 5
            # the uniform network timed beside each derived one (--measured_reference), not the first number
            sres = json.loads((out / f"search_{row['name']}" / "result.json").read_text())
            assert all(r["reference_ms"] > 0 for r in sres["measured_rounds"])
            assert row["search_measured_target_ms"] == sres["measured_target_ms"] > 0  # the clock of the column
            last = json.loads((out / f"search_{row['name']}" / "alpha_history.json").read_text())[-1]["probs"]
            assert row["alpha_max_prob_mean"] == np.mean([max(p.values()) for p in last])
            assert row["alpha_uniform_prob_mean"] == np.mean([1 / len(p) for p in last])
    assert len({tuple(r["ops"]) for r in res["rows"] if r["group"] == "random"}) == 2
    final = json.loads((out / "final_measured.json").read_text())["rounds"]
    assert len(final) == 2 and all(set(rd) == set(final[0]) for rd in final)  # every network, every round
    assert set(final[0]) == {",".join(r["ops"]) for r in res["rows"]}  # each distinct network once a round
    for row in res["rows"]:  # the reported latency is the median of the final rounds, not the first measurement
        key = ",".join(row["ops"])
        assert row["measured_ms"] == float(np.median([rd[key] for rd in final]))
    rep = res["repeatability"]
    assert rep["first_ms"] == target and rep["rounds"] == 2 and len(rep["mbv2_rounds_ms"]) == 2
    np.testing.assert_allclose(rep["mbv2_median_ms"], np.median(rep["mbv2_rounds_ms"]))
    assert 0 <= rep["spread_pct_median"] <= rep["spread_pct_max"]
    # the band is judged against the target network's median in the same final rounds, the first
    # measurement's error kept beside it
    ref = res["final_target_ms"]
    assert ref == rep["mbv2_median_ms"]
    for g, s in res["groups"].items():
        lat = np.array([r["measured_ms"] for r in res["rows"] if r["group"] == g])
        np.testing.assert_allclose(s["measured_err_pct_max"], np.max(np.abs(lat - ref) / ref * 100))
        np.testing.assert_allclose(s["measured_err_first_pct_max"], np.max(np.abs(lat - target) / target * 100))
    assert res["groups"]["mbv2"]["measured_err_pct_max"] == 0.0  # one distinct network: its own median
    assert res["claims"]["aware_measured_within_5pct"] == (res["groups"]["aware"]["measured_err_pct_max"] <= 5.0)
    assert f"the target network too ({ref:.4f} ms, their median)" in proc.stdout
    assert "Final α (mean over layers of the largest op probability" in proc.stdout
    assert res["noise"] is None and "Seed noise" not in proc.stdout  # one seed: no seed noise to report
    assert res["cost"]["per_seed"][0]["search_rss_mib"] > 100  # a TF process, measured through wait4
    assert (out / "pareto.png").stat().st_size > 1000 and (out / "alpha_heatmap.png").stat().st_size > 1000
    # a second run finds every search and training done and only re-reports, measuring nothing
    again = run_cli(argv, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("[skip]") == 7 and "[start" not in again.stdout
    assert json.loads((out / "measured.json").read_text()) == measured
    assert json.loads((out / "final_measured.json").read_text())["rounds"] == final
    assert "final measurement" not in again.stdout
    # another out_dir reusing this one, without the blind search: the same plan, every job it has
    # copied, nothing retrained; its rows land beside the section in the results file
    out2 = tmp_path / "exp2"
    md = tmp_path / "docs" / "RESULTS.md"
    md.parent.mkdir()
    argv2 = [a if not a.startswith("--out_dir=") else f"--out_dir={out2}" for a in argv] + [
        f"--reuse_from={out}", "--searches=aware", f"--results_md={md}", "--results_tag=t"]
    reused = run_cli(argv2, timeout=600)
    assert reused.returncode == 0, reused.stderr[-3000:]
    assert reused.stdout.count("[reuse]") == 5 and "[start" not in reused.stdout
    assert json.loads((out2 / "measured.json").read_text()) == measured
    res2 = json.loads((out2 / "results.json").read_text())
    assert [(r["name"], r["test_accuracy"]) for r in res2["rows"]] == [(r["name"], r["test_accuracy"])
                                                                       for r in res["rows"] if r["group"] != "blind"]
    assert set(res2["groups"]) == {"aware", "random", "mbv2"}
    assert all(rec["reused_from"] == str(out) for rec in json.loads((out2 / "jobs.json").read_text()).values())
    assert json.loads((md.parent / "matched_latency_t_results.json").read_text()) == res2
    assert "[matched_latency_t_results.json](matched_latency_t_results.json)" in md.read_text()
    assert_one_line_error(run_cli(argv + ["--searches=aware,greedy"]), "--searches", "aware,blind")
    # matching on the measurement without measuring: one line
    assert_one_line_error(run_cli(argv + ["--nomeasure"]), "--match_on", "--match_on=predicted")


@pytest.mark.slow
def test_a_run_matched_on_the_prediction_can_be_reused(tmp_path):
    """--match_on=predicted --nomeasure keeps no measurements: its plan is archs/ alone, and a second
    out_dir with --reuse_from takes those archs and every finished job instead of refusing the run."""
    space, table, sp, tp = write_micro(tmp_path)
    out = tmp_path / "exp"
    argv = [os.path.join(ROOT, "research", "tools", "experiment_matched_latency.py"), f"--out_dir={out}", f"--space={sp}",
            f"--latency_table={tp}", "--match_on=predicted", "--nomeasure", "--reference_op=mb_k3_e3", "--seeds=0",
            "--num_random=1", "--tolerance=0.5", "--searches=aware", "--parallel=2", "--child_threads=1",
            "--search_args=--dataset=fashion_mnist,--epochs=2,--warmup_epochs=1,--max_train=128,--valid_size=40,"
            "--batch_size=16,--steps_per_epoch=2,--latency_loss=add#hinge,--verbose=2",
            "--train_args=--dataset=fashion_mnist,--epochs=1,--train_examples=128,--batch_size=32,--steps_per_epoch=2"]
    proc = run_cli(argv, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not (out / "measured.json").exists()
    res = json.loads((out / "results.json").read_text())
    assert sorted(r["name"] for r in res["rows"]) == ["aware_s0", "mbv2_s0", "random_0_s0"]
    # nothing measured: the latency claim is not judged (None), the accuracy claims are
    assert res["claims"]["aware_measured_within_5pct"] is None and len(res["claims"]) == 4
    assert "aware_measured_within_5pct = not measured" in proc.stdout
    out2 = tmp_path / "exp2"
    argv2 = [a if not a.startswith("--out_dir=") else f"--out_dir={out2}" for a in argv] + [f"--reuse_from={out}"]
    reused = run_cli(argv2, timeout=600)
    assert reused.returncode == 0, reused.stdout[-3000:] + reused.stderr[-3000:]
    assert reused.stdout.count("[reuse]") == 4 and "[start" not in reused.stdout
    assert (out2 / "archs" / "random_0.json").read_text() == (out / "archs" / "random_0.json").read_text()
    res2 = json.loads((out2 / "results.json").read_text())
    assert [(r["name"], r["test_accuracy"]) for r in res2["rows"]] == [(r["name"], r["test_accuracy"])
                                                                       for r in res["rows"]]
    assert_one_line_error(run_cli(argv + [f"--reuse_from={tmp_path}"]), "--reuse_from", "not an out_dir")


def test_default_table_is_the_committed_one_of_this_hosts_cpu(tmp_path):
    """The tool defines absl flags the search module also defines: run in a subprocess."""
    from proxyless_tf.latency.backends import host_cpu_model

    here, other = tmp_path / "here.json", tmp_path / "other.json"
    here.write_text(json.dumps({"device": {"host_cpu": host_cpu_model()}}))
    other.write_text(json.dumps({"device": {"host_cpu": "not " + host_cpu_model()}}))
    tool_path = os.path.join(ROOT, "research", "tools", "experiment_matched_latency.py")
    code = (f"import importlib.util, json; spec = importlib.util.spec_from_file_location('t', {tool_path!r}); "
            f"tool = importlib.util.module_from_spec(spec); spec.loader.exec_module(tool); "
            f"print(json.dumps([tool.default_table([{str(other)!r}, {str(here)!r}]), "
            f"tool.default_table([{str(other)!r}]), tool.default_table(), tool.FLAGS['latency_table'].default]))")
    proc = run_cli(["-c", code])
    assert proc.returncode == 0, proc.stderr[-3000:]
    picked, fallback, committed, flag_default = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (picked, fallback, flag_default) == (str(here), str(other), None)
    tables = [os.path.join(ROOT, "configs", "latency", f)
              for f in ("fashion_mnist_litert1_ref.json", "fashion_mnist_litert1_ref_xeon.json")]
    hosts = [json.load(open(t))["device"]["host_cpu"] for t in tables]
    assert committed == (tables[hosts.index(host_cpu_model())] if host_cpu_model() in hosts else tables[0])


@pytest.mark.slow
def test_cost_experiment_measures_search_and_retraining_and_resumes(tmp_path):
    import re

    _, _, sp, tp = write_micro(tmp_path)
    out, md = tmp_path / "cost", tmp_path / "RESULTS.md"
    argv = [os.path.join(ROOT, "research", "tools", "experiment_cost.py"), f"--out_dir={out}", f"--results_md={md}",
            "--search_flags=quickstart.flags", "--train_flags=train_fashion_mnist.flags",
            f"--search_args=--space={sp},--latency_table={tp},--nobuild_table,--epochs=2,--warmup_epochs=1,"
            "--max_train=128,--valid_size=40,--batch_size=16,--steps_per_epoch=2,--bn_recalibration_steps=2,"
            "--target_frac=0.5",
            "--train_args=--epochs=1,--train_examples=128,--batch_size=32,--steps_per_epoch=2"]
    proc = run_cli(argv, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    cost = json.loads((out / "cost.json").read_text())
    for job in ("search", "train"):
        assert cost[job]["wall_s"] > 1 and cost[job]["max_rss_mib"] > 100  # a TF process, its own VmHWM
    rt = cost["search"]["wall_s"] / cost["train"]["wall_s"]
    rm = cost["search"]["max_rss_mib"] / cost["train"]["max_rss_mib"]
    m = re.search(r"time ([0-9.]+)×, peak RSS ([0-9.]+)×", proc.stdout)
    assert m and abs(float(m.group(1)) - rt) < 0.006 and abs(float(m.group(2)) - rm) < 0.006
    assert json.loads((out / "train" / "result.json").read_text())["epochs"] == 1
    assert "## Cost: search against one retraining" in md.read_text()
    again = run_cli(argv, timeout=600)  # both done: nothing runs, the same numbers are reported
    assert again.returncode == 0 and again.stdout.count("[skip]") == 2 and "[start" not in again.stdout
    assert m.group(0) in again.stdout
    bad = run_cli(argv[:1] + [f"--out_dir={tmp_path}/x", "--search_flags=nope.flags"], timeout=300)
    assert_one_line_error(bad, "nope.flags", "flag file")


def test_pareto_axis_names_what_it_plots():
    """A --nomeasure run plots the table's prediction and must not label it a measurement."""
    tool_path = os.path.join(ROOT, "research", "tools", "experiment_matched_latency.py")
    rows = {"all": [{"measured_ms": 0.3}, {"measured_ms": 0.31}], "none": [{"measured_ms": None}] * 2,
            "some": [{"measured_ms": 0.3}, {"measured_ms": None}]}
    code = (f"import importlib.util, json; spec = importlib.util.spec_from_file_location('t', {tool_path!r}); "
            f"tool = importlib.util.module_from_spec(spec); spec.loader.exec_module(tool); "
            f"print(json.dumps({{k: tool.latency_axis_label(v) for k, v in {rows!r}.items()}}))")
    proc = run_cli(["-c", code])
    assert proc.returncode == 0, proc.stderr[-3000:]
    labels = json.loads(proc.stdout.strip().splitlines()[-1])
    assert labels == {"all": "measured latency (ms, the table's device)", "none": "latency predicted by the table (ms)",
                      "some": "latency (ms: measured, else predicted by the table)"}
