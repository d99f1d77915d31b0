"""`python -m proxyless_tf.search`: ProxylessNAS architecture search from flags.

Thin by design: flags become a `SearchConfig` (`proxyless_tf.search.config`, which also holds
every flag's default and help), the library does the rest.
`--flagfile=NAME.flags` works from any directory: a flag file name that is not a path
resolves in the project's configs/ (argv is rewritten before absl reads it), and the
--space / --latency_table values of a flag file may be names that resolve there too.

    python -m proxyless_tf.search --flagfile=quickstart.flags
    python -m proxyless_tf.search --flagfile=mobile.flags --manual_dir=/data/imagenet

Killed (Ctrl-C, SIGKILL, a lost machine), the same command continues from the last
resume checkpoint in OUT_DIR/resume/.
"""

import os
import sys

from absl import flags

from proxyless_tf import cli
from proxyless_tf.cli import search_flags
from proxyless_tf.errors import ConfigError

ROOT = cli.ROOT

FLAGS = flags.FLAGS
for _name in search_flags.USER:  # what --help lists; the rest is in --helpfull
    flags.declare_key_flag(_name)
__doc__ += "\n" + search_flags.usage()


resolve_flagfiles = cli.resolve_flagfiles


def main(argv):
    if len(argv) > 1:
        raise ConfigError("<command line>", "arguments", f"unexpected arguments {argv[1:]}",
                          "pass options as --flag=value")
    from proxyless_tf.search import inputs, run as search_run
    from proxyless_tf.search.config import SearchConfig

    values = search_flags.config_values(FLAGS)
    values["space"] = cli.resolve_path(FLAGS.space, "spaces")
    table = FLAGS.latency_table
    if table and not table.startswith("~") and not os.path.isabs(table) and not os.path.exists(table):
        if os.path.exists(os.path.join(ROOT, table)):  # flag files name paths from the repo root
            table = os.path.join(ROOT, table)
    values["latency_table"] = table
    cfg = SearchConfig(**values)  # bad values fail here
    inputs.check_config(cfg)  # and bad files here, before TensorFlow takes seconds to load
    import tensorflow as tf

    if not FLAGS.graph_optimizer:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    if FLAGS.run_eagerly:
        tf.config.run_functions_eagerly(True)
    search_run.run_search(cfg)


def entry():
    cli.run(main, argv=resolve_flagfiles(sys.argv))


if __name__ == "__main__":
    entry()
