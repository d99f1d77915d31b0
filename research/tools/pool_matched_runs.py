"""Pool matched-latency runs over seeds and state the RQ4 accuracy claims once for all of them.

    python research/tools/pool_matched_runs.py --results=research/matched_latency_a_results.json,research/matched_latency_b_results.json
    python research/tools/pool_matched_runs.py --results=research/matched_latency_c_results.json --fixed_from=research/matched_latency_a_results.json

What is pooled and what is refused: research/matched_pool.py. With --results_md the section
`## Pooled matched latency [--results_tag]` of that file is (re)written; a reading written by hand
below its `<!-- by hand ... -->` line is kept.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from absl import flags  # noqa: E402

from proxyless_tf import cli  # noqa: E402
from proxyless_tf.errors import ConfigError  # noqa: E402

HEADING = "## Pooled matched latency"
FLAGS = flags.FLAGS
flags.DEFINE_list("results", [], "results.json files of research/tools/experiment_matched_latency.py runs (two or more, "
                  "or one with --fixed_from).")
flags.DEFINE_string("fixed_from", None, "results.json of a run at the same target, table and retraining whose random "
                    "and MobileNetV2-style networks judge the searched networks of --results (for runs that drew none).")
flags.DEFINE_string("results_md", None, "Markdown file whose pooled section is (re)written (e.g. research/RESULTS.md).")
flags.DEFINE_string("results_tag", "", "Tag of the pooled section, so several pools stand side by side.")


def main(argv):
    from research import experiments
    from research import matched_pool

    if len(FLAGS.results) < (1 if FLAGS.fixed_from else 2):
        raise ConfigError("<flags>", "--results", f"{len(FLAGS.results)} file(s)",
                          "pass two or more, comma-separated (or one with --fixed_from)")
    pooled = matched_pool.pool(FLAGS.results, fixed_from=FLAGS.fixed_from)
    heading = HEADING + (f" [{FLAGS.results_tag}]" if FLAGS.results_tag else "")
    text = matched_pool.markdown(pooled, heading, "python research/tools/pool_matched_runs.py " + " ".join(sys.argv[1:]))
    print(text, flush=True)
    if FLAGS.results_md:
        experiments.write_section(FLAGS.results_md, text + "\n", heading)


if __name__ == "__main__":
    cli.run(main)
