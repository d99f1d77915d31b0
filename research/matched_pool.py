"""Matched-latency runs pooled over seeds: one set of claims from several runs' rows.

Why: one retraining's seed spread (0.28 points in `[long6]`) is as large as the gaps the RQ4
claims turn on, so a claim needs more seeds than one run of a session can afford; the seeds come
from several runs (a later run adds seeds to an earlier one). The rows are the ones each run of
`research/tools/experiment_matched_latency.py` commits as `research/matched_latency_<tag>_results.json`, so
runs pool after their run directories are gone. Runs are pooled only when they searched and
retrained the same way (their `--search_args` and `--train_args` agree): otherwise the seeds are
not repeats of one experiment. A fixed network (random, mbv2) retrained with the same seed in two
runs is one training: the first run's row is kept and the other's accuracy is reported beside it.
Latency is not pooled: each run's band was judged on its own clock, so its claim is quoted.

`fixed_from`: the searched networks of the pooled runs judged against another run's fixed networks
(its random and MobileNetV2-style trainings), for a run that drew no random networks of its own
(`--num_random=0`, e.g. a new search method tried at an old run's target). Allowed only when that
run had the same target, latency table and matching (the same band) and retrained the same way;
its own searched networks are not pooled (another search).
"""

import json

from research import accuracy_noise
from research import experiments
from research import results_digest
from proxyless_tf.errors import ConfigError

GROUPS = ("aware", "blind", "random", "mbv2")


def load(paths):
    """[(path, results dict)] of each file, refused in one line when it is not a run's results or
    when the runs did not search and retrain the same way."""
    runs = [(path, _read(path, "--results")) for path in paths]
    for name in ("search_args", "train_args"):
        for path, data in runs[1:]:
            _same_args(runs[0], (path, data), name, "pool only runs that searched and retrained the same way")
    return runs


def load_fixed(path, runs):
    """(path, results) of the run whose fixed networks judge `runs`' searched ones, refused in one
    line unless its band (target, table, matching) and its retraining are theirs."""
    data = _read(path, "--fixed_from")
    first_path, first = runs[0]
    _same_args(runs[0], (path, data), "train_args", "take fixed networks only from a run that retrained the same way")
    table = results_digest.flag_value(first["command"], "latency_table")
    theirs = results_digest.flag_value(data["command"], "latency_table")
    if table != theirs:
        raise ConfigError(path, "--latency_table", f"{theirs} is not {first_path}'s {table}",
                          "take fixed networks from a run priced by the same table")
    if data.get("match_on") != first.get("match_on"):
        raise ConfigError(path, "match_on", f"{data.get('match_on')} is not {first_path}'s {first.get('match_on')}",
                          "take fixed networks from a run that matched the band the same way")
    t, t0 = data.get("target_ms"), first.get("target_ms")
    if t is None or t0 is None or abs(t - t0) > 1e-6 * abs(t0):
        raise ConfigError(path, "target_ms", f"{t} ms is not {first_path}'s {t0} ms",
                          "take fixed networks from a run at the same target (reuse its plan with --reuse_from)")
    return path, data


def _read(path, flag):
    """A run's results.json, or one line naming the file and the flag that passed it."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ConfigError(path, flag, "no such file",
                          "pass a research/matched_latency_<tag>_results.json or a run's results.json") from None
    except json.JSONDecodeError as e:
        raise ConfigError(path, flag, f"not JSON ({e.msg}, line {e.lineno})",
                          "pass the results.json a research/tools/experiment_matched_latency.py run wrote") from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list) or "command" not in data:
        raise ConfigError(path, "rows", "missing: not the results of research/tools/experiment_matched_latency.py",
                          "pass the results.json a research/tools/experiment_matched_latency.py run wrote")
    return data


def _same_args(base, other, name, fix):
    """Refuse `other` when its `--name` list (search_args or train_args) is not `base`'s: its
    networks would be another experiment's, and the flags that differ are what the user must see."""
    first = results_digest.arg_list(base[1]["command"], name)
    theirs = results_digest.arg_list(other[1]["command"], name)
    if theirs != first:
        diff = sorted(k for k in set(first) | set(theirs) if first.get(k) != theirs.get(k))
        raise ConfigError(other[0], f"--{name}", f"differs from {base[0]}'s in {', '.join('--' + d for d in diff)}", fix)


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


def pool(paths, n_boot=10000, fixed_from=None):
    """Groups (accuracy_stats), the accuracy claims, the seed-noise report, per-run latency claims;
    with `fixed_from` (a results.json) the random and mbv2 rows of that run join the pool."""
    runs = load(paths)
    fixed = []
    if fixed_from:
        path, data = load_fixed(fixed_from, runs)
        fixed = [(path, dict(data, rows=[r for r in data["rows"] if r["group"] in ("random", "mbv2")]))]
    rows, repeats = pooled_rows(runs + fixed)
    groups = {g: experiments.accuracy_stats([r for r in rows if r["group"] == g], by_arch=(g == "random"))
              for g in GROUPS if any(r["group"] == g for r in rows)}
    for g, s in groups.items():
        s["seeds"] = sorted({int(r["seed"]) for r in rows if r["group"] == g})
    return {"runs": [p for p, _ in runs], "fixed_from": fixed_from, "rows": rows, "groups": groups,
            "claims": experiments.accuracy_claims(groups),
            "noise": accuracy_noise.claim_noise(rows, n_boot=n_boot),
            "latency_claims": {p: d.get("claims", {}).get("aware_measured_within_5pct") for p, d in runs},
            "repeats": [{"name": a["name"], "seed": int(a["seed"]), "kept": a["test_accuracy"],
                         "dropped": b["test_accuracy"], "from": b["run"]} for a, b in repeats]}


def markdown(pooled, heading, command=None):
    """The pooled section's text (heading included); `command`, the line that made it, under it."""
    lines = [heading, ""] + ([f"    {command}", ""] if command else [])
    lines += ["Runs pooled (their rows; same search and retraining flags): "
              + ", ".join(f"`{p}`" for p in pooled["runs"]), ""]
    if pooled.get("fixed_from"):
        lines += [f"Random and MobileNetV2-style networks also from `{pooled['fixed_from']}` (same target, "
                  "latency table, matching and retraining; its searched networks are another search's and "
                  "are not pooled).", ""]
    lines += ["| contenders | n (trainings) | seeds | test accuracy mean ± std | median | best |", "|---|---|---|---|---|---|"]
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
