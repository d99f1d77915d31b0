"""Does the trained supernet rank architectures the way retraining them does?

    python research/tools/experiment_supernet_ranking.py --run=runs/exp_matched_seeds3_retrain3

A weight-sharing search can only beat random choices if the supernet's score of an
architecture predicts its accuracy after stand-alone retraining. This tool takes a finished
`research/tools/experiment_matched_latency.py` run, rebuilds each of its searches' supernets from the
search directory (`config.json` and the last checkpoint; `proxyless_tf.search.path_scorer`), scores
every fixed architecture of the run (the random ones and the MobileNetV2-style one, all in the
same latency band) and the search's own derived network with the supernet's weights on the
search's validation split (BN re-estimated per path), and compares that ranking with the
retrained one: Kendall's τ against the architectures' seed means and against single seeds,
next to the τ between two seeds of retraining (what one retraining tells about another, the
ceiling any predictor is held to). It also says where the search's own network sits in both
rankings: a supernet that scores its own favourite first while retraining puts it low is
biased toward the paths it trained most.
"""

import glob
import json
import os
import shlex
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from absl import flags  # noqa: E402
from proxyless_tf import files as files_lib

from proxyless_tf import cli  # noqa: E402
from proxyless_tf.errors import ConfigError  # noqa: E402

HEADING = "## Supernet ranking: does the supernet's score predict retrained accuracy?"

FLAGS = flags.FLAGS
flags.DEFINE_string("run", None, "Output directory of a finished experiment_matched_latency.py run (with "
                    "--rows_from: any directory of search_* runs, finished or not retrained).")
flags.DEFINE_list("searches", None, "Search directories of the run to evaluate (names like search_blind_s0; "
                  "default: every one).")
flags.DEFINE_string("rows_from", None, "Run whose retrained fixed architectures are the reference (default: --run); "
                    "the same archs retrained with more seeds in another run make a steadier reference.")
flags.DEFINE_list("groups", ["random", "mbv2"], "Row groups whose fixed architectures are scored.")
flags.DEFINE_integer("recalibration_steps", 20, "Training batches BN statistics are re-estimated on per path.")
flags.DEFINE_string("out_json", None, "Where the numbers go (default: <run>/supernet_ranking.json).")
flags.DEFINE_string("results_md", None, "Markdown file whose '## Supernet ranking' section is (re)written.")
flags.DEFINE_string("results_tag", "", "Tag of the section in --results_md.")
flags.mark_flag_as_required("run")


def rank_of(value, others):
    """1-based rank of `value` among `others` + itself, highest first."""
    return 1 + int(sum(o > value for o in others))


def compare(sup, matrix, own_score=None, own_retrained=None):
    """τ of the supernet's scores `sup` (one per row of `matrix`, archs × seeds of retrained accuracy)
    against the seed means and single seeds; where the search's own network ranks in both."""
    import numpy as np
    import scipy.stats

    from research import accuracy_noise

    sup = np.asarray(sup, dtype=float)
    means = matrix.mean(axis=1)
    out = {"archs": matrix.shape[0], "seeds": matrix.shape[1],
           "tau_mean": float(scipy.stats.kendalltau(sup, means).statistic),
           "tau_single": [float(scipy.stats.kendalltau(sup, matrix[:, j]).statistic) for j in range(matrix.shape[1])],
           "noise": accuracy_noise.seed_noise(matrix) if matrix.shape[1] > 1 else None,
           "supernet_range": [float(sup.min()), float(sup.max())]}
    top = int(np.argmax(sup))
    out["top_pick_retrained_rank"] = rank_of(means[top], np.delete(means, top))
    if own_score is not None:
        out["own_supernet_rank"] = rank_of(own_score, sup)
        out["own_supernet_acc"] = float(own_score)
    if own_retrained is not None:
        out["own_retrained_rank"] = rank_of(own_retrained, means)
        out["own_retrained_acc"] = float(own_retrained)
    return out


def score_search(search_dir, archs):
    """{ops tuple: supernet accuracy} of `archs`, cached in the search directory per recalibration
    setting, so a killed run or a second reference run does not score a path twice."""
    from proxyless_tf import space as space_lib
    from proxyless_tf.search import path_scorer as supernet_eval

    cache_path = os.path.join(search_dir, f"supernet_scores_recal{FLAGS.recalibration_steps}.json")
    cache = json.load(open(cache_path)) if os.path.exists(cache_path) else {}
    todo = [ops for ops in archs if ",".join(ops) not in cache]
    if todo:
        cfg, space, data, net = supernet_eval.load_search(search_dir)
        score = supernet_eval.PathScorer(net, data, FLAGS.recalibration_steps, cfg.seed)
        for i, ops in enumerate(todo):
            cache[",".join(ops)] = score(space_lib.Arch(space, list(ops)))
            files_lib.write_json_atomic(cache_path, cache)
            print(f"  {os.path.basename(search_dir)} {i + 1}/{len(todo)}: supernet {cache[','.join(ops)] * 100:.2f} %",
                  flush=True)
    return {ops: cache[",".join(ops)] for ops in archs}


def evaluate_search(search_dir, keys, matrix, own_row):
    from research import accuracy_noise
    from proxyless_tf.search import config as search_config
    from proxyless_tf import space as space_lib

    own = tuple(space_lib.Arch.from_json(os.path.join(search_dir, "arch.json")).ops)
    scores = score_search(search_dir, list(keys) + [own])
    cfg = search_config.read_config(search_dir)
    res = compare([scores[k] for k in keys], matrix, scores[own], own_row["test_accuracy"] if own_row else None)
    res["trait_tau"] = dict(zip(accuracy_noise.TRAITS, accuracy_noise.trait_taus([scores[k] for k in keys], keys)))
    res.update(epochs=cfg.epochs, max_train=cfg.max_train, batch_size=cfg.batch_size,
               latency_loss=cfg.latency_loss, own_ops=list(own), scores={",".join(k): v for k, v in scores.items()})
    return res


def trait_markdown(results, retrained_taus):
    """The traits table: how the retrained seed means and each supernet's scores order the fixed
    archs by depth, width and kernel. A supernet column whose signs differ from the retrained one
    is a bias the search inherits."""
    names = list(results)
    lines = ["", "τ of each trait of the fixed architectures with their retrained seed mean and with each "
             "supernet's score (+: more of it ranks higher):", "",
             "| trait | retrained | " + " | ".join(n.replace("search_", "") for n in names) + " | supernets' mean |",
             "|---|---|" + "---|" * (len(names) + 1)]
    from research import accuracy_noise

    def fmt(t):
        return "—" if t is None else f"{t:+.2f}"  # None: the trait does not vary among the archs

    for j, trait in enumerate(accuracy_noise.TRAITS):
        sup = [results[n]["trait_tau"][trait] for n in names]
        known = [t for t in sup if t is not None]
        mean = sum(known) / len(known) if known else None
        lines.append(f"| {trait} | {fmt(retrained_taus[j])} | " + " | ".join(fmt(t) for t in sup) + f" | {fmt(mean)} |")
    return lines


def markdown(results, command, retrained_taus):
    lines = ["Each search's supernet (last checkpoint) scores the run's fixed architectures (random and "
             "MobileNetV2-style, all in the latency band) and its own derived network on the search's validation "
             "split, BN re-estimated per path. τ: Kendall's τ of those scores against the retrained accuracies "
             "(seed means; single seeds); seed-vs-seed τ: what one retraining predicts of another (the ceiling). "
             "Ranks are 1 = best; the own network's retrained rank uses its one training against the fixed "
             "archs' seed means.", "", f"    {command}", "",
             "| supernet | search (epochs × images) | τ vs seed mean | τ vs one seed (per seed) | seed-vs-seed τ | supernet acc "
             "range | own network: supernet rank / retrained rank | supernet's top pick: retrained rank |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        n = r["archs"] + 1
        seed_tau = "—" if r["noise"] is None else f"{r['noise']['seed_pair_tau_mean']:+.2f}"
        own = (f"{r.get('own_supernet_rank', '—')} / {r.get('own_retrained_rank', '—')} of {n}"
               if "own_supernet_rank" in r else "—")
        lines.append(f"| {name} | {r['epochs']} × {r['max_train'] or 'all'} | {r['tau_mean']:+.2f} | "
                     + "/".join(f"{t:+.2f}" for t in r["tau_single"]) + f" | {seed_tau} | "
                     f"{r['supernet_range'][0] * 100:.1f}–{r['supernet_range'][1] * 100:.1f} % | {own} | "
                     f"{r['top_pick_retrained_rank']} of {r['archs']} |")
    return "\n".join(lines + trait_markdown(results, retrained_taus))


def main(argv):
    from research import accuracy_noise
    from research import experiments

    # with --rows_from, a run still searching (or bare search dirs) can be probed: its own networks
    # are then scored but not placed in the retrained ranking
    probe = FLAGS.rows_from and not os.path.exists(os.path.join(FLAGS.run, "results.json"))
    rows = [] if probe else experiments.load_run_rows(FLAGS.run)
    ref = FLAGS.rows_from or FLAGS.run
    keys, _, matrix = accuracy_noise.arch_seed_matrix(experiments.load_run_rows(ref) if FLAGS.rows_from else rows,
                                                      FLAGS.groups)
    if len(keys) < 3:
        raise ConfigError(os.path.join(ref, "results.json"), "rows",
                          f"{len(keys)} fixed architectures retrained with common seeds in groups {FLAGS.groups}",
                          "pass a run with random contenders (--num_random >= 2) or other --groups")
    names = FLAGS.searches or sorted(os.path.basename(d) for d in glob.glob(os.path.join(FLAGS.run, "search_*"))
                                     if os.path.isdir(d))
    by_name = {r["name"]: r for r in rows}
    results = {}
    for name in names:
        print(f"supernet {name}: scoring {len(keys)} fixed architectures and its own", flush=True)
        results[name] = evaluate_search(os.path.join(FLAGS.run, name), keys, matrix,
                                        by_name.get(name.replace("search_", "", 1)))
    command = "python research/tools/experiment_supernet_ranking.py " + shlex.join(sys.argv[1:])
    retrained_taus = accuracy_noise.trait_taus(matrix.mean(axis=1), keys)
    files_lib.write_json_atomic(FLAGS.out_json or os.path.join(FLAGS.run, "supernet_ranking.json"),
                                {"command": command, "searches": results,
                                 "retrained_trait_tau": dict(zip(accuracy_noise.TRAITS, retrained_taus))})
    text = markdown(results, command, retrained_taus)
    print(text, flush=True)
    if FLAGS.results_md:
        heading = HEADING + (f" [{FLAGS.results_tag}]" if FLAGS.results_tag else "")
        experiments.write_section(FLAGS.results_md, "\n".join([heading, "", text, ""]), heading)


if __name__ == "__main__":
    cli.run(main)
