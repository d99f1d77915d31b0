"""The experiment tools' shared pieces: matched-latency sampling, Pareto front, job runner."""

import json
import os
import sys

import numpy as np
import pytest

import latency_helpers
from search_helpers import micro_space
from research import experiments
from proxyless_tf.errors import ConfigError


def test_pareto_front_keeps_exactly_the_undominated_points():
    pts = [(1.0, 0.80), (2.0, 0.85), (1.5, 0.79), (3.0, 0.84), (0.5, 0.70), (2.0, 0.90)]
    front = experiments.pareto_front(pts)
    assert sorted(front) == [0, 4, 5]
    # brute force: a point is on the front iff no other is at most as slow and strictly more accurate, or faster and as accurate
    for i, (l, a) in enumerate(pts):
        dominated = any((l2 <= l and a2 > a) or (l2 < l and a2 >= a) for j, (l2, a2) in enumerate(pts) if j != i)
        assert (i in front) == (not dominated)


def test_matched_random_archs_are_distinct_in_band_and_reproducible():
    space = latency_helpers.tiny_space()
    cost = {"mb_k3_e3": 1.0, "mb_k5_e3": 2.0, "zero": 0.0}

    def predict(arch):
        return 1.0 + sum(cost[o] for o in arch.ops)

    got = experiments.matched_random_archs(space, predict, 4.0, 3, tolerance=0.3, seed=0)
    again = experiments.matched_random_archs(space, predict, 4.0, 3, tolerance=0.3, seed=0)
    assert [a.ops for _, a, _ in got] == [a.ops for _, a, _ in again]
    assert len({tuple(a.ops) for _, a, _ in got}) == 3
    for _, arch, ms in got:
        assert ms == predict(arch) and abs(ms - 4.0) <= 1.2
    with pytest.raises(ConfigError, match="random archs within"):
        experiments.matched_random_archs(space, predict, 40.0, 1, tolerance=0.05, max_draws=500)

    # a second test (the device's measurement) on what the prediction lets through: the accepted
    # archs are the first draws that pass both, each tested once, in draw order
    def device(arch):  # k5 runs 1.5x what the table says
        tested.append(tuple(arch.ops))
        return 1.0 + sum({"mb_k5_e3": 3.0}.get(o, cost[o]) for o in arch.ops)

    tested = []
    both = experiments.matched_random_archs(space, predict, 4.0, 2, tolerance=0.3, seed=0,
                                            accept=lambda a: abs(device(a) - 4.0) <= 0.05 * 4.0)
    assert len(tested) == len(set(tested)) and all(abs(predict(space_arch(space, t)) - 4.0) <= 1.2 for t in tested)
    seen = list(tested)
    passed = [t for t in seen if abs(device(space_arch(space, t)) - 4.0) <= 0.2]
    assert [tuple(a.ops) for _, a, _ in both] == passed and len(passed) == 2
    assert seen[-1] == passed[-1] and len(seen) > 2  # some were measured out; it stopped at the second in


def test_measured_screen_centres_on_the_median_ratio_and_spends_fewer_measurements():
    """The reference network's table ÷ measured ratio (1.3 here) is not the typical network's (1.0):
    a screen centred on it measures mostly outside the band, or misses it; one centred on the
    running median ratio finds the in-band archs with fewer measurements, and a rerun on cached
    measurements draws the same archs without measuring."""
    space = latency_helpers.tiny_space(stages=[{"width": 8, "depth": 4, "stride": 1},
                                               {"width": 16, "depth": 3, "stride": 2}])
    cost = {"mb_k3_e3": 1.0, "mb_k5_e3": 2.0, "zero": 0.0}
    ref = experiments.uniform_arch(space, "mb_k3_e3")

    def predict(arch):
        return 1.0 + sum(cost[o] for o in arch.ops)

    calls, cache = [], {}

    def device(arch):  # the table is right for every network but the reference, which it overprices 1.3x
        key = tuple(arch.ops)
        if key not in cache:
            calls.append(key)
            cache[key] = predict(arch) / (1.3 if arch.ops == ref.ops else 1.0)
        return cache[key]

    target = device(ref)  # 6.15: the band (±5 %) holds the archs predicted at 6
    first = [(predict(ref), target)]

    def in_band(a):
        return abs(device(a) - target) <= 0.05 * target

    def draw(screen_tol, fixed):
        cache.clear()
        calls.clear()
        screen = experiments.MeasuredScreen(predict, device, target, 0.05, first=first)
        got = experiments.matched_random_archs(space, (lambda a: predict(a) / 1.3) if fixed else screen.predict,
                                               target, 4, screen_tol, seed=0,
                                               accept=in_band if fixed else screen.accept, max_draws=20_000)
        return got, len(calls), screen

    # centred on the reference, the band is outside the ±20 % screen: only the reference itself passes
    with pytest.raises(ConfigError, match="only 1 of 4"):
        draw(0.2, fixed=True)
    got, spent, screen = draw(0.2, fixed=False)
    assert len(got) == 4 and all(in_band(a) for _, a, _ in got) and spent == screen.measured
    assert screen.ratio() == 1.0 and screen.ratio() == np.median(screen.ratios)
    fixed, fixed_spent = draw(0.3, fixed=True)[:2]
    moving, moving_spent = draw(0.3, fixed=False)[:2]
    assert all(in_band(a) for _, a, _ in fixed + moving)
    assert moving_spent < fixed_spent, (moving_spent, fixed_spent)
    calls.clear()  # a rerun on the cached measurements: the same archs, nothing measured
    again = experiments.MeasuredScreen(predict, device, target, 0.05, first=first)
    rerun = experiments.matched_random_archs(space, again.predict, target, 4, 0.3, seed=0, accept=again.accept)
    assert [a.ops for _, a, _ in rerun] == [a.ops for _, a, _ in moving] and calls == []


def space_arch(space, ops):
    from proxyless_tf.space import Arch

    return Arch(space, list(ops))


def test_uniform_arch_needs_an_op_every_layer_has():
    space = latency_helpers.tiny_space()
    assert experiments.uniform_arch(space, "mb_k5_e3").ops == ["mb_k5_e3"] * space.num_layers
    with pytest.raises(ConfigError, match="not a candidate"):
        experiments.uniform_arch(space, "mb_k7_e6")


def test_run_jobs_records_peak_rss_and_skips_finished_jobs(tmp_path):
    ballast = bytearray(600 * 1024 * 1024)  # a big parent (as pytest is after TF tests) must not count
    ballast[::4096] = b"y" * len(ballast[::4096])
    big = tmp_path / "big.done"
    code = ("import sys; b = bytearray(200 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); "
            f"open({str(big)!r}, 'w').write('ok'); import time; time.sleep(1.5)")
    jobs = [experiments.Job("alloc", [sys.executable, "-c", code], str(tmp_path / "alloc.log"), str(big)),
            experiments.Job("fail", [sys.executable, "-c", "raise SystemExit(3)"], str(tmp_path / "fail.log"),
                            str(tmp_path / "never"))]
    lines = []
    ran = experiments.run_jobs(jobs, parallel=2, log=lines.append)
    by = {j.name: j for j in ran}
    assert by["alloc"].returncode == 0 and by["fail"].returncode == 3
    # the child's own high-water mark since exec, not the parent's memory it held between fork and exec
    assert 200 <= by["alloc"].max_rss_mib < 400
    assert by["alloc"].wall_s > 0
    again = experiments.run_jobs(jobs[:1], log=lines.append)
    assert again == [] and any(line.startswith("[skip] alloc") for line in lines)
    assert os.path.exists(tmp_path / "alloc.log")
    assert np.isfinite(by["fail"].wall_s)


def test_write_section_replaces_only_its_own_section(tmp_path):
    md = tmp_path / "RESULTS.md"
    experiments.write_section(str(md), "## A\n\none", "## A")
    experiments.write_section(str(md), "## B\n\ntwo", "## B")
    experiments.write_section(str(md), "## A\n\nthree", "## A")
    assert md.read_text() == "# Results\n\n## A\n\nthree\n\n## B\n\ntwo\n"


def test_write_section_keeps_the_hand_written_reading_of_its_section(tmp_path):
    md = tmp_path / "RESULTS.md"
    experiments.write_section(str(md), "## A\n\none", "## A")
    experiments.write_section(str(md), "## B\n\ntwo", "## B")
    text = md.read_text().replace("one\n", f"one\n\n{experiments.HAND_WRITTEN}\nReading: one is small.\n")
    md.write_text(text)
    experiments.write_section(str(md), "## A\n\nthree", "## A")
    assert md.read_text() == (f"# Results\n\n## A\n\nthree\n\n{experiments.HAND_WRITTEN}\nReading: one is small."
                              "\n\n## B\n\ntwo\n")
    experiments.write_section(str(md), "## A\n\nfour", "## A")  # a second rewrite keeps it once
    assert md.read_text().count("Reading: one is small.") == 1 and "three" not in md.read_text()


def test_accuracy_stats_ranks_random_archs_by_their_seed_mean():
    """A lucky single seed of a weak arch does not make it the best: archs are ranked by their mean."""
    from research.experiments import accuracy_stats

    rows = ([{"ops": ["a"], "test_accuracy": v} for v in (0.70, 0.72, 0.80)]      # mean 0.74, one lucky seed
            + [{"ops": ["b"], "test_accuracy": v} for v in (0.76, 0.77, 0.78)]    # mean 0.77
            + [{"ops": ["c"], "test_accuracy": v} for v in (0.75, 0.75, 0.75)])   # mean 0.75
    s = accuracy_stats(rows, by_arch=True)
    assert (s["n"], s["runs"]) == (3, 9)
    np.testing.assert_allclose([s["acc_max"], s["acc_median"], s["acc_mean"]], [0.77, 0.75, (0.74 + 0.77 + 0.75) / 3])
    np.testing.assert_allclose(s["acc_std"], np.std([0.74, 0.77, 0.75]))
    np.testing.assert_allclose(s["acc_max_seed_std"], np.std([0.76, 0.77, 0.78]))
    per_row = accuracy_stats(rows)  # searches: every seed is its own entry, the lucky 0.80 is the best
    assert (per_row["n"], per_row["runs"]) == (9, 9)
    np.testing.assert_allclose([per_row["acc_max"], per_row["acc_median"], per_row["acc_max_seed_std"]],
                               [0.80, 0.75, 0.0])


def test_reuse_jobs_copies_only_finished_jobs_with_the_same_signature(tmp_path):
    space = latency_helpers.tiny_space()
    src, out = tmp_path / "src", tmp_path / "out"
    for d in (src, out):
        (d / "archs").mkdir(parents=True)
    ops = [l.candidates[0] for l in space.layers]
    from proxyless_tf import space as space_lib

    space_lib.Arch(space, ops).to_json(str(src / "archs" / "a.json"))
    space_lib.Arch(space, ops).to_json(str(out / "archs" / "a.json"))

    def job(root, name, *args):
        argv = experiments.python_module("proxyless_tf.train", *args, f"--arch={root / 'archs' / 'a.json'}",
                                         f"--out_dir={root / name}")
        return experiments.Job(name, argv, str(root / f"{name}.log"), str(root / name / "result.json"))

    # a file argument is compared by content: the same table under another path (another clone's
    # default) is the same job, an edited one is not
    (src / "t.json").write_text('{"ms": 1}')
    (out / "t.json").write_text('{"ms": 1}')
    (out / "t2.json").write_text('{"ms": 2}')
    ran = [job(src, "same", "--epochs=3", f"--table={src / 't.json'}"), job(src, "other", "--epochs=3"),
           job(src, "old", "--epochs=3"), job(src, "edited", f"--table={src / 't.json'}")]
    for j in ran:
        os.makedirs(os.path.dirname(j.done_file))
        open(j.done_file, "w").write('{"test_accuracy": 0.5}')
        open(j.log_path, "w").write(f"log of {j.name}")
        j.wall_s, j.max_rss_mib = 10.0, 100.0
    recorded = experiments.record_jobs(ran, str(src / "jobs.json"))
    assert recorded["same"]["signature"][:2] == ["proxyless_tf.train", "--epochs=3"]
    assert recorded["same"]["signature"][-1] == "--arch_ops=" + ",".join(ops)  # the path became the ops
    recorded["old"].pop("signature")  # as an older run recorded it
    experiments.files_lib.write_json_atomic(str(src / "jobs.json"), recorded)

    want = [job(out, "same", "--epochs=3", f"--table={out / 't.json'}"), job(out, "other", "--epochs=4"),
            job(out, "old", "--epochs=3"), job(out, "missing", "--epochs=3"),
            job(out, "edited", f"--table={out / 't2.json'}")]
    lines = []
    assert experiments.reuse_jobs(want, [str(src)], str(out), log=lines.append) == ["same"]
    assert open(out / "same" / "result.json").read() == '{"test_accuracy": 0.5}'
    assert open(out / "same.log").read() == "log of same"
    mine = json.load(open(out / "jobs.json"))
    assert set(mine) == {"same"} and mine["same"]["reused_from"] == str(src) and mine["same"]["wall_s"] == 10.0
    assert not (out / "other").exists() and not (out / "old").exists()
    assert any("[no reuse] other" in l and "--epochs=4" in l for l in lines)
    assert any("[no reuse] old" in l and "recorded no arguments" in l for l in lines)
    # named as written; the one that differs only in path is not named
    assert any("[no reuse] edited" in l and f"--table={out / 't2.json'}" in l and f"--table={src / 't.json'}" in l
               for l in lines)
    (out / "t3.json").write_text('{"ms": 1}')
    lines.clear()
    experiments.reuse_jobs([job(out, "edited", f"--table={out / 't3.json'}", "--epochs=9")], [str(src)], str(out),
                           log=lines.append)
    assert lines == ["[no reuse] edited: " + str(src) + " ran it with other arguments (--epochs=9)"]
    assert not (out / "edited").exists()
    assert not any("missing" in l for l in lines)  # nothing to reuse, nothing to say
    assert experiments.reuse_jobs(want, [str(src)], str(out), log=lines.append) == []  # done now: left alone


def test_measure_all_resumes_rounds_and_measures_only_networks_added_since(tmp_path):
    space = micro_space()
    archs = [space.sample(seed=i) for i in range(40)]
    archs = list({tuple(a.ops): a for a in archs}.values())[:3]
    assert len(archs) == 3
    contenders = {}
    for i, a in enumerate(archs):
        p = tmp_path / f"search_{i}" / "arch.json"
        p.parent.mkdir()
        a.to_json(str(p))
        contenders[f"c{i}"] = {"arch_path": str(p)}
    calls = []

    def measure(arch, fresh):  # a fake clock: 1 ms per call so far, so every round differs
        assert fresh
        calls.append(tuple(arch.ops))
        return float(len(calls))

    path = str(tmp_path / "final.json")
    first = dict(list(contenders.items())[:2])
    med, per = experiments.measure_all(first, measure, 3, path)
    assert len(calls) == 6 and all(len(v) == 3 for v in per.values())
    assert med == {k: float(np.median(v)) for k, v in per.items()}
    calls.clear()
    med, per = experiments.measure_all(contenders, measure, 3, path)  # one network more: 3 calls
    assert calls == [tuple(archs[2].ops)] * 3 and len(per) == 3 and per[",".join(archs[2].ops)] == [1.0, 2.0, 3.0]
    calls.clear()
    again, _ = experiments.measure_all(contenders, measure, 3, path)  # all done: nothing measured
    assert not calls and again == med
