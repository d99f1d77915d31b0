"""Peak memory and step time of the search steps against a plain training step, in one run.

    flock /tmp/proxyless_bench.lock python tools/bench_search.py [--batch=32 --resolution=56]

Configurations, all at the same batch and resolution:
  plain   a training step of the biggest single-path network (every layer mb_k7_e6)
  weight  the supernet weight step (one sampled path, only its weights updated)
  two     the binary-gate architecture step (two paths per layer, α only)
  full    a DARTS step (softmax-weighted sum of every op, all weights)
  full_v2 the official code's full_v2 architecture step (one path forward, every op's gate
          gradient; the other ops' outputs recomputed in the backward), α only
  reinforce  a Proxyless-R architecture step (one sampled path forward, no tape, α only)
  reinforce10  the same step with 10 architectures per update (the official rl_batch_size, the
          search's default): ten forwards in one tf.while_loop; memory should stay at reinforce's
  sandwich   the weight step with --sandwich=largest_smallest (the sampled path, the largest and
          the smallest network on the same batch), each fixed path traced as a plain network
  sandwich_switch  the same step with the fixed paths run through every layer's switch_case,
          as before they were traced as plain networks (MixedOp's fixed-index shortcut off)
at 7 candidates (6 MBConv + zero, the paper's set) and, for weight/two/full/full_v2, at 4 and 12
MBConv candidates (each set contains mb_k7_e6, so the biggest path is the same).

Each configuration runs in a fresh subprocess: build, trace and one warm-up step, then the
resident set is the baseline, the kernel's peak (VmHWM) is reset through
/proc/self/clear_refs, timed steps run, and peak − baseline is the step's memory. glibc's
mmap threshold is pinned so freed tensors go back to the OS and RSS tracks live memory.
Ratios are what to read; absolute numbers depend on the machine and its load.
"""

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402

from proxyless_tf import cli  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch", 32, "Batch size of every configuration.")
flags.DEFINE_integer("resolution", 56, "Input height/width.")
flags.DEFINE_integer("steps", 5, "Timed steps per configuration (median reported).")
flags.DEFINE_string("child", None, "Internal: run one configuration (JSON) and print its numbers.")
flags.DEFINE_string("only", None, "Comma-separated configuration names to run (default: all).")
flags.DEFINE_string("json_out", None, "Also write the results here.")

PAPER6 = ["mb_k3_e3", "mb_k3_e6", "mb_k5_e3", "mb_k5_e6", "mb_k7_e3", "mb_k7_e6"]
SETS = {
    4: ["mb_k3_e3", "mb_k3_e6", "mb_k5_e3", "mb_k7_e6"],
    8: PAPER6 + ["mb_k1_e2", "mb_k1_e3"],
    12: [f"mb_k{k}_e{e}" for k in (1, 3, 5, 7) for e in (2, 3, 6)],
}


def bench_space(candidates, allow_zero, resolution):
    from proxyless_tf.space import SearchSpace

    return SearchSpace.from_dict({
        "name": "bench", "input_shape": [resolution, resolution, 3],
        "stem": {"out_channels": 16, "kernel": 3, "stride": 2},
        "first_block": {"op": "mb_k3_e1", "out_channels": 16},
        "stages": [{"width": 24, "depth": 2, "stride": 2}, {"width": 40, "depth": 2, "stride": 2},
                   {"width": 80, "depth": 2, "stride": 2}],
        "head": {"out_channels": 256}, "candidates": candidates, "allow_zero": allow_zero})


def _status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0  # MiB
    raise RuntimeError(field)


def run_child(cfg):
    import numpy as np
    import tensorflow as tf
    import keras

    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    from proxyless_tf.models import nets
    from proxyless_tf.space import Arch
    from proxyless_tf.search.supernet import SuperNet

    space = bench_space(cfg["candidates"], cfg["allow_zero"], cfg["resolution"])
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((cfg["batch"],) + space.input_shape), tf.float32)
    y = tf.constant(rng.integers(0, 10, cfg["batch"]), tf.int32)
    kind = cfg["kind"]
    if kind == "plain":
        model = nets.build_model(Arch(space, ["mb_k7_e6"] * space.num_layers), 10)
        opt = keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True)
        opt.build(model.trainable_variables)

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                logits = model(x, training=True)
                loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
            opt.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
            return loss
    else:
        mode = "reinforce" if kind.startswith("reinforce") else kind if kind in ("full", "full_v2") else "two"
        if kind == "sandwich_switch":
            from proxyless_tf.layers.mixed_op import MixedOp

            run = MixedOp._run
            MixedOp._run = lambda self, index, x, training: run(
                self, tf.constant(index, tf.int32) if isinstance(index, int) else index, x, training)
        net = SuperNet(space, 10, None, mode=mode, seed=0,
                       sandwich="largest_smallest" if kind.startswith("sandwich") else "none")
        net.compile(keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True), latency_loss=None,
                    reinforce_samples=10 if kind == "reinforce10" else 1)
        fn = net.arch_step if kind in ("two", "full_v2", "reinforce", "reinforce10") else (lambda a, b: net.weight_step(a, b)[0])
        step = tf.function(lambda: fn(x, y))
    t0 = time.perf_counter()
    step()
    trace_s = time.perf_counter() - t0
    base = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak-RSS counter to the current RSS
    times = []
    for _ in range(cfg["steps"]):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    peak = _status("VmHWM")
    print(json.dumps({"mem_mib": peak - base, "step_s": float(np.median(times)), "trace_s": trace_s,
                      "base_mib": base}))


def configs():
    out = [("plain", 7, {"kind": "plain", "candidates": PAPER6, "allow_zero": True})]
    for kind in ("weight", "two", "full", "full_v2", "reinforce", "reinforce10", "sandwich", "sandwich_switch"):
        out.append((kind, 7, {"kind": kind, "candidates": PAPER6, "allow_zero": True}))
    for n in (4, 12):
        for kind in ("weight", "two", "full", "full_v2"):
            out.append((kind, n, {"kind": kind, "candidates": SETS[n], "allow_zero": False}))
    return out


def main(argv):
    del argv
    if FLAGS.child:
        run_child(json.loads(FLAGS.child))
        return
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    only = set(FLAGS.only.split(",")) if FLAGS.only else None
    results = {}
    for kind, n, cfg in configs():
        name = f"{kind}@{n}"
        if only and name not in only and kind not in only:
            continue
        cfg.update(batch=FLAGS.batch, resolution=FLAGS.resolution, steps=FLAGS.steps)
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), f"--child={json.dumps(cfg)}"],
                              env=env, capture_output=True, text=True)
        lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
        if proc.returncode != 0 or not lines:
            print(f"{name}: failed\n{proc.stderr[-2000:]}", flush=True)
            continue
        results[name] = json.loads(lines[-1])
        r = results[name]
        print(f"{name:10s} mem {r['mem_mib']:8.1f} MiB  step {r['step_s'] * 1000:8.1f} ms  "
              f"(trace+first step {r['trace_s']:.0f} s)", flush=True)
    report(results)
    if FLAGS.json_out:
        from proxyless_tf.files import write_json_atomic

        write_json_atomic(FLAGS.json_out, results)


def report(r):
    def ratio(a, b, key):
        return r[a][key] / r[b][key] if a in r and b in r and r[b][key] > 0 else float("nan")

    print(f"\nbatch {FLAGS.batch}, resolution {FLAGS.resolution}: ratios to the plain step of the biggest path")
    print(f"{'step':12s} {'memory':>8s} {'time':>8s}   target")
    targets = {"weight@7": "<=1.2x mem and time", "two@7": "<=2.2x mem", "full@7": ">=3x mem",
               "full_v2@7": "mem near two, time higher", "reinforce@7": "-",
               "reinforce10@7": "mem near reinforce"}
    for name in ("weight@7", "two@7", "full@7", "full_v2@7", "reinforce@7", "reinforce10@7"):
        print(f"{name:12s} {ratio(name, 'plain@7', 'mem_mib'):7.2f}x {ratio(name, 'plain@7', 'step_s'):7.2f}x   "
              f"{targets[name]}")
    print("sandwich weight step (largest_smallest) against the single-path weight step; fixed paths as plain "
          "networks vs through switch_case:")
    for name in ("sandwich@7", "sandwich_switch@7"):
        print(f"{name:18s} mem {ratio(name, 'weight@7', 'mem_mib'):5.2f}x  time {ratio(name, 'weight@7', 'step_s'):5.2f}x  "
              f"trace+first step {ratio(name, 'weight@7', 'trace_s'):5.2f}x")
    print(f"plain fixed paths / switch_case: trace+first step {ratio('sandwich@7', 'sandwich_switch@7', 'trace_s'):.2f}x, "
          f"step {ratio('sandwich@7', 'sandwich_switch@7', 'step_s'):.2f}x, "
          f"mem {ratio('sandwich@7', 'sandwich_switch@7', 'mem_mib'):.2f}x, "
          f"RSS after tracing (the graph) {ratio('sandwich@7', 'sandwich_switch@7', 'base_mib'):.2f}x")
    print("growth 4 -> 12 candidates (memory): target two/single <= 1.15x, full >= 2x")
    for kind in ("weight", "two", "full", "full_v2"):
        print(f"{kind:12s} {ratio(f'{kind}@12', f'{kind}@4', 'mem_mib'):7.2f}x  "
              f"(time {ratio(f'{kind}@12', f'{kind}@4', 'step_s'):.2f}x)")


if __name__ == "__main__":
    cli.run(main)
