"""Pieces the experiment tools share: matched-latency sampling, a Pareto front, a job runner.

The experiments compare networks at one latency, so the random baselines must be drawn
from the same space *at that latency* (rejection sampling on the table's prediction), and
the runs are subprocesses of the real entry points (`proxyless_tf.search`,
`proxyless_tf.train`) so what is measured is exactly what a user runs. `run_jobs` keeps
a fixed number of them going, records each one's wall time and peak RSS (the kernel's
high-water mark `VmHWM` of the child, polled while it runs: exec starts a fresh one, whereas
`wait4`'s ru_maxrss also counts the parent's memory the child held between fork and exec),
and skips a job whose output already exists,
so a killed experiment resumes where it stopped.
"""

import dataclasses
import os
import subprocess
import sys
import time

import numpy as np
from proxyless_tf import files as files_lib

from proxyless_tf import space as space_lib
from proxyless_tf.errors import ConfigError


def uniform_arch(space, op):
    """Every searchable layer takes `op` (a MobileNetV2-style network when op is mb_k3_e6)."""
    missing = [l.index for l in space.layers if op not in l.candidates]
    if missing:
        raise ConfigError(space.source or "<space>", "candidates", f"{op!r} is not a candidate of layers {missing}",
                          "pick an op every layer has (see the space's candidates)")
    return space_lib.Arch(space, [op] * space.num_layers)


def matched_random_archs(space, predict, target_ms, count, tolerance=0.05, seed=0, max_draws=200_000, accept=None):
    """`count` distinct uniformly random archs whose predicted latency is within ±tolerance of target.

    Rejection sampling keeps the draw uniform over the space restricted to the latency
    band, which is what "a random architecture at this latency" means. `accept(arch)`, when
    given, is a second, costlier test of the archs the prediction lets through (e.g. a
    measurement in the band on the device): the draw stays uniform over the archs that pass both.
    Returns [(draw_seed, Arch, predicted_ms)].
    """
    out, seen = [], set()
    for k in range(max_draws):
        draw = seed * 1_000_003 + k
        arch = space.sample(draw)
        key = tuple(arch.ops)
        if key in seen:
            continue
        seen.add(key)
        ms = float(predict(arch))
        if abs(ms - target_ms) <= tolerance * target_ms and (accept is None or accept(arch)):
            out.append((draw, arch, ms))
            if len(out) == count:
                return out
    raise ConfigError("<experiment>", "target_ms",
                      f"only {len(out)} of {count} random archs within ±{tolerance:.0%} of {target_ms:.4g} ms "
                      f"in {max_draws} draws", "pick a target nearer the middle of the space's range or widen --tolerance")


class MeasuredScreen:
    """The prediction screen and the measured test of `matched_random_archs` (its `predict` and
    `accept`), with the screen centred where the measurements say the band lies.

    The screen divides each prediction by the median predicted ÷ measured ratio seen so far
    (`first`, e.g. the reference network's, then every candidate measured): one network's ratio
    is a poor centre when the table over- or under-prices that network's ops more than the
    typical one's (the uniform `e6` network: 1.11 on the Xeon, random networks about 1.0), and a
    screen off-centre spends most measurements outside the band. The ratios follow the
    measurements in draw order, so a run resumed on cached measurements draws the same archs."""

    def __init__(self, predict, measure, target_ms, tolerance, first=()):
        self._predict, self._measure = predict, measure
        self.target_ms, self.tolerance = float(target_ms), float(tolerance)
        self.ratios = [float(p) / float(m) for p, m in first]
        self.measured = 0

    def ratio(self):
        return float(np.median(self.ratios)) if self.ratios else 1.0

    def predict(self, arch):
        """The table's prediction on the device's clock (what the screen compares with the target)."""
        return float(self._predict(arch)) / self.ratio()

    def accept(self, arch):
        ms = float(self._measure(arch))
        self.measured += 1
        self.ratios.append(float(self._predict(arch)) / ms)
        return abs(ms - self.target_ms) <= self.tolerance * self.target_ms


def accuracy_claims(groups):
    """RQ4's three accuracy claims from `accuracy_stats` per group ({} without aware, random and
    mbv2): one rule for a single run and for runs pooled over seeds (`matched_pool`)."""
    a = groups.get("aware")
    if not (a and "random" in groups and "mbv2" in groups):
        return {}
    return {"aware_beats_median_random": a["acc_mean"] > groups["random"]["acc_median"],
            "aware_within_std_of_best_random": a["acc_mean"] + a["acc_std"] >= groups["random"]["acc_max"],
            "aware_within_std_of_mbv2": a["acc_mean"] + a["acc_std"] >= groups["mbv2"]["acc_mean"]}


def pareto_front(points):
    """Indices of the points (latency, accuracy) no other point beats in both (lower latency, higher acc)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -np.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def accuracy_stats(rows, by_arch=False):
    """Accuracy summary of one group of contenders (rows with "ops" and "test_accuracy").

    `by_arch`: the rows are fixed architectures each retrained with several seeds (the random
    contenders). Their seeds are averaged first, so "best" and "median" rank architectures, not
    single trainings: the best of 10 single-seed runs is mostly the luckiest seed, and claiming
    against it compares a mean with a maximum of noise."""
    if by_arch:
        per = {}
        for r in rows:
            per.setdefault(tuple(r["ops"]), []).append(r["test_accuracy"])
        runs = list(per.values())
    else:  # one entry per row: each seed is its own search, the seed spread is the point
        runs = [[r["test_accuracy"]] for r in rows]
    means = np.array([np.mean(v) for v in runs])
    best = int(np.argmax(means))
    return {"n": len(runs), "runs": int(sum(len(v) for v in runs)), "acc_mean": float(means.mean()),
            "acc_std": float(means.std(ddof=0)), "acc_median": float(np.median(means)),
            "acc_max": float(means[best]), "acc_max_seed_std": float(np.std(runs[best], ddof=0))}


@dataclasses.dataclass
class Job:
    """One subprocess: `done_file` existing means it already ran (resume)."""
    name: str
    argv: list
    log_path: str
    done_file: str
    wall_s: float = None
    max_rss_mib: float = None
    returncode: int = None


def _env(threads):
    env = dict(os.environ)
    if threads:
        env["TF_NUM_INTRAOP_THREADS"] = str(threads)
        env["TF_NUM_INTEROP_THREADS"] = "1"
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _hwm_mib(pid):
    """The process's peak resident set since its exec (VmHWM), in MiB; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def run_jobs(jobs, parallel=1, threads=None, log=print, poll_s=0.5):
    """Run the jobs not done yet, `parallel` at a time; fill in wall time, peak RSS, return code.

    Returns the jobs that ran here (skipped ones keep wall_s None). A failed job is
    reported with its log path and does not stop the others; the caller decides.
    """
    todo = [j for j in jobs if not os.path.exists(j.done_file)]
    for j in jobs:
        if j not in todo:
            log(f"[skip] {j.name}: {j.done_file} exists")
    running, ran = {}, []
    t0 = time.time()
    while todo or running:
        while todo and len(running) < max(1, parallel):
            j = todo.pop(0)
            os.makedirs(os.path.dirname(os.path.abspath(j.log_path)), exist_ok=True)
            f = open(j.log_path, "ab")
            p = subprocess.Popen(j.argv, stdout=f, stderr=subprocess.STDOUT, env=_env(threads))
            running[p.pid] = (j, p, f, time.time())
            log(f"[start {time.time() - t0:6.0f}s] {j.name} (log {j.log_path})")
        pid, status, _ = os.wait4(-1, os.WNOHANG)
        if pid == 0:
            for child, (j, _, _, _) in running.items():
                j.max_rss_mib = max(j.max_rss_mib or 0.0, _hwm_mib(child))
            time.sleep(poll_s)
            continue
        if pid not in running:
            continue
        j, p, f, started = running.pop(pid)
        f.close()
        p.returncode = os.waitstatus_to_exitcode(status)
        j.returncode = p.returncode
        j.wall_s = time.time() - started
        ran.append(j)
        state = "done" if j.returncode == 0 else f"FAILED (exit {j.returncode}; see {j.log_path})"
        log(f"[{state} {time.time() - t0:6.0f}s] {j.name}: {j.wall_s:.0f} s, peak RSS {j.max_rss_mib:.0f} MiB")
    return ran


def record_jobs(ran, path):
    """Merge the wall time and peak RSS of the jobs that ran into the JSON at `path`; returns every record.

    Skipped (already done) jobs keep what an earlier invocation recorded, so a resumed
    experiment still reports the cost of every job.
    """
    recorded = files_lib.read_json(path, "job record") if os.path.exists(path) else {}
    for j in ran:
        recorded[j.name] = {"wall_s": j.wall_s, "max_rss_mib": j.max_rss_mib, "signature": job_signature(j.argv)}
    files_lib.write_json_atomic(path, recorded)
    return recorded


def load_run_rows(run_dir):
    """The contender rows of a finished research/tools/experiment_matched_latency.py run (its results.json),
    checked for what the analysis tools read from them."""
    path = os.path.join(run_dir, "results.json")
    if not os.path.exists(path):
        raise ConfigError(path, "results.json", "missing: the run has not finished",
                          "finish it with its research/tools/experiment_matched_latency.py command, or pass another run")
    rows = files_lib.read_json(path, "experiment results").get("rows")
    if not rows or not all({"name", "group", "ops", "seed", "test_accuracy"} <= set(r) for r in rows):
        raise ConfigError(path, "rows", "no contender rows with name, group, ops, seed and test_accuracy",
                          "pass the out_dir of a research/tools/experiment_matched_latency.py run")
    return rows


def job_signature(argv):
    """A job's command as reuse compares it: the module and its flags, without the interpreter and
    where it writes; an `--arch=PATH` becomes the ops the file holds, since two runs keep the same
    network in their own archs/ folders."""
    args = argv[argv.index("-m") + 1:] if "-m" in argv else argv[1:]
    sig = []
    for a in args:
        if a.startswith("--out_dir="):
            continue
        if a.startswith("--arch=") and os.path.exists(a[len("--arch="):]):
            a = "--arch_ops=" + ",".join(space_lib.Arch.from_json(a[len("--arch="):]).ops)
        sig.append(a)
    return sig


def _by_content(signature):
    """A signature whose file arguments (`--space=PATH`, `--latency_table=PATH`) are compared by what
    the files hold, not where they are: a tool's defaults are absolute paths under its checkout, so
    the same command run from another clone would otherwise never match. A path that no longer
    exists stays a path (and matches only itself)."""
    import hashlib

    out = []
    for a in signature:
        flag, _, value = a.partition("=")
        if a.startswith("--") and value and os.path.isfile(value):
            with open(value, "rb") as f:
                a = f"{flag}#sha256={hashlib.sha256(f.read()).hexdigest()}"
        out.append(a)
    return out


def reuse_jobs(jobs, reuse_dirs, out_dir, log=print):
    """Copy into `out_dir` every job not done there that one of `reuse_dirs` finished with the same
    signature (its jobs.json; file arguments compared by content), with its log and cost record;
    returns the names reused.

    What makes a run reproducible from its printed command: sharing trainings between runs by
    copying directories by hand leaves a command that, on an empty directory, would redo them.
    A finished job whose record has no signature (an older run) or another one is not taken, and
    the line says why."""
    import shutil

    reused = []
    mine_path = os.path.join(out_dir, "jobs.json")
    mine = files_lib.read_json(mine_path, "job record") if os.path.exists(mine_path) else {}
    records = {d: files_lib.read_json(os.path.join(d, "jobs.json"), "job record")
               if os.path.exists(os.path.join(d, "jobs.json")) else {} for d in reuse_dirs}
    for j in jobs:
        if os.path.exists(j.done_file):
            continue
        job_dir = os.path.dirname(os.path.abspath(j.done_file))
        rel = os.path.relpath(job_dir, out_dir)
        want, why = _by_content(job_signature(j.argv)), []
        for d in reuse_dirs:
            src, rec = os.path.join(d, rel), records[d].get(j.name)
            if not os.path.exists(os.path.join(src, os.path.basename(j.done_file))):
                continue
            if rec is None or "signature" not in rec:
                why.append(f"{d} recorded no arguments for it")
            elif (theirs := _by_content(rec["signature"])) != want:  # named as written, where the content differs
                diff = sorted({a for a, n in zip(rec["signature"], theirs) if n not in want}
                              | {a for a, n in zip(job_signature(j.argv), want) if n not in theirs})
                why.append(f"{d} ran it with other arguments ({', '.join(diff[:2])})")
            else:
                if os.path.exists(job_dir):
                    shutil.rmtree(job_dir)  # a partial run of ours: the finished one replaces it
                shutil.copytree(src, job_dir)
                if os.path.exists(src + ".log"):
                    shutil.copyfile(src + ".log", j.log_path)
                mine[j.name] = dict(rec, reused_from=os.path.abspath(d))
                files_lib.write_json_atomic(mine_path, mine)
                reused.append(j.name)
                log(f"[reuse] {j.name}: from {d}")
                break
        else:
            if why:
                log(f"[no reuse] {j.name}: " + "; ".join(why))
    return reused


def python_module(module, *args):
    return [sys.executable, "-m", module, *[str(a) for a in args]]


HAND_WRITTEN = "<!-- by hand: kept when a tool rewrites this section -->"


def write_section(path, text, heading):
    """Replace (or append) the `## ` section called `heading` of a markdown file, keeping the others.

    Each experiment tool owns one section of research/RESULTS.md and rewrites only that one. A reading
    of the numbers written by a person below a `HAND_WRITTEN` line survives the rewrite (it follows
    the new text): rerunning a tool on more data must not silently delete what someone concluded.
    """
    old = open(path, encoding="utf-8").read() if os.path.exists(path) else "# Results\n\n"
    lines = old.splitlines()
    start = next((i for i, l in enumerate(lines) if l.strip() == heading), None)
    if start is None:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        hand = next((i for i in range(start + 1, end) if lines[i].strip() == HAND_WRITTEN), end)
        kept = [""] + "\n".join(lines[hand:end]).rstrip("\n").splitlines() if hand < end else []
        new = "\n".join(lines[:start] + text.rstrip("\n").splitlines() + kept + [""] + lines[end:])
    files_lib.write_text_atomic(path, new.rstrip("\n") + "\n")


def measure_all(contenders, measure, rounds, path):
    """The reported latency of every distinct arch: the median of `rounds` fresh measurements.

    One measurement of a network on this VM moves 3-6 % between sessions (a fresh interpreter,
    another moment), which is the size of the ±5 % band the claim is held to. So at the end every
    network — random ones too, though they were kept by a first measurement — is measured again
    `rounds` times with the table's backend settings (`measure(arch, fresh=True)`), each time a
    fresh conversion and interpreter, in interleaved rounds (round r starts r networks further
    down the list, so a slow spell of the machine does not always land on the same ones). Rounds
    are written to `path` as they finish: a killed run resumes at the round it was in, and a run
    extended with more contenders (more seeds) measures only the new networks in each round.
    Returns ({ops key: median ms}, {ops key: [ms per round]})."""
    paths = sorted({c["arch_path"] for c in contenders.values()})

    def label(p):  # a search's directory, or the file name of an arch under archs/
        d = os.path.basename(os.path.dirname(p))
        return d if d != "archs" else os.path.splitext(os.path.basename(p))[0]

    archs = [(label(p), space_lib.Arch.from_json(p)) for p in paths]
    done = files_lib.read_json(path, "final measurements")["rounds"] if os.path.exists(path) else []
    for r in range(rounds):
        got = done[r] if r < len(done) else {}
        fresh = 0
        for i in range(len(archs)):
            name, arch = archs[(i + r) % len(archs)]
            key = ",".join(arch.ops)
            if key in got:
                continue
            got[key] = ms = measure(arch, fresh=True)
            fresh += 1
            print(f"final measurement round {r + 1}/{rounds}, {i + 1}/{len(archs)} {name}: {ms:.4f} ms", flush=True)
        if r == len(done):
            done.append(got)
        if fresh:
            files_lib.write_json_atomic(path, {"rounds": done})
    keys = [",".join(a.ops) for _, a in archs]
    per_arch = {k: [rd[k] for rd in done[:rounds]] for k in keys}
    return {k: float(np.median(v)) for k, v in per_arch.items()}, per_arch

