"""Latency-aware search vs latency-blind search vs random vs MobileNetV2-style, at one latency.

    python research/tools/experiment_matched_latency.py --out_dir=runs/exp_matched [--parallel=2]

The paper's RQ4 claim — searching with the latency term finds a more accurate network
than the alternatives *at the same latency* — as a rerunnable experiment on real
Fashion-MNIST. The target is the latency of the uniform MobileNetV2-style network of the
space (`--reference_op` in every layer) *measured* on the table's device (`--match_on=measured`,
the default; `predicted` uses the table's prediction of it, as the first runs did), so that
network is a contender by construction. Contenders, all retrained by the same
`proxyless_tf.train` command:

  aware   `proxyless_tf.search` with the latency loss toward the target, one per seed
  blind   the same search with `--latency_loss=none`, its argmax then moved into the
          latency band by the same latency-aware derivation (so both are at the target)
  random  `--num_random` uniformly random archs of the space in the band (rejection
          sampling), each retrained with every seed and ranked by its seed mean
  mbv2    the uniform reference network, one training per seed

Matched on the measurement, the searches derive with `--derive_measure` (the derived network
is measured and re-derived until it measures in the band; with the target left to the uniform
network, that network is timed right after each derived one, `--measured_reference`, so the band
moves with the machine), and a random arch is kept only
when its measurement is in the band (it is first screened by its prediction, within
±`--screen_tolerance` of where the table puts the target: the prediction divided by the median
table ÷ measured ratio of the networks measured so far). The table alone misses: its
networks were 8-22 % off their measurement in the first runs. Every network is measured
again at the end, `--final_rounds` times in one session, with the table's own backend settings
(LiteRT, its thread count and clock); the medians are the ones reported. Each stage writes files in --out_dir and is skipped
when they exist: a killed run continues where it stopped. Results: results.json, the
plots, and the markdown section printed at the end (paste into research/RESULTS.md).
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from absl import flags, logging  # noqa: E402
from proxyless_tf import files as files_lib

from proxyless_tf import cli  # noqa: E402
from proxyless_tf.errors import ConfigError  # noqa: E402

HEADING = "## Matched latency: latency-aware search vs blind, random and MobileNetV2-style"

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FLAGS = flags.FLAGS
flags.DEFINE_string("out_dir", "runs/exp_matched", "Where every run, log and result goes.")
flags.DEFINE_string("space", os.path.join(ROOT, "configs/spaces/fashion_mnist.json"), "Search space JSON.")
REF_TABLES = [os.path.join(ROOT, "configs", "latency", f) for f in
              ("fashion_mnist_litert1_ref.json", "fashion_mnist_litert1_ref_xeon.json")]
flags.DEFINE_string("latency_table", None,
                    "Latency table of the space (its backend settings are also used to measure); default: the "
                    "committed --clock=ref table of the Fashion-MNIST space measured on this machine's CPU model.")
flags.DEFINE_string("reference_op", "mb_k3_e6", "Op of the uniform MobileNetV2-style network; its predicted "
                    "latency is the target.")
flags.DEFINE_float("target_ms", None, "Latency target (default: the uniform network's measured latency, or its "
                   "prediction with --match_on=predicted).")
flags.DEFINE_enum("match_on", "measured", ["measured", "predicted"], "measured: contenders are in the band by "
                  "their measurement on the table's device (needs a LiteRT table of this machine); predicted: by "
                  "the table's prediction.")
flags.DEFINE_float("screen_tolerance", 0.2, "--match_on=measured: random archs are measured only when their "
                   "prediction is within this fraction of the table's equivalent of the target.")
flags.DEFINE_float("tolerance", 0.05, "Latency band of the random archs and of the derivation (fraction).")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds of the searches and of the reference network's trainings.")
flags.DEFINE_integer("num_random", 10, "Random archs in the latency band.")
flags.DEFINE_boolean("random_all_seeds", True, "Retrain every random arch with every --seeds seed and rank the "
                     "archs by their mean (--norandom_all_seeds: one training each, seed --seeds[0]).")
flags.DEFINE_integer("parallel", 1, "Subprocesses at a time.")
flags.DEFINE_integer("search_parallel", None, "Searches at a time (default: --parallel). 1: each search runs "
                     "alone, so its --derive_measure times networks on a quiet machine, as the final rounds do "
                     "(beside another job, narrow networks slowed more than the target network: research/RESULTS.md "
                     "[sampled]).")
flags.DEFINE_integer("child_threads", None, "TF intra-op threads per subprocess (default: TF's choice).")
flags.DEFINE_list("search_args", [
    "--dataset=fashion_mnist", "--epochs=3", "--warmup_epochs=1", "--max_train=6400", "--valid_size=5000",
    "--batch_size=64", "--arch_every=2", "--weight_lr=0.05", "--arch_lr=0.03", "--latency_loss=add#abs",
    "--loss_lambda=3.0", "--bn_recalibration_steps=20", "--verbose=2", "--checkpoint_every=50"],
    "Arguments of every search (comma-separated); seed, target, table and out_dir are added.")
flags.DEFINE_list("train_args", [
    "--dataset=fashion_mnist", "--epochs=1", "--train_examples=20000", "--batch_size=128", "--lr=0.1",
    "--warmup_epochs=0.2", "--checkpoint_every=100"],
    "Arguments of every retraining (comma-separated); arch, seed and out_dir are added.")
flags.DEFINE_integer("final_rounds", 3, "Fresh measurements of every network at the end; the median is "
                     "reported (one measurement moves 3-6 % between sessions here).", lower_bound=1)
flags.DEFINE_boolean("measure", True, "Measure every network's TFLite latency with the table's backend.")
flags.DEFINE_string("results_md", None, "Markdown file whose '## Matched latency' section is (re)written "
                    "(e.g. research/RESULTS.md); the plots are copied next to it.")
flags.DEFINE_string("results_tag", "", "Tag of this run's section and plots in --results_md, so runs with other "
                    "settings (e.g. nested) stand beside each other instead of replacing one another.")
flags.DEFINE_list("reuse_from", [], "Finished out_dirs of this tool whose jobs are taken when they ran with the same "
                  "arguments (copied, with their cost records); an empty --out_dir also takes the first one's target "
                  "and random archs (measured.json, archs/), so the contenders are the same.")
flags.DEFINE_integer("heatmap_seed", 0, "Seed of the latency-aware search whose α history is drawn.")
flags.DEFINE_list("searches", ["aware", "blind"], "Search contenders to run (aware, blind or both): a follow-up "
                  "that only asks about the latency-aware search (new seeds, another --mode) skips the blind one.")


def default_table(candidates=REF_TABLES):
    """The first of `candidates` measured on this machine's CPU model, else the first: matching on
    the measurement needs the table's host, and the committed tables come from the hosts these
    experiments ran on (a table of another host is then refused with its remedy)."""
    from proxyless_tf.latency.backends import host_cpu_model

    host = host_cpu_model()
    for path in candidates:
        with open(path) as f:
            if json.load(f).get("device", {}).get("host_cpu") == host:
                return path
    return candidates[0]


def _load():
    from proxyless_tf import space as space_lib
    from proxyless_tf.latency.table import LatencyTable

    if FLAGS.latency_table is None:
        FLAGS.latency_table = default_table()
        print(f"experiment: latency table {os.path.relpath(FLAGS.latency_table)}", flush=True)
    space = space_lib.SearchSpace.from_json(FLAGS.space)
    table = LatencyTable.load(FLAGS.latency_table)
    table.check_space(space, 10)
    return space, table


class Measurer:
    """Measured latency of an arch with the table's backend settings and ms scale, cached by ops
    in measured.json so that a resumed run measures nothing twice and picks the same archs."""

    def __init__(self, table, out):
        self.table, self.path = table, os.path.join(out, "measured.json")
        self.cache = json.load(open(self.path)) if os.path.exists(self.path) else {}
        self.backend = None

    def __call__(self, arch, label="", fresh=False):
        from proxyless_tf.models import nets

        key = ",".join(arch.ops)
        if key in self.cache and not fresh:
            return self.cache[key]
        if self.backend is None:
            from proxyless_tf.latency.measured_derivation import backend_like

            self.backend = backend_like(self.table, FLAGS.latency_table)
        ms = float(getattr(self.backend.measure(nets.build_model(arch, 10)), self.table.statistic))
        if fresh:
            return ms
        self.cache[key] = ms
        files_lib.write_json_atomic(self.path, self.cache)
        if label:
            print(f"measured {label}: {ms:.4f} ms (predicted {self.table.predict(arch, 10):.4f})", flush=True)
        return ms


def plan(space, table, out, measure):
    """(target, the target on the table's clock, contenders: name -> {group, seed, arch_path (known
    now or after its search)}).

    `measure`: a Measurer (--match_on=measured) or None."""
    from research import experiments

    mbv2 = experiments.uniform_arch(space, FLAGS.reference_op)
    if FLAGS.target_ms:
        target = FLAGS.target_ms
    else:
        target = measure(mbv2, "mbv2 (the target)") if measure else table.predict(mbv2, 10)
    os.makedirs(os.path.join(out, "archs"), exist_ok=True)
    mbv2_path = os.path.join(out, "archs", "mbv2.json")
    if not os.path.exists(mbv2_path):
        mbv2.to_json(mbv2_path)
    contenders = {}
    for s in FLAGS.seeds:
        contenders[f"mbv2_s{s}"] = {"group": "mbv2", "seed": int(s), "arch_path": mbv2_path}
        for group in FLAGS.searches:
            contenders[f"{group}_s{s}"] = {"group": group, "seed": int(s),
                                           "search_dir": os.path.join(out, f"search_{group}_s{s}"),
                                           "arch_path": os.path.join(out, f"search_{group}_s{s}", "arch.json")}
    table_target = target * table.predict(mbv2, 10) / measure(mbv2) if measure else target
    paths = [os.path.join(out, "archs", f"random_{i}.json") for i in range(FLAGS.num_random)]
    # a plan already drawn (a resumed run, or one taken with --reuse_from) keeps its archs, even
    # where this version of the draw would pick others
    if not all(os.path.exists(p) for p in paths):
        if measure:
            # screened by prediction around where the measurements put the band (the median
            # predicted/measured ratio so far, the mbv2's first), kept by measurement
            screen = experiments.MeasuredScreen(
                lambda a: table.predict(a, 10), lambda a: measure(a, "random candidate"), target, FLAGS.tolerance,
                first=[(table.predict(mbv2, 10), measure(mbv2))])
            drawn = experiments.matched_random_archs(space, screen.predict, target, FLAGS.num_random,
                                                     FLAGS.screen_tolerance, seed=0, accept=screen.accept)
            print(f"experiment: {len(drawn)} random archs in the band after {screen.measured} measurements "
                  f"(table ÷ measured: {screen.ratio():.3f} median, {table_target / target:.3f} for the target "
                  f"network)", flush=True)
        else:
            drawn = experiments.matched_random_archs(space, lambda a: table.predict(a, 10), target,
                                                     FLAGS.num_random, FLAGS.tolerance, seed=0)
        for (_, arch, _), path in zip(drawn, paths):
            if not os.path.exists(path):
                arch.to_json(path)
    random_seeds = FLAGS.seeds if FLAGS.random_all_seeds else FLAGS.seeds[:1]
    for i, path in enumerate(paths):
        for s in random_seeds:
            contenders[f"random_{i}_s{s}"] = {"group": "random", "seed": int(s), "arch_path": path}
    return target, table_target, contenders


def take_plan(src, out):
    """An empty out_dir starts from `src`'s plan: its target network, random archs and, when it
    measured them, their measurements (a `--nomeasure` run has none: its plan is archs/ alone)."""
    import shutil

    if not os.path.exists(os.path.join(src, "archs", "mbv2.json")):
        raise ConfigError(os.path.join(src, "archs", "mbv2.json"), "--reuse_from",
                          "missing: not an out_dir of this tool",
                          "pass the --out_dir of a finished research/tools/experiment_matched_latency.py run")
    measured = os.path.exists(os.path.join(src, "measured.json"))
    if FLAGS.match_on == "measured" and not measured:
        raise ConfigError(os.path.join(src, "measured.json"), "--reuse_from",
                          "missing: that run matched on the table's prediction, its random archs were not measured",
                          "reuse it with --match_on=predicted, or pass a run that measured")
    if os.path.exists(os.path.join(out, "archs", "mbv2.json")):
        return  # a plan of its own (a resumed run): kept
    os.makedirs(out, exist_ok=True)
    if measured:
        shutil.copyfile(os.path.join(src, "measured.json"), os.path.join(out, "measured.json"))
    shutil.copytree(os.path.join(src, "archs"), os.path.join(out, "archs"), dirs_exist_ok=True)
    print(f"experiment: target and random archs from {src}", flush=True)


def search_jobs(contenders, target, table_target, out):
    from research import experiments

    jobs = []
    for name, c in contenders.items():
        if c["group"] not in ("aware", "blind"):
            continue
        args = list(FLAGS.search_args) + [f"--space={FLAGS.space}", f"--latency_table={FLAGS.latency_table}",
                                          f"--target_ms={target}", f"--derive_tolerance={FLAGS.tolerance}",
                                          f"--seed={c['seed']}", f"--out_dir={c['search_dir']}"]
        if c["group"] == "blind":
            args = [a for a in args if not a.startswith(("--latency_loss=", "--loss_lambda="))]
            args.append("--latency_loss=none")
        if FLAGS.match_on == "measured":  # the loss on the table's clock, the band on the device's
            args += ["--derive_measure", (f"--measured_target_ms={target}" if FLAGS.target_ms else
                                          f"--measured_reference={os.path.join(out, 'archs', 'mbv2.json')}")]
            args = [a if not a.startswith("--target_ms=") else f"--target_ms={table_target}" for a in args]
        jobs.append(experiments.Job(f"search {name}", experiments.python_module("proxyless_tf.search", *args),
                                    os.path.join(c["search_dir"] + ".log"),
                                    os.path.join(c["search_dir"], "result.json")))
    return jobs


def train_jobs(contenders, out):
    from research import experiments

    jobs = []
    for name, c in contenders.items():
        c["train_dir"] = os.path.join(out, f"train_{name}")
        args = list(FLAGS.train_args) + [f"--arch={c['arch_path']}", f"--seed={c['seed']}",
                                         f"--out_dir={c['train_dir']}"]
        jobs.append(experiments.Job(f"train {name}", experiments.python_module("proxyless_tf.train", *args),
                                    c["train_dir"] + ".log", os.path.join(c["train_dir"], "result.json")))
    return jobs


def repeatability(per_arch, first, mbv2_key):
    """How far one measurement strays: each network's spread over the final rounds, relative to
    its median, and the uniform network's first (target-setting) measurement against its median."""
    import numpy as np

    spread = [(max(v) - min(v)) / float(np.median(v)) * 100 for v in per_arch.values()]
    med = float(np.median(per_arch[mbv2_key]))
    return {"rounds": len(per_arch[mbv2_key]), "spread_pct_median": float(np.median(spread)),
            "spread_pct_max": float(max(spread)), "first_ms": first, "mbv2_rounds_ms": per_arch[mbv2_key],
            "mbv2_median_ms": med}


def collect(contenders, recorded, table, measured):
    """One row per contender; `recorded`: job name -> {wall_s, max_rss_mib} (jobs.json)."""
    from proxyless_tf import space as space_lib

    rows = []
    for name, c in contenders.items():
        arch = space_lib.Arch.from_json(c["arch_path"])
        res = json.load(open(os.path.join(c["train_dir"], "result.json")))
        row = {"name": name, "group": c["group"], "seed": c["seed"], "ops": arch.ops,
               "predicted_ms": table.predict(arch, 10), "measured_ms": measured.get(",".join(arch.ops)),
               "test_accuracy": res["test_accuracy"], "train_wall_s": res.get("wall_s")}
        if "search_dir" in c:
            sres = json.load(open(os.path.join(c["search_dir"], "result.json")))
            row.update(search_wall_s=sres["wall_s"], search_valid_acc=sres["valid_acc"],
                       derive_changed_layers=sres.get("derive_changed_layers"),
                       search_measured_ms=sres.get("measured_ms"),  # on the clock of:
                       search_measured_target_ms=sres.get("measured_target_ms"),
                       derive_measure_rounds=len(sres.get("measured_rounds", [])) or None,
                       **alpha_decisiveness(os.path.join(c["search_dir"], "alpha_history.json")))
        for kind in ("search", "train"):
            j = recorded.get(f"{kind} {name}")
            if j is not None and j["max_rss_mib"] is not None:
                row[f"{kind}_peak_rss_mib"] = j["max_rss_mib"]
                row[f"{kind}_job_wall_s"] = j["wall_s"]
        rows.append(row)
    return rows


def alpha_decisiveness(history_path):
    """How far the search's final α is from uniform: per layer the largest op probability, its
    mean over layers, and the same for a uniform α. A search whose α stayed near uniform had no
    signal to derive from: its network is the derivation's pick among near-equal choices."""
    import numpy as np

    if not os.path.exists(history_path):
        return {}
    probs = json.load(open(history_path))[-1]["probs"]
    return {"alpha_max_prob_mean": float(np.mean([max(layer.values()) for layer in probs])),
            "alpha_uniform_prob_mean": float(np.mean([1.0 / len(layer) for layer in probs]))}


def summarize(rows, target, final_target=None):
    """Accuracy and latency per group, and the claims. `final_target`: the target network's median
    over the final rounds, when the target is its measurement. The band is then judged against it:
    every contender's reported latency comes from those interleaved rounds, and the machine drifts
    between the target's first measurement (before the searches) and the end (+7 % in
    `[retrain6]`), so the first measurement would judge the end's numbers on another clock. The
    error to the first measurement is kept beside it."""
    import numpy as np

    from research import experiments

    ref = final_target or target
    groups = {}
    for g in ("aware", "blind", "random", "mbv2"):
        sel = [r for r in rows if r["group"] == g]
        lat = np.array([r["measured_ms"] or np.nan for r in sel], dtype=float)
        if sel:
            groups[g] = experiments.accuracy_stats(sel, by_arch=(g == "random"))
            known = np.isfinite(lat).any()
            groups[g].update(measured_ms_mean=float(np.nanmean(lat)) if known else None,
                             measured_err_pct_max=float(np.nanmax(np.abs(lat - ref) / ref * 100)) if known else None,
                             measured_err_first_pct_max=float(np.nanmax(np.abs(lat - target) / target * 100))
                             if known else None)
    a = groups.get("aware")
    claims = experiments.accuracy_claims(groups)
    if claims:  # None when nothing was measured (--nomeasure): not judged, rather than failed
        claims["aware_measured_within_5pct"] = (None if a["measured_err_pct_max"] is None
                                                else a["measured_err_pct_max"] <= 5.0)
    return groups, claims


def cost(rows):
    """Search vs one retraining of the network it found, same seed, same process accounting."""
    import numpy as np

    out = []
    for r in rows:
        if r["group"] == "aware" and r.get("search_job_wall_s") and r.get("train_job_wall_s"):
            out.append({"seed": r["seed"], "search_s": r["search_job_wall_s"], "train_s": r["train_job_wall_s"],
                        "time_ratio": r["search_job_wall_s"] / r["train_job_wall_s"],
                        "search_rss_mib": r["search_peak_rss_mib"], "train_rss_mib": r["train_peak_rss_mib"],
                        "rss_ratio": r["search_peak_rss_mib"] / r["train_peak_rss_mib"]})
    if out:
        return {"per_seed": out, "time_ratio_mean": float(np.mean([c["time_ratio"] for c in out])),
                "rss_ratio_mean": float(np.mean([c["rss_ratio"] for c in out]))}
    return None


def latency_axis_label(rows):
    """What the Pareto plot's x axis holds: a --nomeasure run plots the table's prediction."""
    measured = [r["measured_ms"] is not None for r in rows]
    return ("measured latency (ms, the table's device)" if all(measured) else
            "latency predicted by the table (ms)" if not any(measured) else
            "latency (ms: measured, else predicted by the table)")


def plot_pareto(rows, target, tol, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from research import experiments

    pts = [(r["measured_ms"] or r["predicted_ms"], r["test_accuracy"]) for r in rows]
    front = experiments.pareto_front(pts)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.axvspan(target * (1 - tol), target * (1 + tol), color="0.9", label=f"target ±{tol:.0%}")
    style = {"aware": ("tab:red", "*", 160), "blind": ("tab:blue", "s", 60), "random": ("0.5", "o", 40),
             "mbv2": ("tab:green", "^", 70)}
    for g, (color, marker, size) in style.items():
        sel = [p for p, r in zip(pts, rows) if r["group"] == g]
        if sel:
            ax.scatter([p[0] for p in sel], [p[1] * 100 for p in sel], c=color, marker=marker, s=size, label=g,
                       zorder=3)
    fp = sorted(pts[i] for i in front)
    ax.plot([p[0] for p in fp], [p[1] * 100 for p in fp], "k--", lw=1, label="Pareto front", zorder=2)
    ax.set_xlabel(latency_axis_label(rows))
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=8)
    ax.set_title("Fashion-MNIST, all retrained the same way")
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)
    plt.close(fig)


def plot_heatmap(history_path, path):
    """Per-layer op probabilities after each epoch of one search (rows: layers, columns: ops)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    hist = json.load(open(history_path))
    ops = sorted({op for h in hist for layer in h["probs"] for op in layer})
    fig, axes = plt.subplots(1, len(hist), figsize=(3.2 * len(hist), 4.2), squeeze=False)
    for ax, h in zip(axes[0], hist):
        m = np.array([[layer.get(op, np.nan) for op in ops] for layer in h["probs"]])
        im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_title(f"epoch {h['epoch']}")
        ax.set_xticks(range(len(ops)), [o.replace("mb_", "") for o in ops], rotation=90, fontsize=7)
        ax.set_yticks(range(m.shape[0]), [f"L{i}" for i in range(m.shape[0])], fontsize=7)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="op probability")
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)
    plt.close(fig)


def markdown(groups, claims, costs, target, tol, command, repeat=None, rows=(), noise=None, final_target=None):
    how = ("given by --target_ms" if FLAGS.target_ms else
           f"the uniform `{FLAGS.reference_op}` network's " + ("measured latency" if FLAGS.match_on == "measured"
                                                                 else "prediction"))
    lines = [f"Target: {target:.4f} ms ({how}); band ±{tol:.0%}, contenders matched on their "
             f"{FLAGS.match_on} latency." + (f" At the end every network is measured again in interleaved rounds, "
                                             f"the target network too ({final_target:.4f} ms, their median): "
                                             f"the band is judged against that." if final_target else ""),
             "", f"    {command}", "",
             "| contenders | n (trainings) | test accuracy mean ± std | median | best | measured latency mean "
             + ("| worst error to the target's final median | worst error to its first measurement |" if final_target
              else "| worst error to target |"),
             "|---|---|---|---|---|---|---|" + ("---|" if final_target else "")]
    for g, s in groups.items():
        ms = "—" if s["measured_ms_mean"] is None else f"{s['measured_ms_mean']:.4f} ms"
        err = "—" if s["measured_err_pct_max"] is None else f"{s['measured_err_pct_max']:.1f} %"
        best = f"{s['acc_max'] * 100:.2f} %"
        if s["runs"] > s["n"]:  # archs ranked by their seed mean: the best one's own seed spread
            best += f" (± {s['acc_max_seed_std'] * 100:.2f})"
        first = ("" if not final_target or s["measured_err_first_pct_max"] is None
                 else f" {s['measured_err_first_pct_max']:.1f} % |")
        lines.append(f"| {g} | {s['n']} ({s['runs']}) | {s['acc_mean'] * 100:.2f} ± {s['acc_std'] * 100:.2f} % | "
                     f"{s['acc_median'] * 100:.2f} % | {best} | {ms} | {err} |{first}")
    if groups.get("random", {}).get("runs", 0) > groups.get("random", {}).get("n", 0):
        lines += ["", "random: each arch retrained with every seed; n counts archs, mean ± std is over the archs' "
                  "seed means, median and best rank the archs by their seed mean."]
    lines += ["", "Claims: " + ", ".join(f"{k} = {'not measured' if v is None else v}" for k, v in claims.items())]
    if noise:  # research/tools/experiment_seed_noise.py compares it across runs
        from research import accuracy_noise

        lines += ["", accuracy_noise.claim_noise_line(noise)]
    decisive = {g: [r["alpha_max_prob_mean"] for r in rows if r["group"] == g and "alpha_max_prob_mean" in r]
                for g in ("aware", "blind")}
    if all(decisive.values()):
        uniform = next(r["alpha_uniform_prob_mean"] for r in rows if "alpha_uniform_prob_mean" in r)
        lines += ["", "Final α (mean over layers of the largest op probability; uniform α: "
                  f"{uniform:.2f}): " + ", ".join(f"{g} " + "/".join(f"{v:.2f}" for v in vals)
                                                  for g, vals in decisive.items()) + " (per seed)."]
    if repeat:
        rounds_ms = ", ".join(f"{v:.4f}" for v in repeat["mbv2_rounds_ms"])
        lines += ["", f"Reported latencies are the median of {repeat['rounds']} fresh measurements per network at the "
                  f"end, in interleaved rounds. Their spread (max − min over the rounds, ÷ median): "
                  f"{repeat['spread_pct_median']:.1f} % for the median network, {repeat['spread_pct_max']:.1f} % "
                  f"at worst. The uniform network (the target): {repeat['first_ms']:.4f} ms first, then "
                  f"{rounds_ms} ms (median "
                  f"{(repeat['mbv2_median_ms'] - repeat['first_ms']) / repeat['first_ms'] * 100:+.1f} % from the first)."]
    if costs:
        lines += ["", f"Cost (latency-aware search ÷ retraining of its network, same accounting): time "
                  f"{costs['time_ratio_mean']:.2f}×, peak RSS {costs['rss_ratio_mean']:.2f}× (mean over seeds)"]
    return "\n".join(lines)


def main(argv):
    from research import accuracy_noise
    from research import experiments
    from proxyless_tf import space as space_lib

    logging.set_verbosity(logging.WARNING)  # the converter's INFO lines (every measurement) would bury the progress
    out = os.path.abspath(FLAGS.out_dir)
    space, table = _load()
    unknown = sorted(set(FLAGS.searches) - {"aware", "blind"})
    if unknown:
        raise ConfigError("<flags>", "--searches", f"unknown search contender(s) {unknown}",
                          "use aware, blind or aware,blind")
    if FLAGS.match_on == "measured" and not FLAGS.measure:
        raise ConfigError("<flags>", "--match_on", "matching on the measurement needs --measure",
                          "drop --nomeasure, or pass --match_on=predicted")
    measure = None
    if FLAGS.measure:
        from proxyless_tf.latency.measured_derivation import check_measurable

        check_measurable(table, FLAGS.latency_table)
    if FLAGS.reuse_from:  # before the Measurer reads measured.json
        take_plan(FLAGS.reuse_from[0], out)
    if FLAGS.measure:
        os.makedirs(out, exist_ok=True)
        measure = Measurer(table, out)
    target, table_target, contenders = plan(space, table, out, measure if FLAGS.match_on == "measured" else None)
    print(f"experiment: target {target:.4f} ms, {len(contenders)} networks to retrain, out {out}", flush=True)
    t0 = time.time()
    sjobs = search_jobs(contenders, target, table_target, out)
    experiments.reuse_jobs(sjobs, FLAGS.reuse_from, out)
    ran = experiments.run_jobs(sjobs, FLAGS.search_parallel or FLAGS.parallel, FLAGS.child_threads)
    experiments.record_jobs(ran, os.path.join(out, "jobs.json"))  # a run killed in its trainings keeps these
    failed = [j for j in ran if j.returncode != 0]
    if failed:
        raise SystemExit(f"error: {failed[0].name} failed; see {failed[0].log_path}")
    tjobs = train_jobs(contenders, out)
    experiments.reuse_jobs(tjobs, FLAGS.reuse_from, out)
    ran += experiments.run_jobs(tjobs, FLAGS.parallel, FLAGS.child_threads)
    failed = [j for j in ran if j.returncode != 0]
    if failed:
        raise SystemExit(f"error: {failed[0].name} failed; see {failed[0].log_path}")
    # job accounting survives a resume: merge with what earlier invocations recorded
    recorded = experiments.record_jobs(ran, os.path.join(out, "jobs.json"))
    measured, repeat = {}, None
    if measure:  # the measurement's own repeatability, next to the ±tolerance it is held to
        measured, per_arch = experiments.measure_all(contenders, measure, FLAGS.final_rounds,
                                         os.path.join(out, "final_measured.json"))
        key = ",".join(space_lib.Arch.from_json(os.path.join(out, "archs", "mbv2.json")).ops)
        repeat = repeatability(per_arch, measure.cache[key], key)
    rows = collect(contenders, recorded, table, measured)
    final_target = repeat["mbv2_median_ms"] if repeat and not FLAGS.target_ms else None
    groups, claims = summarize(rows, target, final_target)
    costs = cost(rows)
    noise = accuracy_noise.claim_noise(rows)  # can these trainings decide the claims at all?
    plot_pareto(rows, final_target or target, FLAGS.tolerance, os.path.join(out, "pareto.png"))
    hist = os.path.join(out, f"search_aware_s{FLAGS.heatmap_seed}", "alpha_history.json")
    if os.path.exists(hist):
        plot_heatmap(hist, os.path.join(out, "alpha_heatmap.png"))
    command = "python research/tools/experiment_matched_latency.py " + " ".join(sys.argv[1:])
    files_lib.write_json_atomic(os.path.join(out, "results.json"),
                                {"target_ms": target, "final_target_ms": final_target, "rows": rows,
                                 "groups": groups, "claims": claims,
                                 "cost": costs, "command": command, "wall_s": time.time() - t0,
                                 "match_on": FLAGS.match_on, "repeatability": repeat, "noise": noise})
    text = markdown(groups, claims, costs, target, FLAGS.tolerance, command, repeat, rows, noise, final_target)
    print(text, flush=True)
    if FLAGS.results_md:
        import shutil

        docs = os.path.dirname(os.path.abspath(FLAGS.results_md))
        heading = HEADING + (f" [{FLAGS.results_tag}]" if FLAGS.results_tag else "")
        prefix = "matched_latency_" + (f"{FLAGS.results_tag}_" if FLAGS.results_tag else "")
        # the rows beside the plots: runs/ stays on the machine that ran it, and a later session
        # that pools seeds across runs, or asks another question of the same networks, needs them
        shutil.copyfile(os.path.join(out, "results.json"), os.path.join(docs, prefix + "results.json"))
        figs = []
        for name in ("pareto.png", "alpha_heatmap.png"):
            if os.path.exists(os.path.join(out, name)):
                shutil.copyfile(os.path.join(out, name), os.path.join(docs, prefix + name))
                figs.append(f"![{name[:-4]}]({prefix}{name})")
        figs.append(f"Every network's row (ops, seed, accuracy, latencies, search numbers): "
                    f"[{prefix}results.json]({prefix}results.json)")
        experiments.write_section(FLAGS.results_md, "\n".join([heading, "", text, ""] + figs), heading)
        from research import results_digest

        results_digest.update(FLAGS.results_md)  # the one-table view at the top counts this run too


if __name__ == "__main__":
    cli.run(main)
