"""Specialization: the same search on two devices' latency tables gives two different networks.

ProxylessNAS's claim is that a network searched for one device is not the best network for
another. This tool checks it on two tables of the paper's mobile space (224x224x3, 21
searchable layers): this machine's LiteRT table at 1 thread
(configs/latency/proxyless_mobile_litert1.json) and the official Pixel 1 table
(../shared/data/proxylessnas/mobile_trim.yaml, imported here with
proxyless_tf.latency.official, never committed).

    python research/tools/experiment_specialization.py --out_dir=runs/specialization \
        --results_json=research/specialization.json --plot=research/specialization.png

Why it is built this way:

* A supernet search at 224x224 costs far too much on this 2-core machine, so both searches
  run the network at a proxy resolution (--resolution, default 32: the space's five
  stride-2 steps leave 1x1 at the end) on Fashion-MNIST, while the latency term is looked
  up at the deployment resolution (`--latency_resolution=224` of proxyless_tf.search): the
  ops are the same, only the table keys differ. Both tables' head entries were measured for
  1000 classes; the head is a constant of every architecture, so it is priced as measured
  (`--latency_num_classes=1000`) and moves no choice.
* Both searches are equally constrained: each device's target is the same relative
  position (--target_frac) in that device's own reachable range.
* Both searches use the same loss, add#linear: the LiteRT table's calibration reaches
  below 1 ms at the fast end of the space, where mul#log's log-ratio is undefined.
* Everything but the table is identical (data, seed, budget), so differences between the
  two architectures come from the tables (and the sampling noise of a short search, which
  this tool does not separate out; the report says so).

Outputs: the two run directories, a JSON of the numbers (--results_json) and a PNG
(--plot): each architecture's predicted latency on both tables relative to each target,
and the per-layer op choices side by side. --measure adds a LiteRT measurement of both
networks at 224x224 on this machine (clock=ref, ratio to an interleaved reference);
--cross_eval evaluates both architectures in both trained supernets (same weights, so the
accuracy comparison is not between two different supernets).

"Better on its own device" (the criterion this tool applies and reports): on device D's
table, the architecture searched for D is feasible (predicted <= T_D x (1 + tolerance),
the search's own derivation tolerance) and either the other architecture is not feasible
on D, or it is feasible and not more accurate than D's (accuracy: the mean over the
evaluated supernets of the validation accuracy, a difference below --acc_margin points
counting as equal, then the faster one on D wins).
"""

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from absl import flags  # noqa: E402
from proxyless_tf import files as files_lib

from proxyless_tf import cli  # noqa: E402
from proxyless_tf.errors import ConfigError  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FLAGS = flags.FLAGS
flags.DEFINE_string("out_dir", "runs/specialization", "Run directories, logs and the imported Pixel 1 table.")
flags.DEFINE_string("space", os.path.join(ROOT, "configs", "spaces", "proxyless_mobile.json"), "Search space JSON.")
flags.DEFINE_string("litert_table", os.path.join(ROOT, "configs", "latency", "proxyless_mobile_litert1.json"),
                    "This machine's LiteRT 1-thread table of the space.")
flags.DEFINE_string("pixel_yaml", os.path.join(os.path.dirname(ROOT), "shared", "data", "proxylessnas",
                                               "mobile_trim.yaml"), "Official Pixel 1 table (mobile_trim.yaml).")
flags.DEFINE_integer("resolution", 32, "Proxy input size the supernets run at.")
flags.DEFINE_integer("latency_resolution", 224, "Deployment input size the latency term is priced at.")
flags.DEFINE_integer("latency_num_classes", 1000, "Classifier width of both tables' head entries.")
flags.DEFINE_float("target_frac", 0.4, "Each device's target: this position in its own reachable range.")
flags.DEFINE_string("latency_loss", "add#linear", "Latency loss of both searches.")
flags.DEFINE_float("loss_lambda", 0.1, "add#linear / add#abs / add#hinge lambda.")
flags.DEFINE_integer("max_train", 4000, "Training images (Fashion-MNIST) of each search.")
flags.DEFINE_integer("valid_size", 1000, "Validation images carved from train (arch step and accuracy).")
flags.DEFINE_integer("epochs", 3, "Search epochs (warm-up included).")
flags.DEFINE_integer("warmup_epochs", 1, "Weight-only epochs first.")
flags.DEFINE_integer("steps_per_epoch", None, "Steps per epoch (default: one pass over max_train).")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_float("arch_lr", 1e-2, "Adam lr of alpha (the paper's 1e-3 barely moves alpha in a few hundred steps).")
flags.DEFINE_float("derive_tolerance", 0.1, "Latency-aware derivation tolerance (also the feasibility margin).")
flags.DEFINE_enum("derive_mode", "band", ["band", "ceiling"], "--derive_mode of both searches: band fits each "
                  "network into its target +- tolerance from both sides, ceiling only brings down one over budget.")
flags.DEFINE_integer("seed", 0, "Seed of both searches.")
flags.DEFINE_boolean("run_eagerly", False, "Searches run eagerly (--run_eagerly of the search): only worth it "
                     "for a few dozen steps (tracing the 21-layer supernet takes ~9 min and ~6 GB here).")
flags.DEFINE_enum("weight_sharing", "nested", ["independent", "nested"],
                  "Supernet weights (--weight_sharing of the search): independent candidates barely learn in a "
                  "few hundred steps, so their accuracies say nothing about the two architectures.")
flags.DEFINE_integer("arch_every", 1, "An architecture step every this many weight steps.")
flags.DEFINE_float("weight_lr", 0.025, "Weight SGD learning rate of both searches.")
flags.DEFINE_integer("recalibration_steps", 20, "BN-recalibration batches before each accuracy evaluation.")
flags.DEFINE_boolean("parallel", False, "Run the two searches at the same time (two cores).")
flags.DEFINE_boolean("reuse", True, "Reuse a run directory that already has result.json.")
flags.DEFINE_boolean("cross_eval", True, "Evaluate both archs in both trained supernets.")
flags.DEFINE_boolean("measure", False, "Measure both networks at 224 with LiteRT (1 thread, clock=ref).")
flags.DEFINE_integer("measure_rounds", 5, "Interleaved measurement rounds per network (--measure).")
flags.DEFINE_float("acc_margin", 1.0, "Accuracy differences below this (points) count as equal.")
flags.DEFINE_string("results_json", "research/specialization.json", "Where the numbers go.")
flags.DEFINE_string("plot", "research/specialization.png", "Where the PNG goes.")
flags.DEFINE_string("results_tag", "", "Tag of this run's section in --results_md ('## Specialization [TAG]'), "
                    "so runs with other settings keep their own sections.")
flags.DEFINE_string("results_md", "research/RESULTS.md", "Markdown file whose '## Specialization' section is (re)written "
                    "from the numbers (other sections are kept); empty: none.")

DEVICES = ("pixel1", "litert1")
LABEL = {"pixel1": "Pixel 1 (official LUT)", "litert1": "this machine, LiteRT 1 thread"}


def search_command(device, table, out):
    return [sys.executable, "-m", "proxyless_tf.search", f"--space={FLAGS.space}", f"--latency_table={table}",
            f"--resolution={FLAGS.resolution}", f"--latency_resolution={FLAGS.latency_resolution}",
            f"--latency_num_classes={FLAGS.latency_num_classes}", f"--target_frac={FLAGS.target_frac}",
            f"--latency_loss={FLAGS.latency_loss}", f"--loss_lambda={FLAGS.loss_lambda}",
            f"--max_train={FLAGS.max_train}", f"--valid_size={FLAGS.valid_size}", f"--epochs={FLAGS.epochs}",
            f"--warmup_epochs={FLAGS.warmup_epochs}", f"--batch_size={FLAGS.batch_size}",
            f"--arch_lr={FLAGS.arch_lr}", f"--arch_every={FLAGS.arch_every}", f"--weight_lr={FLAGS.weight_lr}",
            f"--weight_sharing={FLAGS.weight_sharing}", f"--bn_recalibration_steps={FLAGS.recalibration_steps}",
            f"--derive_tolerance={FLAGS.derive_tolerance}", f"--derive_mode={FLAGS.derive_mode}",
            f"--seed={FLAGS.seed}",
            f"--out_dir={out}", "--verbose=2", f"--run_eagerly={str(FLAGS.run_eagerly).lower()}"] + (
                [f"--steps_per_epoch={FLAGS.steps_per_epoch}"] if FLAGS.steps_per_epoch else [])


def run_searches(tables):
    """Both searches as subprocesses (sequential unless --parallel); returns {device: result dict}."""
    procs, results = {}, {}
    for dev in DEVICES:
        out = os.path.join(FLAGS.out_dir, f"search_{dev}")
        if FLAGS.reuse and os.path.exists(os.path.join(out, "result.json")):
            print(f"{dev}: reusing {out}/result.json", flush=True)
            continue
        cmd = search_command(dev, tables[dev], out)
        log = open(os.path.join(FLAGS.out_dir, f"search_{dev}.log"), "w")
        print(f"{dev}: {' '.join(cmd[1:])}  (log {log.name})", flush=True)
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        procs[dev] = (p, log, time.time())
        if not FLAGS.parallel:
            _wait(dev, *procs.pop(dev))
    for dev, (p, log, t0) in procs.items():
        _wait(dev, p, log, t0)
    for dev in DEVICES:
        with open(os.path.join(FLAGS.out_dir, f"search_{dev}", "result.json")) as f:
            results[dev] = json.load(f)
    return results


def _wait(dev, p, log, t0):
    rc = p.wait()
    log.close()
    if rc:
        raise ConfigError(log.name, "search", f"the {dev} search exited with {rc}", "read its log")
    print(f"{dev}: search done in {(time.time() - t0) / 60:.1f} min", flush=True)


def layer_diff(space, ops_a, ops_b):
    """Per stage: differing layers, and how (kernel, expansion, zero vs block)."""
    from proxyless_tf import space as space_lib

    rows, stages = [], {}
    for layer, a, b in zip(space.layers, ops_a, ops_b):
        st = stages.setdefault(layer.stage, {"layers": 0, "differ": 0, "zero": [0, 0], "kernel_sum": [0, 0],
                                             "expand_sum": [0, 0], "blocks": [0, 0]})
        st["layers"] += 1
        how = []
        if a != b:
            st["differ"] += 1
            if space_lib.ZERO in (a, b):
                how.append("zero vs block")
            else:
                pa, pb = space_lib.parse_op(a), space_lib.parse_op(b)
                if pa.kernel != pb.kernel:
                    how.append("kernel")
                if pa.expand != pb.expand:
                    how.append("expansion")
        for i, op in enumerate((a, b)):
            if op == space_lib.ZERO:
                st["zero"][i] += 1
            else:
                p = space_lib.parse_op(op)
                st["blocks"][i] += 1
                st["kernel_sum"][i] += p.kernel
                st["expand_sum"][i] += p.expand
        rows.append({"layer": layer.index, "stage": layer.stage, "in_hw": list(layer.in_hw), "ops": [a, b],
                     "differ": a != b, "how": how})
    kinds = {"kernel": 0, "expansion": 0, "zero vs block": 0}
    for r in rows:
        for h in r["how"]:
            kinds[h] += 1
    return {"layers": rows, "stages": stages, "num_differ": sum(r["differ"] for r in rows), "kinds": kinds}


def cross_evaluate(space, ops_by_dev, results):
    """{supernet device: {arch device: accuracy}}: both archs with each trained supernet's weights."""
    import keras

    from proxyless_tf.data import datasets as data_lib
    from proxyless_tf import space as space_lib
    from proxyless_tf.search.supernet import SuperNet

    import tensorflow as tf

    # eager: each evaluation runs one path through ~20 batches; tracing the supernet's graph for
    # every (supernet, arch) pair would cost minutes of CPU each on this machine
    tf.config.run_functions_eagerly(True)
    keras.utils.set_random_seed(FLAGS.seed)
    data = data_lib.search_data("fashion_mnist", space.input_shape, FLAGS.batch_size, FLAGS.valid_size, None,
                                FLAGS.seed, None, None, FLAGS.max_train,
                                label_cache_dir=os.path.join(os.path.expanduser("~"), ".cache", "proxyless_tf"))
    out = {}
    for net_dev in DEVICES:
        net = SuperNet(space, data.num_classes, None, seed=FLAGS.seed, weight_sharing=FLAGS.weight_sharing)
        ckpt = os.path.join(FLAGS.out_dir, f"search_{net_dev}", "checkpoints", "last.weights.h5")
        # the optimizers as the search built them, so the checkpoint's optimizer variables match
        net.compile(weight_optimizer=keras.optimizers.SGD(keras.optimizers.schedules.CosineDecay(0.025, 1),
                                                          momentum=0.9, nesterov=True, weight_decay=4e-5),
                    arch_optimizer=keras.optimizers.Adam(FLAGS.arch_lr, beta_1=0.0, beta_2=0.999),
                    latency_loss=None)
        net.load_weights(ckpt)
        out[net_dev] = {}
        for arch_dev in DEVICES:
            arch = space_lib.Arch(space, ops_by_dev[arch_dev])
            keras.utils.set_random_seed(FLAGS.seed)  # the same BN-recalibration batches for every pair
            acc = net.evaluate_argmax(data.valid, data.search, FLAGS.recalibration_steps, arch=arch)
            out[net_dev][arch_dev] = acc
            print(f"supernet {net_dev}, arch {arch_dev}: valid acc {acc * 100:.2f}%", flush=True)
    return out


def measure_litert(archs):
    """{device: median ms} of both networks at 224, 1000 classes: LiteRT 1 thread, clock=ref, interleaved."""
    import numpy as np

    from proxyless_tf.models import nets
    from proxyless_tf.latency import backends

    backend = backends.make_backend("litert", threads=1, clock="ref")
    interps = {dev: backend.interpreter(nets.build_model(a, FLAGS.latency_num_classes))[0]
               for dev, a in archs.items()}
    samples = {dev: [] for dev in archs}
    for _ in range(FLAGS.measure_rounds):
        for dev, interp in interps.items():
            samples[dev].append(backend.measure_interpreter(interp).median)
    return {dev: {"median_ms": float(np.median(s)), "rounds_ms": s, "reference_ms": backend.reference_ms}
            for dev, s in samples.items()}


def verdicts(pred, targets, acc, tol, margin):
    """Per device D: does the arch searched for D win on D's table (criterion in the module doc)?"""
    out = {}
    for d in DEVICES:
        o = [x for x in DEVICES if x != d][0]
        limit = targets[d] * (1 + tol)
        own_ok, other_ok = pred[d][d] <= limit, pred[d][o] <= limit
        if not own_ok:
            holds, why = False, f"its own arch misses the target ({pred[d][d]:.2f} > {limit:.2f} ms)"
        elif not other_ok:
            holds, why = True, (f"own arch {pred[d][d]:.2f} ms fits, the other arch {pred[d][o]:.2f} ms exceeds "
                                f"T x (1 + tol) = {limit:.2f} ms")
        else:
            da = (acc[d] - acc[o]) * 100
            if da >= margin:
                holds, why = True, f"both fit; own arch more accurate by {da:.2f} points"
            elif da <= -margin:
                holds, why = False, f"both fit; the other arch is more accurate by {-da:.2f} points"
            else:
                holds = pred[d][d] < pred[d][o]
                why = (f"both fit, accuracy within {margin:g} points ({da:+.2f}); own arch "
                       f"{'faster' if holds else 'not faster'} ({pred[d][d]:.2f} vs {pred[d][o]:.2f} ms)")
        out[d] = {"holds": bool(holds), "why": why, "limit_ms": limit}
    return out


def plot(path, res):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from proxyless_tf import space as space_lib

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.6), dpi=80, gridspec_kw={"width_ratios": [1, 2.4]})
    x = np.arange(len(DEVICES))
    for i, a in enumerate(DEVICES):
        vals = [res["predicted_ms"][d][a] / res["targets_ms"][d] for d in DEVICES]
        bars = ax1.bar(x + (i - 0.5) * 0.36, vals, 0.36, label=f"arch searched for {a}",
                       color=("tab:orange", "tab:blue")[i])
        for b, d in zip(bars, DEVICES):
            ax1.text(b.get_x() + b.get_width() / 2, b.get_height(), f"{res['predicted_ms'][d][a]:.1f} ms",
                     ha="center", va="bottom", fontsize=8)
    ax1.axhline(1.0, color="k", lw=1)
    ax1.axhline(1.0 + res["config"]["derive_tolerance"], color="k", lw=0.8, ls=":")
    ax1.set_xticks(x, [f"{d} table\nT = {res['targets_ms'][d]:.1f} ms" for d in DEVICES])
    ax1.set_ylabel("predicted latency / that device's target")
    ax1.set_title("each arch on each device's table")
    ax1.legend(fontsize=8, loc="lower right")
    # per-layer op choice: bar height = expansion, label = kernel, empty = zero
    layers = res["layer_diff"]["layers"]
    n = len(layers)
    for i, a in enumerate(DEVICES):
        for r in layers:
            op = r["ops"][i]
            xpos = r["layer"] + (i - 0.5) * 0.4
            if op == space_lib.ZERO:
                ax2.text(xpos, 0.15, "0", ha="center", fontsize=8, color=("tab:orange", "tab:blue")[i])
                continue
            p = space_lib.parse_op(op)
            ax2.bar(xpos, p.expand, 0.4, color=("tab:orange", "tab:blue")[i],
                    alpha=0.45 + 0.55 * (p.kernel - 3) / 4, edgecolor="k" if r["differ"] else "none",
                    label=f"arch for {a}" if r["layer"] == 0 else None)
            ax2.text(xpos, p.expand + 0.1, f"{p.kernel}", ha="center", fontsize=7)
    prev = None
    for r in layers:
        if prev is not None and r["stage"] != prev:
            ax2.axvline(r["layer"] - 0.5, color="0.6", lw=0.8)
        prev = r["stage"]
    ax2.set_xticks(range(n), [f"{r['layer']}\n{r['in_hw'][0]}" for r in layers], fontsize=7)
    ax2.set_xlabel("searchable layer (and its input size at 224)")
    ax2.set_ylabel("expansion (bar); kernel size above; 0 = zero op")
    ax2.set_ylim(0, 7.2)
    ax2.set_title(f"per-layer ops: {res['layer_diff']['num_differ']} of {n} layers differ (outlined)")
    ax2.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def _ops_table(res, deploy):
    lines = ["| layer | stage | input at 224 | arch for pixel1 | arch for litert1 | differs in |",
             "|---|---|---|---|---|---|"]
    for r in res["layer_diff"]["layers"]:
        a, b = r["ops"]
        lines.append(f"| {r['layer']} | {r['stage']} | {r['in_hw'][0]}x{r['in_hw'][1]} | {a} | {b} | "
                     f"{', '.join(r['how']) if r['differ'] else ''} |")
    return lines


def _heading():
    return "## Specialization" + (f" [{FLAGS.results_tag}]" if FLAGS.results_tag else "")


def markdown(res):
    """The `## Specialization` section of research/RESULTS.md, from the results dict alone."""
    c, t, p, acc = res["config"], res["targets_ms"], res["predicted_ms"], res["accuracy_used"]
    ld = res["layer_diff"]
    png = os.path.basename(FLAGS.plot)
    out = [
        _heading(),
        "",
        "Question: does a search on this machine's LiteRT table (1 thread) and a search on the official",
        "Pixel 1 table find different networks, each the better one on its own device?",
        "",
        "Command (from the repository root; the searches are `python -m proxyless_tf.search` subprocesses,",
        "their logs and run directories land in `--out_dir`):",
        "",
        "```sh",
        res["command"],
        "```",
        "",
        f"Setup: the mobile space (21 searchable layers); both supernets run on Fashion-MNIST at a proxy "
        f"resolution of {c['resolution']}x{c['resolution']} ({c['max_train']} training and {c['valid_size']} "
        f"validation images, {c['epochs']} epochs of which {c['warmup_epochs']} warm-up, batch {c['batch_size']}, "
        f"{c.get('weight_sharing', 'independent')} candidate weights, weight lr {c.get('weight_lr', 0.025):g}, "
        f"an architecture step every {c.get('arch_every', 1)} weight step(s), "
        f"arch lr {c['arch_lr']:g}, seed {c['seed']}), while the latency term is priced at "
        f"{c['latency_resolution']}x{c['latency_resolution']} with `--latency_resolution` (same ops, the tables' "
        f"keys at the deployment input) and the heads as both tables measured them, for "
        f"{c['latency_num_classes']} classes (`--latency_num_classes`; a constant of every architecture). "
        f"Loss {c['latency_loss']} (lambda {c['loss_lambda']:g}) on both; each target is the same position, "
        f"{c['target_frac']:g}, in its own device's reachable range; the latency-aware derivation "
        f"(tolerance {c['derive_tolerance']:g}, mode {c.get('derive_mode', 'band')}: "
        + ("into the band from both sides" if c.get("derive_mode", "band") == "band"
           else "only a network over its budget is changed")
        + ") then fits each argmax network to its target. "
        f"Search wall time: " + ", ".join(f"{d} {res['search_wall_s'][d] / 60:.1f} min" for d in DEVICES)
        + " (run in parallel on the shared 2-core machine).",
        "",
        "Predicted latency (ms) of both architectures on both tables; in parentheses relative to that "
        "device's target:",
        "",
        "| table (device) | reachable range | target | arch searched for pixel1 | arch searched for litert1 |",
        "|---|---|---|---|---|",
    ]
    for d in DEVICES:
        lo, hi = res["ranges_ms"][d]
        out.append(f"| {d}: {LABEL[d]} | {lo:.1f} .. {hi:.1f} | {t[d]:.1f} | "
                   + " | ".join(f"{p[d][a]:.1f} ({p[d][a] / t[d] * 100:.0f} %)" for a in DEVICES) + " |")
    ap = res["argmax_predicted_ms"]
    out += ["", "Before the latency-aware derivation (plain argmax of alpha; the derivation then changed "
            + ", ".join(f"{res['derive_changed_layers'][d]} layers for {d}" for d in DEVICES)
            + f"; the two argmax networks differ in {res['argmax_layers_differ']} layers): "
            + "; ".join(f"on the {d} table " + ", ".join(f"arch for {a} {ap[d][a]:.1f} ms" for a in DEVICES)
                        for d in DEVICES) + "."]
    out += ["", "Validation accuracy (Fashion-MNIST validation split, supernet weights, BN recalibrated; "
            "each row one trained supernet, each column one architecture):", "",
            "| supernet trained with | arch for pixel1 | arch for litert1 |", "|---|---|---|"]
    if "valid_acc_cross" in res:
        for n in DEVICES:
            out.append(f"| {n} table | " + " | ".join(f"{res['valid_acc_cross'][n][a] * 100:.2f} %"
                                                      for a in DEVICES) + " |")
    else:
        out.append("| own | " + " | ".join(f"{res['valid_acc_own_supernet'][a] * 100:.2f} %" for a in DEVICES)
                   + " |")
    out.append(f"| used ({res['accuracy_used_is']}) | " + " | ".join(f"{acc[a] * 100:.2f} %" for a in DEVICES)
               + " |")
    if "litert_measured" in res:
        m = res["litert_measured"]
        out += ["", "Measured on this machine at 224x224, 1000 classes (LiteRT, 1 thread, `clock=ref`: ratio to an "
                "interleaved reference network x its latency, median of "
                f"{len(next(iter(m.values()))['rounds_ms'])} rounds): "
                + ", ".join(f"arch for {a} {m[a]['median_ms']:.1f} ms" for a in DEVICES)
                + ". The table's own clock is `cpu`, so compare the two with each other, not with the table."]
    st = ld["stages"]
    out += ["", f"The architectures differ in {ld['num_differ']} of {len(ld['layers'])} layers "
            f"(kernel size in {ld['kinds']['kernel']}, expansion in {ld['kinds']['expansion']}, "
            f"zero vs block in {ld['kinds']['zero vs block']}). Per stage (pixel1 / litert1):", "",
            "| stage | layers | differ | zero layers | mean kernel | mean expansion |", "|---|---|---|---|---|---|"]
    for k in sorted(st, key=int):
        v = st[k]

        def mean(i, key):
            return f"{v[key][i] / v['blocks'][i]:.1f}" if v["blocks"][i] else "-"
        out.append(f"| {k} | {v['layers']} | {v['differ']} | {v['zero'][0]} / {v['zero'][1]} | "
                   f"{mean(0, 'kernel_sum')} / {mean(1, 'kernel_sum')} | {mean(0, 'expand_sum')} / "
                   f"{mean(1, 'expand_sum')} |")
    out += ["", "<details><summary>per-layer ops</summary>", ""] + _ops_table(res, None) + ["", "</details>", "",
            f"![specialization]({png})", "",
            f"Left: each architecture's predicted latency on each table divided by that device's target (dotted: "
            f"the derivation tolerance). Right: per-layer choices (bar height expansion, number kernel size, "
            f"outlined where the two differ).", "",
            "Criterion for \"better on its own device\": on device D's table, the architecture searched for D is "
            f"feasible (predicted <= T_D x {1 + c['derive_tolerance']:g}, the search's own tolerance) and either the "
            "other architecture is not, or both are and D's is at least as accurate (differences under "
            f"{c['acc_margin']:g} points count as equal, and then the faster one on D wins). Accuracy: "
            f"{res['accuracy_used_is']}.", ""]
    for d in DEVICES:
        v = res["verdict"][d]
        out.append(f"- {d}: **{'holds' if v['holds'] else 'does not hold'}**: {v['why']}.")
    steps = c["steps_per_epoch"] or c["max_train"] // c["batch_size"]
    out += ["", f"Limits: one seed; a short search ({c['epochs']} epochs of {steps} steps, "
            f"{(c['epochs'] - c['warmup_epochs']) * steps // c.get('arch_every', 1)} architecture steps), and the "
            "latency-aware derivation does part of the fitting to each target (counts above); the accuracies "
            "are supernet-weight proxies at the proxy resolution on Fashion-MNIST, not retrained networks, and "
            "differences of a point are within the noise of a "
            f"{c['valid_size']}-image validation split. The LiteRT table's "
            "calibration (scale, per-block term, negative offset, fitted on 10 networks) extrapolates below 0 ms "
            "at the fast end of the space, which is why its reachable range starts below zero.", ""]
    return "\n".join(out)


def main(argv):
    if len(argv) > 1:
        raise ConfigError("<command line>", "arguments", f"unexpected arguments {argv[1:]}", "pass only --flags")
    from proxyless_tf.search.inputs import load_space
    from proxyless_tf import space as space_lib
    from proxyless_tf.latency.official import import_table
    from proxyless_tf.latency.table import LatencyTable

    t0 = time.time()
    FLAGS.out_dir = os.path.abspath(FLAGS.out_dir)  # the searches run from the repository root
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    deploy = load_space(FLAGS.space, FLAGS.latency_resolution)
    proxy = load_space(FLAGS.space, FLAGS.resolution)
    pixel_path = os.path.join(FLAGS.out_dir, "pixel1_table.json")
    pixel = import_table(FLAGS.pixel_yaml, deploy, FLAGS.latency_num_classes)
    pixel.save(pixel_path)
    tables = {"pixel1": pixel_path, "litert1": FLAGS.litert_table}
    loaded = {"pixel1": pixel, "litert1": LatencyTable.load(FLAGS.litert_table)}
    for t in loaded.values():
        t.check_space(deploy, FLAGS.latency_num_classes)
    results = run_searches(tables)

    nc = FLAGS.latency_num_classes
    ops = {d: results[d]["ops"] for d in DEVICES}
    archs = {d: space_lib.Arch(deploy, ops[d]) for d in DEVICES}
    pred = {d: {a: loaded[d].predict(archs[a], nc) for a in DEVICES} for d in DEVICES}  # pred[table][arch]
    targets = {d: results[d]["target_ms"] for d in DEVICES}
    res = {
        "config": {k: getattr(FLAGS, k) for k in ("resolution", "latency_resolution", "latency_num_classes",
                                                 "target_frac", "latency_loss", "loss_lambda", "max_train",
                                                 "valid_size", "epochs", "warmup_epochs", "steps_per_epoch",
                                                 "batch_size", "arch_lr", "derive_tolerance", "seed", "acc_margin",
                                                 "weight_sharing", "arch_every", "weight_lr", "recalibration_steps",
                                                 "run_eagerly", "derive_mode")},
        "command": "python research/tools/experiment_specialization.py " + " ".join(a for a in sys.argv[1:]),
        "tables": tables,
        "targets_ms": targets,
        "ranges_ms": {d: results[d]["range_ms"] for d in DEVICES},
        "ops": ops,
        "argmax_ops": {d: results[d]["argmax_ops"] for d in DEVICES},
        "derive_changed_layers": {d: results[d]["derive_changed_layers"] for d in DEVICES},
        "predicted_ms": pred,
        "argmax_predicted_ms": {d: {a: loaded[d].predict(space_lib.Arch(deploy, results[a]["argmax_ops"]), nc)
                                    for a in DEVICES} for d in DEVICES},
        "argmax_layers_differ": sum(x != y for x, y in zip(results["pixel1"]["argmax_ops"],
                                                           results["litert1"]["argmax_ops"])),
        "relative_to_target": {d: {a: pred[d][a] / targets[d] for a in DEVICES} for d in DEVICES},
        "valid_acc_own_supernet": {d: results[d]["valid_acc"] for d in DEVICES},
        "search_wall_s": {d: results[d]["wall_s"] for d in DEVICES},
        "layer_diff": layer_diff(deploy, ops["pixel1"], ops["litert1"]),
    }
    acc = dict(res["valid_acc_own_supernet"])
    if FLAGS.cross_eval:
        cross = cross_evaluate(proxy, ops, results)
        res["valid_acc_cross"] = cross  # [supernet][arch]
        acc = {a: sum(cross[n][a] for n in DEVICES) / len(DEVICES) for a in DEVICES}
    res["accuracy_used"] = acc
    res["accuracy_used_is"] = ("mean over both supernets" if FLAGS.cross_eval else "each arch in its own supernet")
    if FLAGS.measure:
        res["litert_measured"] = measure_litert(archs)
    res["verdict"] = verdicts(pred, targets, acc, FLAGS.derive_tolerance, FLAGS.acc_margin)
    res["tool_wall_s"] = time.time() - t0
    files_lib.write_json_atomic(FLAGS.results_json, res)
    plot(FLAGS.plot, res)
    if FLAGS.results_md:
        from research.experiments import write_section

        write_section(FLAGS.results_md, markdown(res), _heading())

    print(f"\n{'table':8s} {'target':>8s} | " + " | ".join(f"arch for {a:7s}" for a in DEVICES))
    for d in DEVICES:
        print(f"{d:8s} {targets[d]:8.2f} | " + " | ".join(
            f"{pred[d][a]:7.2f} ms {pred[d][a] / targets[d] * 100:4.0f}%" for a in DEVICES))
    print("accuracy (" + res["accuracy_used_is"] + "): " + ", ".join(f"{a} {acc[a] * 100:.2f}%" for a in DEVICES))
    ld = res["layer_diff"]
    print(f"{ld['num_differ']} of {len(ld['layers'])} layers differ: {ld['kinds']}")
    for d in DEVICES:
        v = res["verdict"][d]
        print(f"better on its own device, {d}: {'HOLDS' if v['holds'] else 'does NOT hold'} ({v['why']})")
    if "litert_measured" in res:
        print("LiteRT measured at 224 (clock=ref): " + ", ".join(
            f"arch for {a} {m['median_ms']:.2f} ms" for a, m in res["litert_measured"].items()))
    print(f"wrote {FLAGS.results_json}, {FLAGS.plot}" + (f" and {FLAGS.results_md}" if FLAGS.results_md else ""))


if __name__ == "__main__":
    cli.run(main)
