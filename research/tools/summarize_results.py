"""Rewrite the one-table digest of every matched-latency run at the top of research/RESULTS.md.

    python research/tools/summarize_results.py --results_md=research/RESULTS.md

Nothing is run or retrained: the digest is read off the matched-latency sections themselves
(research/results_digest.py), so that whether the latency-aware search has ever won, and at
which search and retraining budget, is one table instead of two thousand lines.
`research/tools/experiment_matched_latency.py --results_md=...` rewrites it after each run.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from absl import flags  # noqa: E402

from proxyless_tf import cli  # noqa: E402
from proxyless_tf.errors import ConfigError  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("results_md", "research/RESULTS.md", "Markdown file with matched-latency sections.")


def main(argv):
    from research import results_digest

    if not os.path.isfile(FLAGS.results_md):
        raise ConfigError(FLAGS.results_md, "--results_md", "no such file",
                          "pass the RESULTS file that research/tools/experiment_matched_latency.py writes")
    parsed = results_digest.update(FLAGS.results_md)
    if parsed is None:
        raise ConfigError(FLAGS.results_md, "--results_md", f"has no '{results_digest.MATCHED}' section",
                          "run research/tools/experiment_matched_latency.py --results_md=... first")
    print(f"{FLAGS.results_md}: digest of {len(parsed)} matched-latency runs written", flush=True)


if __name__ == "__main__":
    cli.run(main)
