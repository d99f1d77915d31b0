"""Matched-latency runs pooled over seeds: the pooled numbers against numpy by hand, repeats of one
training counted once, and runs that searched or retrained differently refused in one line."""

import json
import os

import numpy as np

from conftest import ROOT, assert_one_line_error, run_cli
from research import matched_pool

CMD = ("python research/tools/experiment_matched_latency.py --out_dir=runs/{name} --search_args=--epochs=6,--latency_loss=add#hinge "
       "--train_args=--epochs={train_epochs},--train_examples=20000")
R = [["mb_k3_e3"] * 3, ["mb_k5_e3"] * 3, ["mb_k7_e6", "zero", "mb_k3_e3"]]
MBV2 = ["mb_k3_e6"] * 3


def row(name, group, seed, ops, acc):
    return {"name": name, "group": group, "seed": seed, "ops": ops, "test_accuracy": acc, "measured_ms": None}


def write(tmp_path, name, rows, train_epochs=6, latency_ok=None):
    claims = {} if latency_ok is None else {"aware_measured_within_5pct": latency_ok}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"command": CMD.format(name=name, train_epochs=train_epochs), "rows": rows,
                                "claims": claims}))
    return str(path)


def two_runs(tmp_path, train_epochs_b=6):
    rand = {(i, s): 0.88 + 0.004 * i + 0.001 * s for i in range(3) for s in (0, 1)}
    a = [row(f"aware_s{s}", "aware", s, ["mb_k5_e3"] * 3, acc) for s, acc in ((0, 0.890), (1, 0.885))]
    a += [row(f"mbv2_s{s}", "mbv2", s, MBV2, acc) for s, acc in ((0, 0.897), (1, 0.894))]
    a += [row(f"random_{i}_s{s}", "random", s, R[i], acc) for (i, s), acc in rand.items()]
    b = [row(f"aware_s{s}", "aware", s, ["mb_k3_e6"] + ["mb_k5_e3"] * 2, acc) for s, acc in ((2, 0.8855), (3, 0.8928))]
    b += [row(f"mbv2_s{s}", "mbv2", s, MBV2, acc) for s, acc in ((1, 0.8990), (2, 0.8936), (3, 0.8930))]
    return write(tmp_path, "a", a, latency_ok=True), write(tmp_path, "b", b, train_epochs_b), rand


def test_pooled_groups_claims_and_noise_are_the_rows_by_hand(tmp_path):
    pa, pb, rand = two_runs(tmp_path)
    pooled = matched_pool.pool([pa, pb], n_boot=2000)
    g = pooled["groups"]
    aware = [0.890, 0.885, 0.8855, 0.8928]
    mbv2 = [0.897, 0.894, 0.8936, 0.8930]  # run b's seed-1 training of the same network is a repeat
    np.testing.assert_allclose([g["aware"]["acc_mean"], g["aware"]["acc_std"]], [np.mean(aware), np.std(aware)])
    np.testing.assert_allclose([g["mbv2"]["acc_mean"], g["mbv2"]["acc_std"]], [np.mean(mbv2), np.std(mbv2)])
    assert (g["aware"]["n"], g["mbv2"]["n"], g["mbv2"]["seeds"]) == (4, 4, [0, 1, 2, 3])
    arch_means = [np.mean([rand[i, 0], rand[i, 1]]) for i in range(3)]
    assert (g["random"]["n"], g["random"]["runs"]) == (3, 6)
    np.testing.assert_allclose([g["random"]["acc_median"], g["random"]["acc_max"]], [np.median(arch_means),
                                                                                     max(arch_means)])
    assert pooled["claims"] == {
        "aware_beats_median_random": np.mean(aware) > np.median(arch_means),
        "aware_within_std_of_best_random": np.mean(aware) + np.std(aware) >= max(arch_means),
        "aware_within_std_of_mbv2": np.mean(aware) + np.std(aware) >= np.mean(mbv2)}
    assert pooled["claims"]["aware_beats_median_random"] and not pooled["claims"]["aware_within_std_of_mbv2"]
    assert pooled["repeats"] == [{"name": "mbv2_s1", "seed": 1, "kept": 0.894, "dropped": 0.8990, "from": pb}]
    # the noise report sees the seeds every fixed network has (0 and 1), the aware trainings of both runs
    assert pooled["noise"]["seed_ids"] == [0, 1] and pooled["noise"]["archs"] == 4
    np.testing.assert_allclose(pooled["noise"]["aware"]["diff"], np.mean(aware) - np.median(arch_means))
    assert pooled["latency_claims"] == {pa: True, pb: None}
    text = matched_pool.markdown(pooled, "## Pooled matched latency [t]")
    assert f"| aware | 4 (4) | 0,1,2,3 | {np.mean(aware) * 100:.2f} ± {np.std(aware) * 100:.2f} % |" in text
    assert "mbv2_s1 (seed 1) was retrained again" in text and "aware_beats_median_random = True" in text


def test_cli_writes_the_section_and_refuses_runs_that_retrained_differently(tmp_path):
    pa, pb, _ = two_runs(tmp_path)
    md = tmp_path / "RESULTS.md"
    tool = os.path.join(ROOT, "research", "tools", "pool_matched_runs.py")
    proc = run_cli([tool, f"--results={pa},{pb}", f"--results_md={md}", "--results_tag=t"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "## Pooled matched latency [t]" in md.read_text() and "| mbv2 | 4 (4) |" in md.read_text()
    assert f"    python research/tools/pool_matched_runs.py --results={pa},{pb} --results_md={md}" in md.read_text()
    pc = write(tmp_path, "c", json.loads(open(pb).read())["rows"], train_epochs=3)
    assert_one_line_error(run_cli([tool, f"--results={pa},{pc}"]), "c.json", "--train_args", "--epochs")
    assert_one_line_error(run_cli([tool, f"--results={pa},{tmp_path}/none.json"]), "none.json", "no such file")
    (tmp_path / "bad.json").write_text("{}")
    assert_one_line_error(run_cli([tool, f"--results={pa},{tmp_path}/bad.json"]), "bad.json", "rows")
    assert_one_line_error(run_cli([tool, f"--results={pa}"]), "--results", "two or more")


def test_fixed_from_judges_one_run_against_another_runs_fixed_networks(tmp_path):
    """A run without random networks (a new search at an old run's target) against that run's
    random and MobileNetV2-style trainings: its own searched rows only, the other's fixed rows only."""
    pa, _, rand = two_runs(tmp_path)
    a = json.loads(open(pa).read())
    open(pa, "w").write(json.dumps(dict(a, target_ms=0.3387, match_on="predicted")))
    c_rows = [row(f"aware_s{s}", "aware", s, ["mb_k3_e6"] * 2 + ["zero"], acc) for s, acc in ((1, 0.893), (2, 0.899))]
    c_rows += [row("mbv2_s1", "mbv2", 1, MBV2, 0.8990), row("mbv2_s2", "mbv2", 2, MBV2, 0.8960)]
    pc = write(tmp_path, "c", c_rows)
    data = json.loads(open(pc).read())
    data["command"] = data["command"].replace("add#hinge", "add#linear")  # another search
    open(pc, "w").write(json.dumps(dict(data, target_ms=0.3387 * (1 + 1e-9), match_on="predicted")))
    pooled = matched_pool.pool([pc], n_boot=2000, fixed_from=pa)
    g = pooled["groups"]
    aware = [0.893, 0.899]  # run a's aware trainings are another search's: not pooled
    mbv2 = [0.8990, 0.8960, 0.897]  # c's seeds 1 and 2, then a's seed 0 (a's seed 1 repeats c's)
    arch_means = [np.mean([rand[i, 0], rand[i, 1]]) for i in range(3)]
    np.testing.assert_allclose([g["aware"]["acc_mean"], g["mbv2"]["acc_mean"], g["random"]["acc_median"]],
                               [np.mean(aware), np.mean(mbv2), np.median(arch_means)])
    assert (g["aware"]["n"], g["random"]["n"], g["random"]["runs"], g["mbv2"]["seeds"]) == (2, 3, 6, [0, 1, 2])
    assert np.mean(aware) > np.median(arch_means) and pooled["claims"]["aware_beats_median_random"]
    assert pooled["repeats"] == [{"name": "mbv2_s1", "seed": 1, "kept": 0.8990, "dropped": 0.894, "from": pa}]
    assert pooled["latency_claims"] == {pc: None}  # a's latency claim is about its own search
    text = matched_pool.markdown(pooled, "## Pooled matched latency [c]")
    assert f"also from `{pa}`" in text and "| aware | 2 (2) | 1,2 |" in text

    tool = os.path.join(ROOT, "research", "tools", "pool_matched_runs.py")
    proc = run_cli([tool, f"--results={pc}", f"--fixed_from={pa}"])
    assert proc.returncode == 0 and "| random | 3 (6) |" in proc.stdout, proc.stderr[-3000:]
    assert_one_line_error(run_cli([tool, f"--results={pc}"]), "--results", "--fixed_from")
    for name, change, field in (("t", {"target_ms": 0.30}, "target_ms"), ("m", {"match_on": "measured"}, "match_on"),
                                ("e", {"command": data["command"].replace("--epochs=6,--train", "--epochs=3,--train")},
                                 "--train_args"),
                                ("l", {"command": data["command"] + " --latency_table=other.json"}, "--latency_table")):
        bad = tmp_path / f"fixed_{name}.json"
        bad.write_text(json.dumps(dict(json.loads(open(pa).read()), **change)))
        assert_one_line_error(run_cli([tool, f"--results={pc}", f"--fixed_from={bad}"]), f"fixed_{name}.json", field)
