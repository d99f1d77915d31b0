"""Measure every block of a search space on one backend and write the latency table.

Usage:
  python tools/build_latency_table.py --space=configs/spaces/fashion_mnist.json \
      --backend=litert --threads=1 --num_classes=10 --out=run/latency_fashion_mnist.json

The file is rewritten (atomically) after every block, so killing the run and starting
the same command again continues where it stopped. --noresume starts over.

Several workers measure one table at once (proxyless_tf/latency/shards.py): phones of one
model by serial (`--backend=adb --serial=SERIAL_A,SERIAL_B`), or host processes
(`--workers=N` with litert or tf). Each worker is this tool with `--shard=I/N`, writing
OUT.shardI-of-N.json (and .log); when all are complete they are merged into --out. A
killed multi-worker build resumes the same way, each shard where it stopped.
"""

import os
import subprocess
import sys
import time

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import latency_flags  # noqa: E402  (tools/ is on sys.path when run as a script)
from proxyless_tf import files as files_lib
from proxyless_tf import space as space_lib  # noqa: E402
from proxyless_tf import cli  # noqa: E402
from proxyless_tf.errors import ConfigError  # noqa: E402

SPACE = flags.DEFINE_string("space", None, "search space JSON")
OUT = flags.DEFINE_string("out", None, "latency table JSON to write (resumed if it exists)")
NUM_CLASSES = flags.DEFINE_integer("num_classes", 10, "classifier width of the head entry")
RESUME = flags.DEFINE_bool("resume", True, "continue an existing table at --out")
PROGRESS = flags.DEFINE_bool("progress", True, "show a progress bar")
WORKERS = flags.DEFINE_integer("workers", 1, "host processes measuring at once (litert, tf); with adb, "
                               "pass several --serial instead. Each adds load the others' timings see: on a "
                               "host, use at most one worker per --threads cores")
SHARD = flags.DEFINE_string("shard", None, "I/N: measure only worker I's share of the keys into --out "
                            "(what --workers and a --serial list run; merged by them)")


MAX_WORKERS = 64  # each is a process with TensorFlow loaded; more would exhaust the machine, not speed it up


def _serials():
    return [s.strip() for s in (latency_flags.SERIAL.value or "").split(",") if s.strip()]


def _worker_argv(index, count, path, serial):
    """The child command of worker `index`: this tool, the same space and backend flags, one shard."""
    backend = latency_flags.BACKEND.value
    kw = latency_flags.backend_kwargs(backend)
    if serial is not None:
        kw["serial"] = serial
    if backend == "litert" and latency_flags.MAX_BUSY.value is None:
        # the contention check would count the sibling workers as disturbance and retry every block
        kw["max_busy"] = 0.3 + (count - 1) * latency_flags.THREADS.value
    return ([sys.executable, os.path.abspath(__file__), f"--space={SPACE.value}", f"--out={path}",
             f"--num_classes={NUM_CLASSES.value}", f"--shard={index}/{count}", f"--backend={backend}",
             "--resume" if RESUME.value else "--noresume", "--noprogress"]
            + [f"--{k}={v}" for k, v in kw.items()])


def _measured(path):
    try:  # a worker's shard, read while it runs: whatever it holds, only a count for the progress line
        return len(files_lib.read_json_object(path, "shard").get("entries") or {})
    except (ConfigError, TypeError):
        return 0


def run_workers(space, serials):
    """Start one worker per serial (adb) or per --workers (host), follow them, merge their shards."""
    from proxyless_tf.latency import keys as keys_lib
    from proxyless_tf.latency import shards

    count = len(serials) if serials else WORKERS.value
    out = OUT.value
    total = len(keys_lib.required_keys(space, NUM_CLASSES.value))
    paths = [shards.shard_path(out, i, count) for i in range(count)]
    logs = [os.path.splitext(p)[0] + ".log" for p in paths]
    procs = []
    for i, (path, log_path) in enumerate(zip(paths, logs)):
        with open(log_path, "w") as log:
            cmd = _worker_argv(i, count, path, serials[i] if serials else None)
            procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log_path))
    who = f"{count} phones ({', '.join(serials)})" if serials else f"{count} host processes"
    print(f"latency table {out}: {total} keys measured by {who}; logs {', '.join(logs)}", flush=True)
    bar = None
    if PROGRESS.value:
        import keras

        bar = keras.utils.Progbar(total, unit_name="block")
    try:
        while any(p.poll() is None for p, _ in procs):
            if bar is not None:
                bar.update(sum(_measured(p) for p in paths))
            time.sleep(2.0)
    finally:  # Ctrl-C or a kill of this process: no worker left measuring behind it
        for p, _ in procs:
            if p.poll() is None:
                p.terminate()
                p.wait()
    if bar is not None:
        bar.update(sum(_measured(p) for p in paths), finalize=True)
    failed = [(i, p.returncode, log) for i, (p, log) in enumerate(procs) if p.returncode]
    if failed:
        i, code, log = failed[0]
        with open(log, errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
        why = next((line[len("error: "):] for line in reversed(lines) if line.startswith("error: ")),
                   lines[-1] if lines else f"exit {code}")
        name = f"worker {i}" + (f" (serial {serials[i]})" if serials else "")
        raise ConfigError(log, f"{name}", f"failed: {why}", "fix that and rerun the same command: every "
                          "shard resumes where it stopped")
    return shards.merge(space, NUM_CLASSES.value, paths, out)


def main(argv):
    if len(argv) > 1:
        raise ConfigError("<command line>", "args", f"unexpected arguments {argv[1:]}", "pass only --flags")
    if not SPACE.value:
        raise ConfigError("<flags>", "--space", "missing", "pass --space=configs/spaces/NAME.json")
    if not OUT.value:
        raise ConfigError("<flags>", "--out", "missing", "pass --out=PATH.json")
    space_lib.check_num_classes(NUM_CLASSES.value)
    files_lib.check_output_path(OUT.value)
    space = space_lib.SearchSpace.from_json(SPACE.value)
    serials = _serials()
    shard = None
    if SHARD.value is not None:
        from proxyless_tf.latency.shards import parse_shard

        shard = parse_shard(SHARD.value)
    if not 1 <= WORKERS.value <= MAX_WORKERS:
        raise ConfigError("<flags>", "--workers", f"must be from 1 to {MAX_WORKERS}, got {WORKERS.value}",
                          f"pass at most one per --threads cores of this machine ({os.cpu_count()} cores)")
    if latency_flags.BACKEND.value == "adb" and WORKERS.value > 1:
        raise ConfigError("<flags>", "--workers", "adb measures on phones, one worker per phone",
                          "pass their serials instead: --serial=SERIAL_A,SERIAL_B")
    if serials and latency_flags.BACKEND.value != "adb":
        raise ConfigError("<flags>", "--serial", f"applies to --backend=adb, not {latency_flags.BACKEND.value}",
                          "drop --serial, or use --workers=N for host processes")
    parallel = len(serials) > 1 or WORKERS.value > 1
    if parallel and shard is not None:
        raise ConfigError("<flags>", "--shard", "a shard is measured by one worker",
                          "drop --shard (the tool deals the shards out) or --workers / the --serial list")
    existing = None
    if RESUME.value and os.path.exists(OUT.value):  # a broken or foreign table fails before TensorFlow loads
        from proxyless_tf.latency.table import LatencyTable

        existing, fix = LatencyTable.load(OUT.value), f"delete {OUT.value} or pass another --out"
        if existing.space_fingerprint != space.fingerprint():
            raise ConfigError(OUT.value, "space.fingerprint", f"existing table is for space "
                              f"{existing.space_name!r}, not {space.name!r}", fix)
        if existing.num_classes != NUM_CLASSES.value:
            raise ConfigError(OUT.value, "num_classes", f"existing table's head is for {existing.num_classes} "
                              f"classes, not {NUM_CLASSES.value}", fix)
    if parallel:
        return _parallel(space, serials, existing)
    backend = latency_flags.make_backend_from_flags()
    if existing is not None and hasattr(backend, "statistic"):
        # new tables read the backend's default statistic (p5 with the cpu/wall clocks, median with
        # clock=ref); a table being resumed keeps the one it was started with
        backend.statistic = existing.statistic
    from proxyless_tf.latency.builder import build_table

    table = build_table(space, backend, OUT.value, NUM_CLASSES.value, progress=PROGRESS.value,
                        resume=RESUME.value, shard=shard)
    if shard is not None:
        print(f"wrote {OUT.value}: shard {SHARD.value}, {len(table)} entries")
        return
    _report(table, space)


def _parallel(space, serials, existing):
    """Several workers; `existing`: the table already at --out (checked for space and classes), or None."""
    from proxyless_tf.latency import keys as keys_lib

    if existing is not None:
        if "workers" not in existing.device:
            raise ConfigError(OUT.value, "device.workers", "is a table of one worker, not merged shards",
                              f"delete {OUT.value}, or finish it with the single-worker command that started it")
        if all(k in existing.entries for k in keys_lib.required_keys(space, NUM_CLASSES.value)):
            print(f"{OUT.value} is complete ({len(existing)} entries); --noresume measures it again")
            return _report(existing, space)
    _report(run_workers(space, serials), space)


def _report(table, space):
    lo, hi = table.latency_range(space)
    workers = table.device.get("workers")
    print(f"wrote {OUT.value}: {len(table)} entries" + (f" from {len(workers)} workers" if workers else "")
          + f"; predicted range {lo:.3f}-{hi:.3f} ms "
          f"({'calibrated' if table.calibration else 'raw block sums'})")
    from proxyless_tf import messages

    print("next: search for a network at a latency in that range (plus the dataset and training flags, "
          "e.g. those of configs/quickstart.flags):")
    print("  " + messages.command("python", "-m", "proxyless_tf.search", f"--space={messages.shown_path(SPACE.value)}",
                                 f"--latency_table={messages.shown_path(OUT.value)}",
                                 f"--target_ms={lo + 0.3 * (hi - lo):.3g}"))


if __name__ == "__main__":
    cli.run(main)
