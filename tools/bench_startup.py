"""Start-up cost of the search against a plain training of the space's largest network, in one run.

    flock /tmp/proxyless_bench.lock python tools/bench_startup.py [--only=qs_search,qs_plain]
        [--code_root=/path/to/another/checkout] [--json_out=after.json --compare=before.json]

Configurations (each in its own subprocess, one run each):
  qs_search      the quickstart's supernet (configs/spaces/fashion_mnist.json, nested weight
                 sharing, mode two, add#abs, arch step every 2nd step, SGD with a cosine schedule
                 and weight decay, cpu_kernels as the search applies them), batch --search_batch
  qs_plain       `proxyless_tf.train`'s recipe (SGD warm-up + cosine, label smoothing, dropout,
                 cpu_kernels) on that space's largest network (every layer mb_k7_e6), batch
                 --plain_batch (the retraining's)
  mob_nested     the paper's 21-layer mobile space (proxyless_mobile.json) at proxy resolution 32,
                 1000 classes, nested weight sharing, batch --mobile_batch
  mob_indep      the same with independent candidates (the paper's supernet)
  mob_plain      the recipe on the mobile space's largest network at resolution 32, batch --mobile_batch

Each child times `fit` from its start to the end of the first step (Python tracing, grappler,
instantiating the function and running it once), then the mean time of the following
--steps steps (the steady state: half of them with an architecture step, arch_every=2), and
reports the process's peak RSS (`getrusage`, everything: TensorFlow, the model, the traced
graph, the steps). The latency table is synthetic (the same graph as a real one: its
numbers are constants of the step). The data are random arrays in tf.data, so no dataset
is read; the retraining's real run also holds its dataset in memory (Fashion-MNIST:
~190 MiB), which these peaks leave out on both sides.

`--profile` splits each search's first step instead: Python tracing of the train step
(`get_concrete_function`, without autograph, as `fit` traces it), then its first call with grappler on (optimisation, instantiation
and one run), and the graph's node count. `--code_root` runs the children on another
checkout's `proxyless_tf` (the "before" of a change); `--compare` prints after/before ratios
against a previous run's `--json_out`. `--bench_search` also re-measures the listed
`tools/bench_search.py` rows (steady-state step time and memory per step kind) with the
same checkout. Ratios are what to read; absolute seconds depend on the machine and its load.
"""

import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# a child imports the package of the checkout it measures (--code_root), the parent this one's
sys.path.insert(0, os.environ.get("BENCH_STARTUP_ROOT", ROOT))

from absl import flags  # noqa: E402

from proxyless_tf import cli  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("only", None, "Configurations to run (default: all): qs_search, qs_plain, mob_nested, mob_indep, "
                  "mob_plain.")
flags.DEFINE_integer("search_batch", 64, "Batch of the quickstart search (quickstart.flags: 64).")
flags.DEFINE_integer("plain_batch", 128, "Batch of the quickstart's plain training (train_fashion_mnist.flags: 128).")
flags.DEFINE_integer("mobile_batch", 64, "Batch of the mobile-space configurations (search and plain).")
flags.DEFINE_integer("steps", 10, "Steady-state steps timed after the first.")
flags.DEFINE_boolean("profile", False, "Split the search configurations' first step (trace / first call) instead.")
flags.DEFINE_string("code_root", ROOT, "Checkout whose proxyless_tf the children import.")
flags.DEFINE_string("json_out", None, "Also write the results here.")
flags.DEFINE_string("compare", None, "A previous run's --json_out: print this run's ratios to it.")
flags.DEFINE_list("bench_search", [], "tools/bench_search.py rows to re-measure too (e.g. plain@7,weight@7,two@7).")
flags.DEFINE_string("child", None, "Internal: run one configuration (JSON) and print its numbers.")

SPACES = {"qs": ("fashion_mnist.json", None, 10), "mob": ("proxyless_mobile.json", 32, 1000)}
CONFIGS = {
    "qs_search": {"space": "qs", "kind": "search", "sharing": "nested"},
    "qs_plain": {"space": "qs", "kind": "plain"},
    "mob_nested": {"space": "mob", "kind": "search", "sharing": "nested"},
    "mob_indep": {"space": "mob", "kind": "search", "sharing": "independent"},
    "mob_plain": {"space": "mob", "kind": "plain"},
}
PLAIN_OF = {"qs_search": "qs_plain", "mob_nested": "mob_plain", "mob_indep": "mob_plain"}


def _space(cfg):
    from proxyless_tf.space import SearchSpace

    name, resolution, classes = SPACES[cfg["space"]]
    with open(os.path.join(ROOT, "configs", "spaces", name)) as f:
        d = json.load(f)
    if resolution:
        d["input_shape"] = [resolution, resolution, d["input_shape"][2]]
    return SearchSpace.from_dict(d), classes


def _synthetic_table(space, num_classes):
    """Every key of the space at a made-up, monotone latency (the step's graph is that of a real table)."""
    from proxyless_tf.latency import keys as keys_lib
    from proxyless_tf.latency.table import LatencyStats, LatencyTable

    def ms(key):
        p = keys_lib.parse_key(key)
        if p["kind"] != "block":
            return 1.0
        k, e = (float(v) for v in p["op"][4:].split("_e"))
        return 0.1 * k * e / 9.0

    entries = {k: LatencyStats(ms(k), ms(k), ms(k), 10) for k in keys_lib.required_keys(space, num_classes)}
    return LatencyTable({"backend": "synthetic"}, entries, num_classes, space.name, space.fingerprint())


def _search_model(space, classes, cfg, steps):
    import keras

    from proxyless_tf.layers import cpu_kernels
    from proxyless_tf.search.supernet import SuperNet

    table = _synthetic_table(space, classes)
    lo, hi = table.latency_range(space, classes)
    net = SuperNet(space, classes, table, mode="two", seed=0, weight_sharing=cfg["sharing"])
    cpu_kernels.accelerate(net)  # as the search does by default (--cpu_kernels)
    schedule = keras.optimizers.schedules.CosineDecay(0.05, decay_steps=steps)
    net.compile(weight_optimizer=keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True, weight_decay=4e-5),
                arch_optimizer=keras.optimizers.Adam(0.03, beta_1=0.0, beta_2=0.999),
                latency_loss="add#abs", target_ms=lo + 0.3 * (hi - lo), loss_params={"lambda": 3.0},
                arch_every=2, warmup_epochs=0)
    return net


def _plain_model(space, classes, steps):
    from proxyless_tf.layers import cpu_kernels
    from proxyless_tf.models import nets
    from proxyless_tf.space import Arch
    from proxyless_tf.training import recipe
    from proxyless_tf.training.config import TrainConfig

    model = nets.build_model(Arch(space, ["mb_k7_e6"] * space.num_layers), classes, dropout=0.1)
    cpu_kernels.accelerate(model)  # as proxyless_tf.train does (TrainConfig.cpu_kernels)
    rcfg = TrainConfig(epochs=1, batch_size=1, lr=0.1, warmup_epochs=0.5, weight_decay=4e-5,
                              label_smoothing=0.1, dropout=0.1)
    return recipe.compile_model(model, rcfg, steps)


def _data(space, classes, batch, search):
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    n = 4 * batch
    x = rng.standard_normal((n,) + tuple(space.input_shape)).astype(np.float32)
    y = rng.integers(0, classes, n).astype(np.int32)
    if search:
        train = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch, drop_remainder=True)
        valid = tf.data.Dataset.from_tensor_slices((x[::-1], y[::-1])).batch(batch, drop_remainder=True)
        ds = tf.data.Dataset.zip((train, valid))
    else:
        ds = tf.data.Dataset.from_tensor_slices((x, np.eye(classes, dtype=np.float32)[y])).batch(
            batch, drop_remainder=True)
    return ds.repeat().prefetch(2)


def _package():
    import proxyless_tf

    return os.path.dirname(os.path.dirname(os.path.abspath(proxyless_tf.__file__)))


def _peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def run_child(cfg):
    import keras

    space, classes = _space(cfg)
    steps = 1 + cfg["steps"]
    search = cfg["kind"] == "search"
    build_t = time.perf_counter()
    model = _search_model(space, classes, cfg, steps) if search else _plain_model(space, classes, steps)
    build_s = time.perf_counter() - build_t
    ds = _data(space, classes, cfg["batch"], search)
    built_mib = _peak_mib()
    if cfg.get("profile"):
        return profile_child(model, ds, build_s, built_mib)
    ends = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            ends.append(time.perf_counter())

    t0 = time.perf_counter()
    model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[Clock()])
    first = ends[0] - t0
    steady = (ends[-1] - ends[0]) / max(1, len(ends) - 1)
    print(json.dumps({"first_step_s": first, "steady_step_s": steady, "peak_mib": _peak_mib(),
                      "built_mib": built_mib, "build_s": build_s, "package": _package()}))


def profile_child(model, ds, build_s, built_mib):
    """Tracing, then the first call (grappler, instantiation, one run), then a second call."""
    import tensorflow as tf

    batch = next(iter(ds))
    fn = tf.function(model.train_step, autograph=False)  # as fit traces it (Keras' step is do_not_convert)
    t = time.perf_counter()
    concrete = fn.get_concrete_function(batch)
    trace_s = time.perf_counter() - t
    gd = concrete.graph.as_graph_def()
    nodes = len(gd.node) + sum(len(f.node_def) for f in gd.library.function)
    trace_mib = _peak_mib()
    t = time.perf_counter()
    concrete(batch)
    first_call_s = time.perf_counter() - t
    t = time.perf_counter()
    concrete(batch)
    second_call_s = time.perf_counter() - t
    print(json.dumps({"trace_s": trace_s, "first_call_s": first_call_s, "second_call_s": second_call_s,
                      "nodes": nodes, "functions": len(gd.library.function), "build_s": build_s,
                      "built_mib": built_mib, "trace_mib": trace_mib, "peak_mib": _peak_mib(), "package": _package()}))


def _run(name, cfg, env):
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), f"--child={json.dumps(cfg)}"],
                          env=env, capture_output=True, text=True)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if proc.returncode != 0 or not lines:
        print(f"{name}: failed\n{proc.stderr[-3000:]}", flush=True)
        return None
    return json.loads(lines[-1])


def main(argv):
    del argv
    if FLAGS.child:
        cfg = json.loads(FLAGS.child)
        if cfg.get("graph_optimizer") is False:
            import tensorflow as tf

            tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
        run_child(cfg)
        return
    root = os.path.abspath(os.path.expanduser(FLAGS.code_root))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=root, BENCH_STARTUP_ROOT=root)
    names = FLAGS.only or list(CONFIGS)
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        from proxyless_tf.errors import ConfigError

        raise ConfigError("--only", unknown[0], "unknown configuration", f"use some of {', '.join(CONFIGS)}")
    print(f"proxyless_tf from {root}", flush=True)
    results = {}
    for name in names:
        cfg = dict(CONFIGS[name], steps=FLAGS.steps, profile=FLAGS.profile)
        cfg["batch"] = {"qs_search": FLAGS.search_batch, "qs_plain": FLAGS.plain_batch}.get(name, FLAGS.mobile_batch)
        if FLAGS.profile and cfg["kind"] != "search":
            continue
        r = _run(name, cfg, env)
        if r is None:
            continue
        results[name] = r
        if r["package"] != root:
            print(f"{name}: measured {r['package']}, not {root}", flush=True)
        if FLAGS.profile:
            print(f"{name:11s} trace {r['trace_s']:7.1f} s  first call {r['first_call_s']:7.1f} s  "
                  f"second {r['second_call_s']:6.2f} s  nodes {r['nodes']:7d} in {r['functions']} functions  "
                  f"peak {r['peak_mib']:7.0f} MiB (built {r['built_mib']:.0f}, traced {r['trace_mib']:.0f})",
                  flush=True)
        else:
            print(f"{name:11s} first step {r['first_step_s']:7.1f} s  steady {r['steady_step_s'] * 1000:7.0f} ms/step  "
                  f"peak RSS {r['peak_mib']:7.0f} MiB (after building {r['built_mib']:.0f})", flush=True)
    if not FLAGS.profile:
        report(results)
    if FLAGS.compare:
        compare(results, FLAGS.compare)
    if FLAGS.bench_search:
        tool = os.path.join(root, "tools", "bench_search.py")
        print(f"\n{tool} --only={','.join(FLAGS.bench_search)}", flush=True)
        subprocess.run([sys.executable, tool, f"--only={','.join(FLAGS.bench_search)}", "--steps=3"], env=env)
    if FLAGS.json_out:
        from proxyless_tf.files import write_json_atomic

        write_json_atomic(FLAGS.json_out, {"code_root": root, "profile": FLAGS.profile, "results": results})


def report(r):
    print("\nsearch against the plain training of its space's largest network (goal: first step <= 3x, "
          "peak RSS <= 1.5x, steady step as before)")
    for search, plain in PLAIN_OF.items():
        if search in r and plain in r:
            s, p = r[search], r[plain]
            print(f"{search:11s} / {plain:9s}  first step {s['first_step_s'] / p['first_step_s']:6.2f}x   "
                  f"peak RSS {s['peak_mib'] / p['peak_mib']:5.2f}x   steady step {s['steady_step_s'] / p['steady_step_s']:5.2f}x")


def compare(r, path):
    from proxyless_tf.readers import read_json

    before = read_json(path)["results"]
    print(f"\nthis run / {path}")
    for name, now in r.items():
        if name in before:
            b = before[name]
            keys = [k for k in ("first_step_s", "trace_s", "first_call_s", "steady_step_s", "second_call_s",
                                "peak_mib", "nodes") if k in now and k in b and b[k]]
            print(f"{name:11s} " + "  ".join(f"{k} {now[k] / b[k]:5.2f}x" for k in keys))


if __name__ == "__main__":
    cli.run(main)
