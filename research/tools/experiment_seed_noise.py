"""Can these retrainings tell the matched-latency contenders apart at all?

    python research/tools/experiment_seed_noise.py --runs=runs/exp_matched_seeds3,runs/exp_matched_seeds3_retrain3

Reads the `results.json` of finished `research/tools/experiment_matched_latency.py` runs (nothing is
retrained) and reports, per run, how much of the accuracy differences between the fixed
architectures (the random ones and the MobileNetV2-style one, every one retrained with every
seed) is the architecture and how much the seed: the within-architecture seed std, the std of
the architectures' seed means, the reliability of one training and of the k-seed mean (ICC(1)),
the seeds a 0.9-reliable ranking needs (Spearman–Brown), and Kendall's τ between the rankings two
seeds give. Then the claim the experiment is judged by — the searched networks against the
median random architecture — as a difference with a bootstrap interval over seeds and
architectures and the fraction of resamples in which it is positive. A claim whose interval
spans zero is not decided by that budget, whichever way its point estimate falls.
"""

import os
import shlex
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from absl import flags  # noqa: E402
from proxyless_tf import files as files_lib

from proxyless_tf import cli  # noqa: E402
from proxyless_tf.errors import ConfigError  # noqa: E402

HEADING = "## Seed noise: can the matched-latency retrainings rank architectures?"

FLAGS = flags.FLAGS
flags.DEFINE_list("runs", None, "Output directories of finished experiment_matched_latency.py runs.")
flags.DEFINE_list("labels", None, "A label per run for the table (default: the directory names).")
flags.DEFINE_float("goal", 0.9, "Reliability whose seed count is reported.")
flags.DEFINE_integer("n_boot", 10000, "Bootstrap resamples of the searched-vs-median difference.")
flags.DEFINE_string("out_json", None, "Where the numbers go (default: print only).")
flags.DEFINE_string("results_md", None, "Markdown file whose '## Seed noise' section is (re)written.")
flags.mark_flag_as_required("runs")


def analyse(rows, goal, n_boot):
    from research import accuracy_noise

    out = accuracy_noise.claim_noise(rows, goal, n_boot)
    if out is None:
        raise ValueError("fewer than 2 fixed architectures with 2 common seeds")
    return out


def markdown(results, command):
    lines = ["Fixed architectures: the 10 random ones and the MobileNetV2-style one, each retrained with every "
             "seed. Reliability: ICC(1), the share of one training's accuracy variance that is the architecture "
             "(0: the seeds differ as much as the archs; 1: the seed never changes the ranking); k-seed: the same "
             "for the mean of the run's seeds. Searched − median: the searched networks' mean minus the median "
             "random architecture's seed mean, 90 % bootstrap interval over searched trainings, random archs "
             "and their seeds; P(> 0): share of resamples where the searched mean is ahead.", "",
             f"    {command}", "",
             "| run | archs × seeds | seed std | arch std | reliability 1 seed / k-seed mean | seeds for "
             f"{results[0][1]['goal']:.1f} | seed-pair τ | aware − median [90 %], P(> 0) | "
             "blind − median [90 %], P(> 0) |",
             "|---|---|---|---|---|---|---|---|---|"]

    def claim(b):
        if b is None:
            return "—"
        return (f"{b['diff'] * 100:+.2f} [{b['lo'] * 100:+.2f}, {b['hi'] * 100:+.2f}], "
                f"{b['p_positive']:.2f}")

    for label, r in results:
        taus = "/".join(f"{t:+.2f}" for t in r["seed_pair_tau"])
        lines.append(f"| {label} | {r['archs']} × {r['seeds']} | {r['within_std'] * 100:.2f} | "
                     f"{r['between_std'] * 100:.2f} | {r['reliability_1']:.2f} / {r['reliability_k']:.2f} | "
                     f"{r['seeds_for_goal']} | {taus} | {claim(r.get('aware'))} | {claim(r.get('blind'))} |")
    return "\n".join(lines)


def main(argv):
    from research import experiments

    labels = FLAGS.labels or [os.path.basename(os.path.normpath(d)) for d in FLAGS.runs]
    if len(labels) != len(FLAGS.runs):
        raise ConfigError("<flags>", "--labels", f"{len(labels)} labels for {len(FLAGS.runs)} runs",
                          "give one label per --runs entry, or none")
    results = []
    for label, run in zip(labels, FLAGS.runs):
        rows = experiments.load_run_rows(run)
        try:
            r = analyse(rows, FLAGS.goal, FLAGS.n_boot)
        except ValueError as e:
            raise ConfigError(os.path.join(run, "results.json"), "rows", f"no seed-noise estimate: {e}",
                              "rerun the experiment with --random_all_seeds and at least two --seeds") from None
        results.append((label, r))
        print(f"{label}: reliability {r['reliability_1']:.2f} (1 seed) / {r['reliability_k']:.2f} "
              f"({r['seeds']} seeds), seed std {r['within_std'] * 100:.2f}, arch std {r['between_std'] * 100:.2f}",
              flush=True)
    command = "python research/tools/experiment_seed_noise.py " + shlex.join(sys.argv[1:])  # labels may hold spaces
    text = markdown(results, command)
    print(text, flush=True)
    if FLAGS.out_json:
        files_lib.write_json_atomic(FLAGS.out_json, {"command": command, "runs": dict(results)})
    if FLAGS.results_md:
        experiments.write_section(FLAGS.results_md, "\n".join([HEADING, "", text, ""]), HEADING)


if __name__ == "__main__":
    cli.run(main)
