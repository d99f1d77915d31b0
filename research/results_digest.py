"""One table of every matched-latency run in research/RESULTS.md, at the top of the file.

Why: the matched-latency experiment (issue 5, RQ4) has been run in over twenty settings, each
in its own section of a file of almost two thousand lines; whether the latency-aware search
ever beat the random architectures, and under which search and retraining budget, was only
answerable by reading all of them. The digest is computed from the sections themselves (their
tables, claims, seed-noise and cost lines, and the search and retraining flags of the command
that made them), so it cannot say anything the sections do not, and it is rewritten by
`research/tools/summarize_results.py` and after each run of `research/tools/experiment_matched_latency.py`.
"""

import re

from proxyless_tf import files as files_lib

HEADING = "## Matched latency at a glance"
MATCHED = "## Matched latency: latency-aware search vs blind, random and MobileNetV2-style"
CLAIMS = ("aware_beats_median_random", "aware_within_std_of_best_random", "aware_within_std_of_mbv2",
          "aware_measured_within_5pct")
# the tool's defaults, for a command that leaves the flag out (research/tools/experiment_matched_latency.py)
SEARCH_DEFAULTS = {"epochs": "3", "max_train": "6400"}
TRAIN_DEFAULTS = {"epochs": "1", "train_examples": "20000"}


def _sections(lines):
    """(heading, body lines) of each `## ` section."""
    starts = [i for i, line in enumerate(lines) if line.startswith("## ")] + [len(lines)]
    return [(lines[a].strip(), lines[a + 1:b]) for a, b in zip(starts, starts[1:])]


def flag_value(command, name):
    """The value of `--name=...` in a command line, None where the command leaves it out."""
    m = re.search(rf"--{name}=(\S+)", command)
    return m.group(1) if m else None


def arg_list(command, name):
    """The `--name=a,b,...` list of a command line as {flag: value} (flags without `--`)."""
    value = flag_value(command, name)
    if value is None:
        return {}
    out = {}
    for item in value.split(","):
        key, _, value = item.lstrip("-").partition("=")
        out[key] = value
    return out


def _table(body):
    """{contenders: {column: cell}} of the section's first `| contenders |` table."""
    start = next((i for i, line in enumerate(body) if line.startswith("| contenders")), None)
    if start is None:
        return {}
    header = [c.strip() for c in body[start].strip().strip("|").split("|")]
    rows = {}
    for line in body[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0]] = dict(zip(header, cells))
    return rows


def _number(text, pattern=r"(-?[\d.]+)"):
    m = re.search(pattern, text or "")
    return float(m.group(1)) if m else None


def parse_run(heading, body):
    """One matched-latency section as a dict of the numbers the digest shows (None where absent)."""
    tag = heading[len(MATCHED):].strip().strip("[]")
    command = next((line.strip() for line in body if "experiment_matched_latency.py" in line), "")
    search = {**SEARCH_DEFAULTS, **arg_list(command, "search_args")}
    train = {**TRAIN_DEFAULTS, **arg_list(command, "train_args")}
    rows = _table(body)
    acc = {g: _number(r.get("test accuracy mean ± std")) for g, r in rows.items()}
    median = {g: _number(r.get("median")) for g, r in rows.items()}
    claims = dict(re.findall(r"(\w+) = (True|False)", next((l for l in body if l.startswith("Claims:")), "")))
    noise = next((l for l in body if l.startswith("Seed noise")), "")
    ci = re.search(r"aware − median random: ([-+\d.]+) points, 90% bootstrap \[([-+\d.]+), ([-+\d.]+)\]", noise)
    blind = re.search(r"blind − median random: ([-+\d.]+) points", noise)

    def behind_median(group, line):  # the seed-noise line's number, else the table's
        if line:
            return float(line.group(1))
        if acc.get(group) is None or median.get("random") is None:
            return None
        return round(acc[group] - median["random"], 2)

    cost = next((l for l in body if l.startswith("Cost (")), None)
    return {
        "tag": tag or "(first)",
        "target_ms": _number(next((l for l in body if l.startswith("Target:")), None)),
        "search": f"{search['epochs']} × {search['max_train']}",
        "train": f"{train['epochs']} × {train['train_examples']}",
        "aware": acc.get("aware"), "random_median": median.get("random"), "mbv2": acc.get("mbv2"),
        "gap": behind_median("aware", ci), "gap_ci": (float(ci.group(2)), float(ci.group(3))) if ci else None,
        "blind_gap": behind_median("blind", blind),
        "claims": {k: claims.get(k) == "True" for k in CLAIMS if k in claims},
        "reliability": _number(noise, r"reliability ([\d.]+) for one training"),
        "cost": _number(cost, r"time ([\d.]+)×"),
    }


def runs(markdown):
    """Every matched-latency section of a RESULTS file, in file order."""
    return [parse_run(h, body) for h, body in _sections(markdown.splitlines()) if h.startswith(MATCHED)]


def _fmt(v, spec="+.2f", unit=""):
    return "—" if v is None else f"{v:{spec}}{unit}"


def digest(parsed):
    """The digest section's text (heading included)."""
    mark = {True: "yes", False: "no"}
    lines = [HEADING, "",
             "Written by `research/tools/summarize_results.py` from the sections below (one row each, in file order); "
             "accuracies in %, differences in points. aware − random: the aware mean minus the median random "
             "architecture (with the seed-noise section's 90 % bootstrap interval where the run has one). "
             "search / retraining: epochs × images. reliability: how well one retraining ranks the architectures "
             "of the band (1 = perfectly, 0 = not at all). cost: search time ÷ one retraining of the found network.",
             "",
             "| run | target ms | search | retraining | aware | median random | aware − random | blind − random "
             "| mbv2 | beats median | ≥ best random | ≥ mbv2 | within ±5 % | reliability | cost |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in parsed:
        gap = _fmt(r["gap"]) + (f" [{r['gap_ci'][0]:+.2f}, {r['gap_ci'][1]:+.2f}]" if r["gap_ci"] else "")
        claims = [mark.get(r["claims"].get(k), "—") for k in CLAIMS]
        lines.append(f"| {r['tag']} | {_fmt(r['target_ms'], '.4f')} | {r['search']} | {r['train']} | "
                     f"{_fmt(r['aware'], '.2f')} | {_fmt(r['random_median'], '.2f')} | {gap} | "
                     f"{_fmt(r['blind_gap'])} | {_fmt(r['mbv2'], '.2f')} | " + " | ".join(claims)
                     + f" | {_fmt(r['reliability'], '.2f')} | {_fmt(r['cost'], '.2f', '×')} |")
    judged = [r for r in parsed if r["gap"] is not None]
    ahead = [r for r in judged if r["gap"] > 0]
    sure = [r for r in judged if r["gap_ci"] and r["gap_ci"][0] > 0]
    behind = [r for r in judged if r["gap_ci"] and r["gap_ci"][1] < 0]
    lines += ["", f"The aware search is ahead of the median random architecture in {len(ahead)} of {len(judged)} runs"
              + (f" ({', '.join(r['tag'] for r in ahead)})" if ahead else "")
              + f"; its 90 % interval is above zero in {len(sure)} and below zero in {len(behind)} of the "
              f"{sum(1 for r in judged if r['gap_ci'])} runs that have one. All four claims hold in "
              f"{sum(1 for r in parsed if len(r['claims']) == 4 and all(r['claims'].values()))} runs."]
    return "\n".join(lines)


def update(path):
    """Rewrite (or insert, before the first `## ` section) the digest of the RESULTS file at `path`."""
    text = open(path, encoding="utf-8").read()
    lines = text.splitlines()
    parsed = runs(text)
    if not parsed:
        return None
    new = digest(parsed).splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == HEADING), None)
    if start is None:
        at = next((i for i, line in enumerate(lines) if line.startswith("## ")), len(lines))
        lines = lines[:at] + new + [""] + lines[at:]
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        lines = lines[:start] + new + [""] + lines[end:]
    files_lib.write_text_atomic(path, "\n".join(lines).rstrip("\n") + "\n")
    return parsed
