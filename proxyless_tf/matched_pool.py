"""Matched-latency runs pooled over seeds: one set of claims from several runs' rows.

Why: one retraining's seed spread (0.28 points in `[long6]`) is as large as the gaps the RQ4
claims turn on, so a claim needs more seeds than one run of a session can afford; the seeds come
from several runs (a later run adds seeds to an earlier one). The rows are the ones each run of
`tools/experiment_matched_latency.py` commits as `docs/matched_latency_<tag>_results.json`, so
runs pool after their run directories are gone. Runs are pooled only when they searched and
retrained the same way (their `--search_args` and `--train_args` agree): otherwise the seeds are
not repeats of one experiment. A fixed network (random, mbv2) retrained with the same seed in two
runs is one training: the first run's row is kept and the other's accuracy is reported beside it.
Latency is not pooled: each run's band was judged on its own clock, so its claim is quoted.
"""

import json

from proxyless_tf import accuracy_noise
from proxyless_tf import experiments
from proxyless_tf import results_digest
from proxyless_tf.errors import ConfigError

GROUPS = ("aware", "blind", "random", "mbv2")


def load(paths):
    """[(path, results dict)] of each file, refused in one line when it is not a run's results or
    when the runs did not search and retrain the same way."""
    runs = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            raise ConfigError(path, "--results", "no such file",
                              "pass a docs/matched_latency_<tag>_results.json or a run's results.json") from None
        except json.JSONDecodeError as e:
            raise ConfigError(path, "--results", f"not JSON ({e.msg}, line {e.lineno})",
                              "pass the results.json a tools/experiment_matched_latency.py run wrote") from None
        if not isinstance(data, dict) or not isinstance(data.get("rows"), list) or "command" not in data:
            raise ConfigError(path, "rows", "missing: not the results of tools/experiment_matched_latency.py",
                              "pass the results.json a tools/experiment_matched_latency.py run wrote")
        runs.append((path, data))
    for name in ("search_args", "train_args"):
        first = results_digest.arg_list(runs[0][1]["command"], name)
        for path, data in runs[1:]:
            theirs = results_digest.arg_list(data["command"], name)
            if theirs != first:
                diff = sorted(k for k in set(first) | set(theirs) if first.get(k) != theirs.get(k))
                raise ConfigError(path, f"--{name}", f"differs from {runs[0][0]}'s in {', '.join('--' + d for d in diff)}",
                                  "pool only runs that searched and retrained the same way")
    return runs


def pooled_rows(runs):
    """(rows, repeats): every run's rows tagged with its file; a fixed network's second training
    with a seed already pooled goes to `repeats` as (row kept, row dropped)."""
    rows, kept, repeats = [], {}, []
    for path, data in runs:
        for r in data["rows"]:
            r = dict(r, run=path)
            key = (r["group"], tuple(r["ops"]), int(r["seed"]))
            if r["group"] in ("random", "mbv2") and key in kept:
                repeats.append((kept[key], r))
                continue
            kept[key] = r
            rows.append(r)
    return rows, repeats


def pool(paths, n_boot=10000):
    """Groups (accuracy_stats), the accuracy claims, the seed-noise report, per-run latency claims."""
    runs = load(paths)
    rows, repeats = pooled_rows(runs)
    groups = {g: experiments.accuracy_stats([r for r in rows if r["group"] == g], by_arch=(g == "random"))
              for g in GROUPS if any(r["group"] == g for r in rows)}
    for g, s in groups.items():
        s["seeds"] = sorted({int(r["seed"]) for r in rows if r["group"] == g})
    return {"runs": [p for p, _ in runs], "rows": rows, "groups": groups,
            "claims": experiments.accuracy_claims(groups),
            "noise": accuracy_noise.claim_noise(rows, n_boot=n_boot),
            "latency_claims": {p: d.get("claims", {}).get("aware_measured_within_5pct") for p, d in runs},
            "repeats": [{"name": a["name"], "seed": int(a["seed"]), "kept": a["test_accuracy"],
                         "dropped": b["test_accuracy"], "from": b["run"]} for a, b in repeats]}


def markdown(pooled, heading):
    """The pooled section's text (heading included)."""
    lines = [heading, "", "Runs pooled (their rows; same search and retraining flags): "
             + ", ".join(f"`{p}`" for p in pooled["runs"]), "",
             "| contenders | n (trainings) | seeds | test accuracy mean ± std | median | best |", "|---|---|---|---|---|---|"]
    for g, s in pooled["groups"].items():
        lines.append(f"| {g} | {s['n']} ({s['runs']}) | {','.join(map(str, s['seeds']))} | "
                     f"{s['acc_mean'] * 100:.2f} ± {s['acc_std'] * 100:.2f} % | {s['acc_median'] * 100:.2f} % | "
                     f"{s['acc_max'] * 100:.2f} % |")
    lines += ["", "Claims (accuracy, pooled): " + (", ".join(f"{k} = {v}" for k, v in pooled["claims"].items())
                                                   or "none (the pool lacks aware, random or mbv2 rows)")]
    lines += ["Latency within ±5 % (each run on its own clock): "
              + ", ".join(f"`{p}` {'—' if v is None else v}" for p, v in pooled["latency_claims"].items())]
    if pooled["noise"]:
        lines += ["", accuracy_noise.claim_noise_line(pooled["noise"])]
    for rep in pooled["repeats"]:
        lines += ["", f"{rep['name']} (seed {rep['seed']}) was retrained again in `{rep['from']}`: "
                  f"{rep['dropped'] * 100:.2f} % there, {rep['kept'] * 100:.2f} % kept."]
    return "\n".join(lines)
