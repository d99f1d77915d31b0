"""The matched-latency digest: numbers read off the sections, placed at the top, and kept current."""

import os

from conftest import ROOT, assert_one_line_error, run_cli
from research import results_digest

OLD = """## Matched latency: latency-aware search vs blind, random and MobileNetV2-style

Target: 0.5014 ms (the uniform `mb_k3_e6` network's prediction); band ±5%.

    python research/tools/experiment_matched_latency.py --out_dir=runs/a --search_args=--dataset=fashion_mnist,--max_train=3200 --train_args=--epochs=1,--train_examples=12000

| contenders | n | test accuracy mean ± std | median | best | measured latency mean | worst |err| to target |
|---|---|---|---|---|---|---|
| aware | 3 | 76.21 ± 0.78 % | 76.56 % | 76.93 % | 0.4391 ms | 13.4 % |
| blind | 3 | 75.65 ± 0.71 % | 75.91 % | 76.36 % | 0.4884 ms | 7.3 % |
| random | 10 | 76.24 ± 1.12 % | 76.25 % | 77.78 % | 0.5030 ms | 15.0 % |
| mbv2 | 3 | 76.48 ± 0.42 % | 76.74 % | 76.82 % | 0.4752 ms | 5.2 % |

Claims: aware_beats_median_random = False, aware_within_std_of_best_random = False, aware_within_std_of_mbv2 = True, aware_measured_within_5pct = False

Cost (latency-aware search ÷ retraining of its network, same accounting): time 2.54×, peak RSS 3.64× (mean over seeds)
"""

NEW = """## Matched latency: latency-aware search vs blind, random and MobileNetV2-style [e3]

Target: 0.1867 ms (the uniform `mb_k3_e3` network's measured latency); band ±5%.

    python research/tools/experiment_matched_latency.py --out_dir=runs/b --search_args=--epochs=6,--max_train=6400 --train_args=--epochs=6,--train_examples=20000

| contenders | n (trainings) | test accuracy mean ± std | median | best | measured latency mean | worst error to the target's final median | worst error to its first measurement |
|---|---|---|---|---|---|---|---|
| aware | 2 (2) | 88.28 ± 0.15 % | 88.28 % | 88.43 % | 0.2047 ms | 4.8 % | 12.2 % |
| blind | 2 (2) | 88.84 ± 0.05 % | 88.84 % | 88.89 % | 0.2036 ms | 3.4 % | 9.5 % |
| random | 10 (20) | 88.59 ± 0.22 % | 88.57 % | 89.11 % (± 0.01) | 0.1979 ms | 17.3 % | 14.5 % |
| mbv2 | 2 (2) | 88.28 ± 0.29 % | 88.28 % | 88.57 % | 0.2100 ms | 0.0 % | 12.5 % |

Claims: aware_beats_median_random = True, aware_within_std_of_best_random = False, aware_within_std_of_mbv2 = True, aware_measured_within_5pct = True

Seed noise (fixed archs, 11 × 2): seed std 0.31, arch std 0.24 points; reliability 0.09 for one training, 0.17 for the seed mean; 86 seeds for 0.9. aware − median random: +0.31 points, 90% bootstrap [+0.06, +0.56], ahead in 98% of resamples. blind − median random: +0.27 points, 90% bootstrap [+0.10, +0.46], ahead in 99% of resamples.

Cost (latency-aware search ÷ retraining of its network, same accounting): time 1.37×, peak RSS 2.75× (mean over seeds)

<!-- by hand: kept when a tool rewrites this section -->
A reading someone wrote.
"""

INTRO = "# Results\n\nIntro paragraph.\n\n## Specialization\n\nSomething else.\n\n"


def test_digest_rows_are_the_sections_numbers_and_sit_above_the_first_section(tmp_path):
    md = tmp_path / "RESULTS.md"
    md.write_text(INTRO + OLD + "\n" + NEW)
    parsed = results_digest.update(str(md))
    old, new = parsed
    # the old format has no seed-noise line: the difference is the table's aware mean − random median
    assert old["tag"] == "(first)" and old["target_ms"] == 0.5014
    assert old["gap"] == round(76.21 - 76.25, 2) and old["gap_ci"] is None and old["blind_gap"] == round(75.65 - 76.25, 2)
    assert old["search"] == "3 × 3200" and old["train"] == "1 × 12000"  # epochs left out: the tool's default
    assert old["cost"] == 2.54 and old["reliability"] is None and old["mbv2"] == 76.48
    # the new one: the seed-noise line's bootstrap numbers, not the table's
    assert new["tag"] == "e3" and new["gap"] == 0.31 and new["gap_ci"] == (0.06, 0.56) and new["blind_gap"] == 0.27
    assert new["search"] == "6 × 6400" and new["train"] == "6 × 20000" and new["reliability"] == 0.09
    assert new["claims"] == {"aware_beats_median_random": True, "aware_within_std_of_best_random": False,
                             "aware_within_std_of_mbv2": True, "aware_measured_within_5pct": True}
    text = md.read_text()
    lines = text.splitlines()
    assert lines.index(results_digest.HEADING) < lines.index("## Specialization") < lines.index(OLD.splitlines()[0])
    assert "| e3 | 0.1867 | 6 × 6400 | 6 × 20000 | 88.28 | 88.57 | +0.31 [+0.06, +0.56] | +0.27 | 88.28 | " \
           "yes | no | yes | yes | 0.09 | 1.37× |" in lines
    assert "| (first) | 0.5014 | 3 × 3200 | 1 × 12000 | 76.21 | 76.25 | -0.04 | -0.60 | 76.48 | " \
           "no | no | yes | no | — | 2.54× |" in lines
    assert ("ahead of the median random architecture in 1 of 2 runs (e3); its 90 % interval is above zero in 1 "
            "and below zero in 0 of the 1 runs that have one. All four claims hold in 0 runs.") in text
    # rewriting is idempotent and keeps everything else, the hand-written reading included
    results_digest.update(str(md))
    assert md.read_text() == text and text.count(results_digest.HEADING) == 1
    assert "A reading someone wrote." in text and "Intro paragraph." in text and OLD in text


def test_the_committed_digest_is_current():
    """research/RESULTS.md's digest equals what its sections give: a run added by hand without
    rerunning research/tools/summarize_results.py fails here."""
    path = os.path.join(ROOT, "research", "RESULTS.md")
    text = open(path, encoding="utf-8").read()
    lines = text.splitlines()
    start = lines.index(results_digest.HEADING)
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("## "))
    assert "\n".join(lines[start:end]).rstrip("\n") == results_digest.digest(results_digest.runs(text))


def test_summarize_cli_writes_the_digest_and_refuses_bad_input_in_one_line(tmp_path):
    md = tmp_path / "RESULTS.md"
    md.write_text(INTRO + NEW)
    proc = run_cli([os.path.join(ROOT, "research", "tools", "summarize_results.py"), f"--results_md={md}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "digest of 1 matched-latency runs" in proc.stdout and results_digest.HEADING in md.read_text()
    missing = tmp_path / "nope.md"
    assert_one_line_error(run_cli([os.path.join(ROOT, "research", "tools", "summarize_results.py"), f"--results_md={missing}"]),
                          str(missing), "--results_md", "no such file")
    bare = tmp_path / "bare.md"
    bare.write_text(INTRO)
    assert_one_line_error(run_cli([os.path.join(ROOT, "research", "tools", "summarize_results.py"), f"--results_md={bare}"]),
                          str(bare), "has no '## Matched latency")
    assert bare.read_text() == INTRO  # nothing half-written
