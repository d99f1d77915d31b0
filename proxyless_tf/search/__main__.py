"""`python -m proxyless_tf.search`: the command line lives in `proxyless_tf.cli.search`."""

from absl import flags

from proxyless_tf.cli import search

__doc__ = search.__doc__  # absl prints the main module's docstring as the usage
flags.adopt_module_key_flags(search)  # so --help lists the search's flags, not only absl's
search.entry()
