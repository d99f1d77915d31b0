"""Search cost against one retraining of the network it found, measured in one run.

The paper's claim is that ProxylessNAS costs about as much as regular training. This tool
runs a search and then the retraining of its `arch.json`, both as subprocesses of the real
entry points (`proxyless_tf.search`, `proxyless_tf.train`), one after the other on an
otherwise quiet machine, and prints wall time and peak RSS (the child's VmHWM) of each and
their ratios:

    python research/tools/experiment_cost.py --out_dir=runs/cost --search_flags=quickstart.flags \
        --train_flags=train_fashion_mnist.flags --results_md=research/RESULTS.md

A killed run resumes: a job whose result.json exists is not run again, and the numbers of
the jobs that finished are kept in OUT/cost.json. The ratios are what to read; the VM's
speed drifts by 15-20 % over minutes, so seconds are not comparable across runs.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from absl import flags  # noqa: E402

from proxyless_tf import cli  # noqa: E402
from research import experiments  # noqa: E402
from proxyless_tf.errors import ConfigError  # noqa: E402
from proxyless_tf.files import read_json  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("out_dir", "runs/cost", "Where the search and the retraining put their run directories and logs.")
flags.DEFINE_string("search_flags", "quickstart.flags", "Flag file of the search (a bare name is looked up in configs/).")
flags.DEFINE_string("train_flags", "train_fashion_mnist.flags", "Flag file of the retraining.")
flags.DEFINE_list("search_args", [], "Extra flags for the search, comma-separated.")
flags.DEFINE_list("train_args", [], "Extra flags for the retraining, comma-separated.")
flags.DEFINE_float("max_ratio", 3.0, "The claim checked: search ≤ this × one retraining, in time and in memory.")
flags.DEFINE_string("results_md", None, "Also rewrite the '## Cost' section of this markdown file.")

HEADING = "## Cost: search against one retraining of the found network"


def _flagfile(name):
    path = cli.resolve_path(name, "")
    if not os.path.isfile(path):
        raise ConfigError(name, "flag file", "not found (neither as given nor in configs/)",
                          "pass an existing flag file, e.g. quickstart.flags")
    return path


def report(cost, search, train, max_ratio, command):
    s, t = cost["search"], cost["train"]
    rt, rm = s["wall_s"] / t["wall_s"], s["max_rss_mib"] / t["max_rss_mib"]
    lines = [
        HEADING, "",
        "    " + command, "",
        "| job | wall time | peak RSS | result |",
        "|---|---|---|---|",
        f"| search | {s['wall_s'] / 60:.1f} min | {s['max_rss_mib'] / 1024:.2f} GiB | derived net predicted "
        f"{search['predicted_ms']:.4g} ms (target {search['target_ms']:.4g}), valid {100 * search['valid_acc']:.2f} % |",
        f"| retraining of its arch.json | {t['wall_s'] / 60:.1f} min | {t['max_rss_mib'] / 1024:.2f} GiB | "
        f"test accuracy {100 * train['test_accuracy']:.2f} % |",
        "",
        f"Search ÷ retraining: time {rt:.2f}×, peak RSS {rm:.2f}× (claim: both ≤ {max_ratio:g}×: "
        f"{'holds' if max(rt, rm) <= max_ratio else 'fails'}).",
    ]
    return "\n".join(lines) + "\n"


def main(argv):
    if len(argv) > 1:
        raise ConfigError("<command line>", "arguments", f"unexpected arguments {argv[1:]}",
                          "pass options as --flag=value")
    out = os.path.abspath(FLAGS.out_dir)
    search_dir, train_dir = os.path.join(out, "search"), os.path.join(out, "train")
    jobs = [
        experiments.Job("search", experiments.python_module(
            "proxyless_tf.search", f"--flagfile={_flagfile(FLAGS.search_flags)}", f"--out_dir={search_dir}",
            *FLAGS.search_args), os.path.join(out, "search.log"), os.path.join(search_dir, "result.json")),
        experiments.Job("train", experiments.python_module(
            "proxyless_tf.train", f"--flagfile={_flagfile(FLAGS.train_flags)}",
            f"--arch={os.path.join(search_dir, 'arch.json')}", f"--out_dir={train_dir}", *FLAGS.train_args),
            os.path.join(out, "train.log"), os.path.join(train_dir, "result.json")),
    ]
    cost_path = os.path.join(out, "cost.json")
    os.makedirs(out, exist_ok=True)
    for job in jobs:  # one at a time: the retraining needs the search's arch.json, and timings need a quiet machine
        ran = experiments.run_jobs([job])
        if ran and ran[0].returncode != 0:
            raise ConfigError(job.log_path, job.name, f"exited with {job.returncode}",
                              "read the log, fix the cause and rerun this command (finished jobs are kept)")
        cost = experiments.record_jobs(ran, cost_path)
        if job.name not in cost:
            raise ConfigError(cost_path, job.name, f"{job.done_file} exists but its cost was not recorded here",
                              f"remove {os.path.dirname(job.done_file)} and rerun to measure it")
    command = "python research/tools/experiment_cost.py " + " ".join(sys.argv[1:])
    text = report(cost, read_json(jobs[0].done_file, "search result"), read_json(jobs[1].done_file, "training result"),
                  FLAGS.max_ratio, command)
    print(text, flush=True)
    if FLAGS.results_md:
        experiments.write_section(FLAGS.results_md, text, HEADING)


if __name__ == "__main__":
    cli.run(main)
