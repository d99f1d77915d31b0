"""Building one latency table with 1 worker and with N host workers: wall time ratio and agreement.

    python tools/bench_table_workers.py --space=configs/spaces/fashion_mnist.json --workers=2 \
        --out_dir=runs/bench_table_workers

Both builds run `tools/build_latency_table.py` as a user would (LiteRT, 1 thread, clock=ref,
the same timing settings), one after the other, each into a fresh file. Printed: the wall
time of each build and their ratio, and how far the N-worker table's entries are from the
1-worker table's (median and worst relative difference of the stored statistic, and of
the predicted latency of a few random architectures), so the speed-up is read together
with what it costs in agreement. On a shared machine the workers load each other; the
interleaved reference (clock=ref) is what keeps their ratios comparable, and this run is
the check that it does.
"""

import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402
from proxyless_tf import files as files_lib

from proxyless_tf import cli  # noqa: E402
from proxyless_tf.errors import ConfigError  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS
flags.DEFINE_string("space", os.path.join(ROOT, "configs", "spaces", "fashion_mnist.json"), "Search space JSON.")
flags.DEFINE_integer("num_classes", 10, "Classifier width of the head entry.")
flags.DEFINE_integer("workers", 2, "Host processes of the parallel build.")
flags.DEFINE_integer("num_runs", 50, "Timed runs per block (both builds).")
flags.DEFINE_integer("warmup_runs", 10, "Untimed runs per block (both builds).")
flags.DEFINE_integer("archs", 20, "Random architectures whose predictions are compared.")
flags.DEFINE_string("out_dir", "runs/bench_table_workers", "Where both tables and their logs go.")
flags.DEFINE_string("json_out", None, "Also write the results here.")


def build(out, workers):
    cmd = [sys.executable, os.path.join(ROOT, "tools", "build_latency_table.py"), f"--space={FLAGS.space}",
           f"--out={out}", f"--num_classes={FLAGS.num_classes}", "--backend=litert", "--threads=1", "--clock=ref",
           f"--num_runs={FLAGS.num_runs}", f"--warmup_runs={FLAGS.warmup_runs}", "--noresume", "--noprogress",
           f"--workers={workers}"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ConfigError(out, f"build with {workers} worker(s)", f"failed: {last}", "run that command alone")
    return wall


def main(argv):
    if len(argv) > 1:
        raise ConfigError("<command line>", "arguments", f"unexpected arguments {argv[1:]}", "pass only --flags")
    if FLAGS.workers < 2:
        raise ConfigError("<flags>", "--workers", f"must be at least 2, got {FLAGS.workers}", "pass e.g. 2")
    import numpy as np

    from proxyless_tf import space as space_lib
    from proxyless_tf.latency.table import LatencyTable

    space = space_lib.SearchSpace.from_json(FLAGS.space)
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    paths = {n: os.path.join(FLAGS.out_dir, f"table_{n}w.json") for n in (1, FLAGS.workers)}
    wall = {}
    for n, path in paths.items():
        print(f"building with {n} worker(s): {path}", flush=True)
        wall[n] = build(path, n)
        print(f"  {wall[n]:.1f} s", flush=True)
    one, many = LatencyTable.load(paths[1]), LatencyTable.load(paths[FLAGS.workers])
    stat = one.statistic
    archs = [space.sample(seed) for seed in range(FLAGS.archs)]
    level = many.device["reference_ms"] / one.device["reference_ms"]  # many / one, ms per unit ratio

    def summary(x):
        return {"median_abs": float(np.median(np.abs(x))), "max_abs": float(np.max(np.abs(x))),
                "mean": float(np.mean(x))}

    res = {"workers": FLAGS.workers, "wall_s": {str(n): w for n, w in wall.items()},
           "speedup": wall[1] / wall[FLAGS.workers], "statistic": stat,
           "reference_ms": {"1": one.device["reference_ms"],
                            str(FLAGS.workers): [w.get("reference_ms") for w in many.device["workers"]]}}
    print(f"\n{len(one.entries)} entries; wall time 1 worker {wall[1]:.1f} s, {FLAGS.workers} workers "
          f"{wall[FLAGS.workers]:.1f} s: speed-up {res['speedup']:.2f}x")
    print(f"reference_ms: 1 worker {one.device['reference_ms']:.4f}, {FLAGS.workers} workers "
          + ", ".join(f"{r:.4f}" for r in res["reference_ms"][str(FLAGS.workers)]) + " (the merged table's is "
          f"worker 0's: level {FLAGS.workers} workers / 1 = {level:.3f})")
    for scale, div in (("ms", 1.0), ("ratio", level)):
        rel = np.array([getattr(many.entries[k], stat) / getattr(one.entries[k], stat) / div - 1
                        for k in one.entries])
        sums = np.array([many.raw_sum(a, FLAGS.num_classes) / one.raw_sum(a, FLAGS.num_classes) / div - 1
                         for a in archs])
        res[f"entry_rel_diff_{scale}"], res[f"arch_sum_rel_diff_{scale}"] = summary(rel), summary(sums)
        e, s = res[f"entry_rel_diff_{scale}"], res[f"arch_sum_rel_diff_{scale}"]
        print(f"{scale:5s} scale, {FLAGS.workers} workers vs 1: entries ({stat}) median |diff| "
              f"{e['median_abs'] * 100:.1f} %, worst {e['max_abs'] * 100:.1f} %, mean {e['mean'] * 100:+.1f} %; "
              f"block sums of {FLAGS.archs} random archs median |diff| {s['median_abs'] * 100:.1f} %, "
              f"worst {s['max_abs'] * 100:.1f} %, mean {s['mean'] * 100:+.1f} %")
    res["entries"] = len(one.entries)
    if FLAGS.json_out:
        files_lib.write_json_atomic(FLAGS.json_out, res)


if __name__ == "__main__":
    cli.run(main)
