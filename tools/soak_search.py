"""A soak of `python -m proxyless_tf.search`: a long run, killed and resumed, with its memory watched.

    nice -n 10 python tools/soak_search.py --minutes=30 --out=/tmp/soak.json

Why: a search runs for hours or days and is killed and resumed on the way (preemption, a
lost machine). A slow leak (Keras history, metric state, a tf.function retraced every
epoch or on resume, TensorBoard writers) does not show in the minutes-long tests, only
in a long run, and only the resume path's leaks show in a resumed one. This tool runs a
quickstart-size search (configs/quickstart.flags: the fashion_mnist space on the real
Fashion-MNIST, the committed table configs/latency/fashion_mnist_litert1.json, so no time
goes to measuring latency) with short epochs and a resume checkpoint every few minutes;
at about half of --minutes it SIGKILLs the search mid-epoch and starts the same command
again, which must print `search: resuming ... at epoch E step S` and run to the end.

Memory: the resident set of the search (and any child processes) is sampled every
--interval seconds from /proc/PID/status. Epoch boundaries come from the search's output
(`Epoch N/M` at an epoch's start, `K/K - ...` at its end, Keras verbose=2); at each
epoch start the kernel's peak counter (VmHWM) is reset through /proc/PID/clear_refs, so
VmHWM at the epoch's end is that epoch's exact peak (the samples' maximum where the reset
is not allowed). The verdict compares the peak of the resumed process's last epoch with
the peak of the first process's first epoch: the ratio must stay within --max_ratio
(1.10). `--warmup_epochs=0` by default, so epoch 1 already traces both the weight and
the architecture step (with a warm-up epoch, epoch 1 holds only the weight step's graph
and is not a fair baseline).

Prints a table and writes it as JSON (--out); exits 1 with a one-line message when the
ratio exceeds --max_ratio, the resume did not happen, or a search process failed.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from absl import flags  # noqa: E402

from proxyless_tf import cli  # noqa: E402
from proxyless_tf.errors import ConfigError  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_float("minutes", 30.0, "Planned length of the soak; the kill comes at --kill_frac of it (and after "
                   "epoch 1 and a mid-epoch checkpoint). Size --epochs/--steps_per_epoch so the search lasts this long.")
flags.DEFINE_float("kill_frac", 0.5, "When to SIGKILL the first search, as a fraction of --minutes.")
flags.DEFINE_string("flagfile_search", "quickstart.flags", "The search's flag file (a name in configs/ or a path).")
flags.DEFINE_string("latency_table", os.path.join(ROOT, "configs", "latency", "fashion_mnist_litert1.json"),
                    "Latency table of the search (committed: no measuring).")
flags.DEFINE_integer("epochs", 16, "Search epochs.")
flags.DEFINE_integer("warmup_epochs", 0, "Weight-only epochs first (0: epoch 1 traces both steps).")
flags.DEFINE_integer("steps_per_epoch", 100, "Steps per epoch (short epochs: several in the soak).")
flags.DEFINE_integer("checkpoint_every", 50, "Resume checkpoint every this many steps.")
flags.DEFINE_multi_string("search_arg", [], "More flags for the search, e.g. --search_arg=--max_train=6400 "
                          "(after the others: they win).")
flags.DEFINE_string("out_dir", "/tmp/proxyless_soak/run", "Run directory of the search (started afresh: a "
                    "directory this tool made is deleted first).")
flags.DEFINE_float("interval", 1.0, "Seconds between memory samples.")
flags.DEFINE_float("max_ratio", 1.10, "Largest allowed last-epoch / first-epoch peak RSS.")
flags.DEFINE_string("out", None, "Write the results as JSON here.")
flags.DEFINE_string("log", None, "The searches' output (default: OUT_DIR/../soak.log).")

MARKER = ".soak_search"
EPOCH_START = re.compile(r"^Epoch (\d+)/(\d+)\s*$")
EPOCH_END = re.compile(r"^(\d+)/(\d+) - ")
RESUMING = re.compile(r"^search: resuming .* at epoch (\d+) step (\d+)")


def die_with_parent():
    """In the child: SIGKILL when this tool dies (a killed soak must not leave a search running)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def status_kib(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def descendants(pid):
    """pid and every process below it (the search starts none today; a data loader might)."""
    children = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def tree_rss_mib(pid):
    vals = [status_kib(p, "VmRSS") for p in descendants(pid)]
    return sum(v for v in vals if v) / 1024.0


def reset_hwm(pid):
    """Reset the kernel's peak-RSS counter of pid to its current RSS; False where not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def read_state(out_dir):
    """(epoch, step) of the resume checkpoint, the epoch 1-based like Keras and `search: resuming`."""
    try:
        with open(os.path.join(out_dir, "resume", "state.json"), encoding="utf-8") as f:
            meta = json.load(f)
        return int(meta["epoch"]) + 1, int(meta["step"])
    except (OSError, ValueError, KeyError):
        return None


class Watched:
    """One search process: its output parsed on a thread, its memory sampled by `sample`."""

    def __init__(self, name, cmd, env, log):
        self.name, self.log = name, log
        self.proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1, errors="replace", preexec_fn=die_with_parent)
        self.t0 = time.time()
        self.lock = threading.Lock()
        self.epoch = None            # the epoch running now (1-based, absolute)
        self.epochs = []             # finished: {"epoch", "peak_mib", "sampled_peak_mib", "rss_end_mib", ...}
        self.sampled_peak = 0.0      # samples' maximum in the running epoch
        self.hwm_ok = False
        self.resumed_at = None
        self.samples = []            # (seconds since start, MiB)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            self.log.write(f"[{self.name}] {line}")
            self.log.flush()
            s = line.strip()
            m = RESUMING.match(s)
            if m:
                self.resumed_at = (int(m.group(1)), int(m.group(2)))
            m = EPOCH_START.match(s)
            if m:
                with self.lock:
                    self.epoch = int(m.group(1))
                    self.epoch_t0 = time.time()
                    self.sampled_peak = tree_rss_mib(self.proc.pid)
                    self.hwm_ok = reset_hwm(self.proc.pid)
                continue
            m = EPOCH_END.match(s)
            if m and m.group(1) == m.group(2) and self.epoch is not None:
                with self.lock:
                    rss = tree_rss_mib(self.proc.pid)
                    hwm = status_kib(self.proc.pid, "VmHWM")
                    sampled = max(self.sampled_peak, rss)
                    peak = hwm / 1024.0 if self.hwm_ok and hwm else sampled
                    self.epochs.append({"epoch": self.epoch, "peak_mib": round(peak, 1),
                                        "sampled_peak_mib": round(sampled, 1), "rss_end_mib": round(rss, 1),
                                        "peak_from": "VmHWM" if self.hwm_ok and hwm else "samples",
                                        "seconds": round(time.time() - self.epoch_t0, 1), "steps": int(m.group(1))})
                    self.epoch = None

    def sample(self):
        if self.proc.poll() is not None:
            return
        rss = tree_rss_mib(self.proc.pid)
        with self.lock:
            self.samples.append((round(time.time() - self.t0, 1), round(rss, 1)))
            if self.epoch is not None:
                self.sampled_peak = max(self.sampled_peak, rss)

    def summary(self):
        return {"epochs": self.epochs, "resumed_at": self.resumed_at, "returncode": self.proc.returncode,
                "seconds": round(time.time() - self.t0, 1),
                "max_sampled_rss_mib": max((r for _, r in self.samples), default=None),
                "rss_samples": self.samples[:: max(1, len(self.samples) // 400)]}


def search_cmd():
    return [sys.executable, "-m", "proxyless_tf.search", f"--flagfile={FLAGS.flagfile_search}",
            f"--latency_table={FLAGS.latency_table}", "--nobuild_table",
            f"--epochs={FLAGS.epochs}", f"--warmup_epochs={FLAGS.warmup_epochs}",
            f"--steps_per_epoch={FLAGS.steps_per_epoch}", f"--checkpoint_every={FLAGS.checkpoint_every}",
            "--verbose=2", f"--out_dir={FLAGS.out_dir}"] + list(FLAGS.search_arg)


def fresh_out_dir(out_dir):
    if os.path.exists(out_dir):
        if not os.path.exists(os.path.join(out_dir, MARKER)):
            raise ConfigError(out_dir, "--out_dir", "exists and was not made by this tool",
                              "pass a new directory (the soak deletes its run directory first)")
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    open(os.path.join(out_dir, MARKER), "w").close()


def main(argv):
    del argv
    out_dir = os.path.abspath(os.path.expanduser(FLAGS.out_dir))
    FLAGS.out_dir = out_dir
    fresh_out_dir(out_dir)
    log_path = FLAGS.log or os.path.join(os.path.dirname(out_dir), "soak.log")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
    cmd = search_cmd()
    kill_s = FLAGS.kill_frac * FLAGS.minutes * 60
    print("soak: " + " ".join(cmd[1:]), flush=True)
    print(f"soak: log {log_path}; SIGKILL after {kill_s / 60:.1f} min (and epoch 1 and a mid-epoch checkpoint)",
          flush=True)
    t0 = time.time()
    checkpoints, last_state = [], None
    kill = None
    with open(log_path, "w") as log:
        runs = [Watched("first", cmd, env, log)]
        while True:
            run = runs[-1]
            run.sample()
            state = read_state(out_dir)
            if state and state != last_state:
                checkpoints.append({"epoch": state[0], "step": state[1], "at_s": round(time.time() - t0, 1),
                                    "process": run.name})
                last_state = state
            if run.proc.poll() is not None:  # the end (or a failure, or the first run finished before the kill)
                run.thread.join(timeout=10)
                break
            if (len(runs) == 1 and time.time() - t0 >= kill_s and run.epochs and state and state[1] > 0
                    and run.epoch is not None and run.epoch < FLAGS.epochs):
                os.kill(run.proc.pid, signal.SIGKILL)
                run.proc.wait()
                run.thread.join(timeout=10)
                state = read_state(out_dir) or state  # final now: what the restart must resume from
                kill = {"at_s": round(time.time() - t0, 1), "epoch_running": run.epoch,
                        "checkpoint": {"epoch": state[0], "step": state[1]}}
                print(f"soak: SIGKILL at {kill['at_s'] / 60:.1f} min in epoch {run.epoch}; last checkpoint "
                      f"epoch {state[0]} step {state[1]}; restarting the same command", flush=True)
                runs.append(Watched("resumed", cmd, env, log))
                continue
            time.sleep(FLAGS.interval)
    wall = time.time() - t0
    first, last = runs[0], runs[-1]
    res = {
        "command": " ".join(["python"] + cmd[1:]),
        "wall_s": round(wall, 1), "minutes_planned": FLAGS.minutes,
        "kill": kill,
        "resume_point": ({"epoch": last.resumed_at[0], "step": last.resumed_at[1]} if last.resumed_at else None),
        "checkpoints_seen": len(checkpoints), "checkpoints": checkpoints,
        "first_epoch_peak_mib": first.epochs[0]["peak_mib"] if first.epochs else None,
        "first_epoch_number": first.epochs[0]["epoch"] if first.epochs else None,
        "last_epoch_peak_mib": last.epochs[-1]["peak_mib"] if len(runs) > 1 and last.epochs else None,
        "last_epoch_number": last.epochs[-1]["epoch"] if len(runs) > 1 and last.epochs else None,
        "processes": {r.name: r.summary() for r in runs},
        "max_ratio": FLAGS.max_ratio,
    }
    a, b = res["first_epoch_peak_mib"], res["last_epoch_peak_mib"]
    res["ratio"] = round(b / a, 4) if a and b else None
    report(res)
    if FLAGS.out:
        from proxyless_tf.files import write_json_atomic

        write_json_atomic(FLAGS.out, res)
    problems = []
    if first.proc.returncode not in (0, -signal.SIGKILL):
        problems.append(f"the first search failed (exit {first.proc.returncode}; see {log_path})")
    elif len(runs) == 1:
        problems.append("the search ended before the kill: no resume happened (raise --epochs or lower --minutes)")
    elif last.resumed_at is None:
        problems.append(f"the restarted search did not print 'search: resuming' (see {log_path})")
    elif last.proc.returncode != 0:
        problems.append(f"the resumed search failed (exit {last.proc.returncode}; see {log_path})")
    elif res["ratio"] is None:
        problems.append("no epoch peaks were recorded (no 'Epoch N/M' output?)")
    elif res["ratio"] > FLAGS.max_ratio:
        problems.append(f"memory grew: last-epoch peak {b:.0f} MiB is {res['ratio']:.3f}x the first epoch's "
                        f"{a:.0f} MiB (allowed {FLAGS.max_ratio:g}x)")
    if problems:
        print(f"error: soak: {problems[0]}", file=sys.stderr)
        sys.exit(1)
    if wall < FLAGS.minutes * 60:
        print(f"soak: note: the run took {wall / 60:.1f} min, less than --minutes={FLAGS.minutes:g} "
              "(raise --epochs for a longer soak)", flush=True)


def report(r):
    def mib(v):
        return f"{v:.0f} MiB" if v is not None else "-"

    rp = r["resume_point"]
    rows = [
        (f"peak RSS, epoch {r['first_epoch_number']} (first process)", mib(r["first_epoch_peak_mib"])),
        (f"peak RSS, epoch {r['last_epoch_number']} (last, resumed process)", mib(r["last_epoch_peak_mib"])),
        ("ratio last / first", f"{r['ratio']:.3f} (allowed {r['max_ratio']:g})" if r["ratio"] else "-"),
        ("wall time", f"{r['wall_s'] / 60:.1f} min"),
        ("resume checkpoints seen", str(r["checkpoints_seen"])),
        ("killed at", f"{r['kill']['at_s'] / 60:.1f} min, in epoch {r['kill']['epoch_running']}" if r["kill"] else "-"),
        ("resumed at", f"epoch {rp['epoch']} step {rp['step']}" if rp else "-"),
    ]
    print()
    for k, v in rows:
        print(f"{k:44s} {v}")
    for name, p in r["processes"].items():
        peaks = " ".join(f"{e['epoch']}:{e['peak_mib']:.0f}" for e in p["epochs"])
        print(f"{name} process, per-epoch peak MiB (epoch:peak): {peaks}")


if __name__ == "__main__":
    cli.run(main)
