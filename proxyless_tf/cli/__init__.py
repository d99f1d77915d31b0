"""Command lines: absl flags in, library calls out (the library never reads flags).

`search.py` and `train.py` are the entry points; `flagfiles.py` is the parser in front of
absl that every entry point and tool shares."""

from proxyless_tf.cli.flagfiles import CONFIGS, ROOT, check_flagfiles, parse_flags, resolve_flagfiles, resolve_path, run

__all__ = ["CONFIGS", "ROOT", "check_flagfiles", "parse_flags", "resolve_flagfiles", "resolve_path", "run"]
