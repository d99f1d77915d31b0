"""The yardstick of the accuracy claims: seed noise against architecture differences."""

import math

import numpy as np
import pytest
import scipy.stats

from research import accuracy_noise


def test_icc_matches_the_anova_formula_by_hand():
    m = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 9.0]])
    # by hand: arch means 1.5, 3.5, 7; grand 4; MSB = k * var(means, ddof=1)
    msb = 2 * ((1.5 - 4) ** 2 + (3.5 - 4) ** 2 + (7 - 4) ** 2) / 2
    msw = ((0.25 + 0.25) + (0.25 + 0.25) + (4 + 4)) / (3 * 1)
    got = accuracy_noise.seed_noise(m)
    assert got["reliability_1"] == pytest.approx((msb - msw) / (msb + msw))
    assert got["within_std"] == pytest.approx(math.sqrt(msw))
    assert got["between_std"] == pytest.approx(np.std([1.5, 3.5, 7.0], ddof=1))
    r1 = got["reliability_1"]
    assert got["reliability_k"] == pytest.approx(2 * r1 / (1 + r1))
    assert got["seed_pair_tau"] == [1.0]  # both seeds rank the three archs the same way


def test_icc_recovers_the_variance_split_of_simulated_trainings():
    rng = np.random.default_rng(0)
    sb, sw, n, k = 0.004, 0.006, 4000, 3
    m = 0.86 + rng.normal(0, sb, (n, 1)) + rng.normal(0, sw, (n, k))
    got = accuracy_noise.seed_noise(m)
    assert got["reliability_1"] == pytest.approx(sb ** 2 / (sb ** 2 + sw ** 2), abs=0.02)
    assert got["within_std"] == pytest.approx(sw, rel=0.02)


def test_pure_seed_noise_is_reliability_zero_and_separated_archs_are_one():
    rng = np.random.default_rng(1)
    same = 0.86 + rng.normal(0, 0.005, (200, 3))
    noise = accuracy_noise.seed_noise(same)
    assert noise["reliability_1"] < 0.05 and abs(noise["seed_pair_tau_mean"]) < 0.1
    apart = np.repeat(np.linspace(0.80, 0.90, 11)[:, None], 3, axis=1) + rng.normal(0, 1e-5, (11, 3))
    sep = accuracy_noise.seed_noise(apart)
    assert sep["reliability_1"] > 0.999 and sep["seed_pair_tau_mean"] == 1.0 and sep["seeds_for_goal"] == 1


def test_seeds_for_is_the_smallest_k_spearman_brown_puts_at_the_goal():
    for r1 in (0.05, 0.24, 0.5, 0.8):
        k = accuracy_noise.seeds_for(r1, 0.9)
        sb = lambda k: k * r1 / (1 + (k - 1) * r1)  # noqa: E731
        assert sb(k) >= 0.9 - 1e-12 and (k == 1 or sb(k - 1) < 0.9 - 1e-12)
    assert accuracy_noise.seeds_for(0.0, 0.9) == math.inf


def test_bootstrap_interval_is_seeded_and_brackets_the_observed_difference():
    rng = np.random.default_rng(2)
    m = 0.86 + rng.normal(0, 0.004, (10, 1)) + rng.normal(0, 0.005, (10, 3))
    ahead = accuracy_noise.beat_median_bootstrap([0.90, 0.91, 0.905], m, n_boot=2000)
    assert ahead["p_positive"] == 1.0 and ahead["lo"] > 0
    assert ahead["diff"] == pytest.approx(0.905 - np.median(m.mean(axis=1)))
    level = accuracy_noise.beat_median_bootstrap(np.median(m.mean(axis=1)) + np.array([-0.004, 0.0, 0.004]), m,
                                                 n_boot=4000)
    assert 0.2 < level["p_positive"] < 0.8 and level["lo"] < 0 < level["hi"]
    assert accuracy_noise.beat_median_bootstrap([0.85, 0.86], m, n_boot=500, seed=3) == \
        accuracy_noise.beat_median_bootstrap([0.85, 0.86], m, n_boot=500, seed=3)


def test_arch_seed_matrix_keeps_complete_archs_of_the_asked_groups():
    rows = [{"group": "random", "ops": ["a"], "seed": s, "test_accuracy": 0.8 + s / 100} for s in (0, 1, 2)]
    rows += [{"group": "random", "ops": ["b"], "seed": s, "test_accuracy": 0.7} for s in (0, 1)]  # seed 2 missing
    rows += [{"group": "mbv2", "ops": ["c"], "seed": s, "test_accuracy": 0.9} for s in (0, 1, 2)]
    rows += [{"group": "aware", "ops": ["d"], "seed": 0, "test_accuracy": 0.95}]
    keys, seeds, m = accuracy_noise.arch_seed_matrix(rows)
    assert seeds == [0, 1] and keys == [("a",), ("b",), ("c",)]
    keys, seeds, m = accuracy_noise.arch_seed_matrix(rows, groups=("mbv2", "random"))
    np.testing.assert_allclose(m[0], [0.80, 0.81])
    with pytest.raises(ValueError, match="2 architectures"):
        accuracy_noise.seed_noise(m[:1])


def test_seed_noise_tool_reports_the_modules_numbers_and_refuses_an_unfinished_run(tmp_path):
    import json
    import os

    from conftest import ROOT, assert_one_line_error, run_cli

    rng = np.random.default_rng(4)
    rows = [{"name": f"random_{i}_s{s}", "group": "random", "ops": [f"r{i}"], "seed": s,
             "test_accuracy": float(0.86 + i / 1000 + rng.normal(0, .004))} for i in range(10) for s in range(3)]
    rows += [{"name": f"mbv2_s{s}", "group": "mbv2", "ops": ["m"], "seed": s, "test_accuracy": 0.865} for s in range(3)]
    rows += [{"name": f"aware_s{s}", "group": "aware", "ops": [f"a{s}"], "seed": s, "test_accuracy": 0.87}
             for s in range(3)]
    run = tmp_path / "exp"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"rows": rows}))
    md, out = tmp_path / "R.md", tmp_path / "noise.json"
    tool = os.path.join(ROOT, "research", "tools", "experiment_seed_noise.py")
    proc = run_cli([tool, f"--runs={run}", "--labels=synthetic", "--n_boot=500", f"--out_json={out}",
                    f"--results_md={md}"], timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(out.read_text())["runs"]["synthetic"]
    _, _, fixed = accuracy_noise.arch_seed_matrix(rows)
    assert got["reliability_1"] == pytest.approx(accuracy_noise.seed_noise(fixed)["reliability_1"])
    _, _, random = accuracy_noise.arch_seed_matrix(rows, ("random",))
    assert got["aware"] == pytest.approx(accuracy_noise.beat_median_bootstrap([0.87] * 3, random, n_boot=500))
    assert "blind" not in got and "| synthetic | 11 × 3 |" in md.read_text()

    (tmp_path / "unfinished").mkdir()
    proc = run_cli([tool, f"--runs={tmp_path / 'unfinished'}"], timeout=120)
    assert_one_line_error(proc, "results.json")
    (tmp_path / "unfinished" / "results.json").write_text(json.dumps({"rows": [{"group": "random"}]}))
    proc = run_cli([tool, f"--runs={tmp_path / 'unfinished'}"], timeout=120)
    assert_one_line_error(proc, "rows", "experiment_matched_latency.py")


def test_claim_noise_needs_two_seeds_and_reports_what_the_pieces_give():
    rng = np.random.default_rng(5)
    rows = [{"group": "random", "ops": [f"r{i}"], "seed": s, "test_accuracy": float(0.86 + rng.normal(0, .004))}
            for i in range(6) for s in range(2)]
    rows += [{"group": "mbv2", "ops": ["m"], "seed": s, "test_accuracy": 0.86} for s in range(2)]
    rows += [{"group": "blind", "ops": ["b"], "seed": s, "test_accuracy": 0.80} for s in range(2)]
    got = accuracy_noise.claim_noise(rows, n_boot=300)
    _, _, fixed = accuracy_noise.arch_seed_matrix(rows)
    _, _, random = accuracy_noise.arch_seed_matrix(rows, ("random",))
    assert got["seed_ids"] == [0, 1] and got["archs"] == 7 and got["seeds"] == 2
    assert got["reliability_1"] == accuracy_noise.seed_noise(fixed)["reliability_1"]
    assert got["blind"] == accuracy_noise.beat_median_bootstrap([0.80, 0.80], random, n_boot=300)
    assert "aware" not in got and got["blind"]["p_positive"] == 0.0
    line = accuracy_noise.claim_noise_line(got)
    assert line.startswith("Seed noise (fixed archs, 7 × 2)") and "blind − median random: " in line
    assert accuracy_noise.claim_noise([r for r in rows if r["seed"] == 0]) is None  # one seed: nothing to measure


def test_arch_traits_and_their_taus_against_hand_counts_and_scipy():
    """Depth, width and kernel decoded from op names, and τ of a ranking with each: the ranking
    tool's trait table. The micro search space of the tool test has one expand ratio, so width is
    checked here."""
    archs = [("mb_k3_e3", "zero", "mb_k5_e6"), ("mb_k3_e6", "mb_k3_e6", "mb_k3_e6"),
             ("zero", "zero", "mb_k7_e3"), ("mb_k5_e3", "mb_k5_e3", "zero")]
    # by hand: (skipped, mean expand of kept, mean kernel of kept)
    want = [(1, 4.5, 4.0), (0, 6.0, 3.0), (2, 3.0, 7.0), (1, 3.0, 5.0)]
    assert [accuracy_noise.arch_traits(a) for a in archs] == want
    assert accuracy_noise.arch_traits(("zero", "zero")) == (2, 0.0, 0.0)
    acc = [0.861, 0.872, 0.850, 0.855]
    got = accuracy_noise.trait_taus(acc, archs)
    for j in range(3):
        assert got[j] == pytest.approx(scipy.stats.kendalltau(acc, [w[j] for w in want]).statistic)
    # width by hand: 5 concordant pairs, none discordant, one pair tied in expand -> tau_b = 5 / sqrt(6 * 5)
    assert got[1] == pytest.approx(5 / np.sqrt(30))
    assert accuracy_noise.trait_taus(acc, [("mb_k3_e3", "zero")] * 4) == [None, None, None]
