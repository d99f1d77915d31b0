"""The search's flags, made from `SearchConfig`'s fields (`proxyless_tf.search.config`).

A flag's name, default, help and allowed values are its config field's, so a default is
written once. Each flag is registered under its section (`proxyless_tf.search [latency]`,
...), which is how `--helpfull` groups them; `cli.search` declares the user flags (the fields
marked `user`) as its key flags, which is what `--help` lists. Importing this module defines
the flags.
"""

from absl import flags

from proxyless_tf.runtime import distribute
from proxyless_tf.search import config as config_lib

SHARED = ("strategy", "cpu_devices", "cluster_timeout")  # `distribute.define_flags`, shared with train
USER = tuple(f.name for f in config_lib.fields() if f.metadata["user"])


def _module(section):
    return f"proxyless_tf.search [{section}]"


def _define(field):
    doc, choices, kw = field.metadata["doc"], field.metadata["choices"], {"module_name": _module(field.metadata["section"])}
    if choices:
        flags.DEFINE_enum(field.name, field.default, list(choices), doc, **kw)
    elif field.type is bool:
        flags.DEFINE_boolean(field.name, field.default, doc, **kw)
    elif field.type is int:
        flags.DEFINE_integer(field.name, field.default, doc, **kw)
    elif field.type is float:
        flags.DEFINE_float(field.name, field.default, doc, **kw)
    else:
        flags.DEFINE_string(field.name, field.default, doc, **kw)


for _field in config_lib.fields():
    if _field.name not in SHARED:
        _define(_field)
distribute.define_flags(flags)
# process settings of the entry point, not of the search (not in SearchConfig)
flags.DEFINE_boolean("run_eagerly", False, "Run every step eagerly (no tf.function tracing): on a loaded CPU a big "
                     "space's graph (e.g. the 21-layer mobile space) takes longer to trace than a short search takes "
                     "to run eagerly.", module_name=_module("run"))
flags.DEFINE_boolean("graph_optimizer", True, "Run TF's grappler on the search graph: it prunes the branches' unused "
                     "gradients and intermediates, which hold most of the search's memory (quickstart-sized run: peak "
                     "RSS 3.6 GiB with it, 6.0 GiB without; ~35 s longer to start).", module_name=_module("run"))


def usage():
    """The user flags by section, and where the others are: the tail of `--help`'s usage text."""
    lines = ["User flags by section (--helpfull lists every flag, the research options too):"]
    for section, what in config_lib.SECTIONS.items():
        names = [f"--{f.name}" for f in config_lib.fields(section) if f.metadata["user"]]
        if names:
            lines.append(f"  {section:<13}{' '.join(names)}")
    return "\n".join(lines) + "\n"


def config_values(flag_values):
    """{field: flag value} for every `SearchConfig` field."""
    return {f.name: getattr(flag_values, f.name) for f in config_lib.fields()}
