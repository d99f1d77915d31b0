"""Parse what TFLite's `benchmark_model` prints, in every form that is in use.

Versions differ: newer builds prefix every line with `INFO: `; run statistics are
`count=… first=… curr=… min=… max=… avg=… std=…`, and newer ones add `p5=… median=… p95=…`;
the summary is `Inference timings in us: Init: …, First inference: …, Warmup (avg): …,
Inference (avg): …`, older builds print `Average inference timings in us: Warmup: …,
Init: …, Inference: …`; with `--enable_op_profiling` come tab-separated tables whose
columns vary (`[start]` was dropped in later versions), so tables are read by header.
All times in the output are microseconds (op tables: milliseconds).
"""

import dataclasses
import math
import re

_PREFIX_RE = re.compile(r"^(?:INFO|WARNING|ERROR|VERBOSE):\s?")
_KV_RE = re.compile(r"([A-Za-z0-9_]+)=([-+0-9.eE]+|nan|inf)")
_SUMMARY_RE = re.compile(r"^Inference timings in us:\s*(.*)$")
_OLD_SUMMARY_RE = re.compile(r"^Average inference timings in us:\s*(.*)$")
_TIMINGS_RE = re.compile(r"^Timings \(microseconds\):\s*count=\d")
_TABLE_TITLE_RE = re.compile(r"^=+\s*(.+?)\s*=+$")


@dataclasses.dataclass
class RunStats:
    """One `count=…` line: a set of runs (warm-up or timed), times in microseconds."""

    values: dict

    @property
    def count(self):
        return int(self.values.get("count", 0))

    def get(self, name):
        return self.values.get(name)


@dataclasses.dataclass
class BenchmarkOutput:
    """Everything found in one run's text."""

    run_stats: list            # RunStats in order: [warm-up, timed] normally
    summary: dict              # Init / First inference / Warmup (avg) / Inference (avg), in us
    op_tables: list            # dict(title, section, columns, rows) per op-profiling table
    errors: list               # lines that say the run failed

    @property
    def timed(self):
        """Stats of the timed runs: the last `count=` line."""
        return self.run_stats[-1] if self.run_stats else None


def strip_prefix(line):
    return _PREFIX_RE.sub("", line.rstrip("\r\n"))


def _summary_pairs(text):
    out = {}
    for part in text.split(","):
        if ":" in part:
            k, v = part.rsplit(":", 1)
            try:
                out[k.strip()] = float(v.strip())
            except ValueError:
                pass
    return out


def _parse_count_line(line):
    vals = {}
    for k, v in _KV_RE.findall(line):
        vals[k] = float(v)
    return RunStats(vals) if "count" in vals else None


def _split_cols(line):
    return [c.strip() for c in re.split(r"\t+|\s{2,}", line.strip()) if c.strip()]


def _parse_table(lines, i, title, section):
    """A profiling table starting at lines[i] (its header); returns (table, next index)."""
    header = re.findall(r"\[([^\]]+)\]", lines[i])
    cols = [h.strip().lower() for h in header]
    rows = []
    i += 1
    while i < len(lines):
        raw = lines[i]
        if not raw.strip() or _TABLE_TITLE_RE.match(raw.strip()):
            break
        cells = _split_cols(raw)
        if len(cells) < len(cols):
            break
        if len(cells) > len(cols):  # a name with spaces: everything past the last column
            cells = cells[:len(cols) - 1] + [" ".join(cells[len(cols) - 1:])]
        row = {}
        for c, v in zip(cols, cells):
            try:
                row[c] = float(v.rstrip("%"))
            except ValueError:
                row[c] = v
        rows.append(row)
        i += 1
    return {"title": title, "section": section, "columns": cols, "rows": rows}, i


def parse(text):
    """BenchmarkOutput of one `benchmark_model` run's combined stdout/stderr."""
    lines = [strip_prefix(l) for l in text.splitlines()]
    stats, summary, tables, errors = [], {}, [], []
    section, title = None, None
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        m = _SUMMARY_RE.match(line)
        if m:
            summary.update(_summary_pairs(m.group(1)))
            i += 1
            continue
        m = _OLD_SUMMARY_RE.match(line)
        if m:
            # Older builds: "Warmup" is the warm-up average, "Inference" the timed average.
            old = _summary_pairs(m.group(1))
            for k, new in (("Init", "Init"), ("Warmup", "Warmup (avg)"), ("Inference", "Inference (avg)"),
                           ("First inference", "First inference")):
                if k in old:
                    summary[new] = old[k]
            i += 1
            continue
        if line.startswith("count=") or _TIMINGS_RE.match(line):
            st = _parse_count_line(line)
            if st:
                stats.append(st)
            i += 1
            continue
        if line.startswith("Profiling Info for") or line.startswith("Operator-wise Profiling Info"):
            section = line.rstrip(":")
            i += 1
            continue
        m = _TABLE_TITLE_RE.match(line)
        if m and not line.strip("="):
            i += 1
            continue
        if m:
            title = m.group(1)
            i += 1
            continue
        if line.startswith("[") and "[" in line and "]" in line and title:
            table, i = _parse_table(lines, i, title, section)
            tables.append(table)
            continue
        low = line.lower()
        if (low.startswith("error") or "failed" in low or "aborted" in low or "segmentation fault" in low
                or "not found" in low or "no such file" in low or "permission denied" in low):
            errors.append(line)
        i += 1
    return BenchmarkOutput(stats, summary, tables, errors)


Z_95 = 1.6448536269514722


def latency_ms(out):
    """(median, p5, p95, count) in milliseconds from the timed runs.

    Builds that print p5/median/p95 give them directly. Older ones print only avg/std/min/max:
    then median := avg, p5/p95 := avg -/+ 1.645 std clipped to [min, max] (normal
    approximation), which is what those builds let one know. The summary line's
    `Inference (avg)` is the last resort (count unknown: 0).
    """
    t = out.timed
    if t is not None and t.count > 0:
        v = t.values
        to_ms = 1e-3
        if "median" in v:
            med = v["median"]
            p5 = v.get("p5", v.get("min", med))
            p95 = v.get("p95", v.get("max", med))
        else:
            med = v.get("avg", v.get("curr"))
            std = v.get("std", 0.0)
            lo, hi = v.get("min", med), v.get("max", med)
            p5 = min(max(med - Z_95 * std, lo), med)
            p95 = max(min(med + Z_95 * std, hi), med)
        if med is not None and all(math.isfinite(x) for x in (med, p5, p95)):
            return med * to_ms, p5 * to_ms, p95 * to_ms, t.count
    if "Inference (avg)" in out.summary:
        avg = out.summary["Inference (avg)"] * 1e-3
        return avg, avg, avg, 0
    return None
