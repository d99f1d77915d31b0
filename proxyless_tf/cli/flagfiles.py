"""absl entry points that fail like the rest of the project: one `error:` line, exit code 2.

absl's own flag parser prints `FATAL Flags parsing error` and exits 1 for a bad flag value,
ignores a flag file that includes itself with only a warning (the run then goes on with
half of the intended flags), and lets a non-UTF-8 flag file escape as a traceback. `run`
puts a parser in front of absl that turns all three into the project's one-line
`ConfigError` (file or `<command line>`, the flag, the fix) before any work starts.
It also lets every entry point take `--flagfile=NAME.flags` from any directory: a bare
name that is not in the working directory resolves in the project's configs/.

Which configs/: the checkout's when the package runs from a checkout (editable install,
PYTHONPATH, the tests), so an edited flag file takes effect at once; otherwise the copy
`pip install .` ships inside the package (`proxyless_tf/configs`, see pyproject.toml).
ROOT is the directory holding that configs/, so a path a flag file names from the top
(`--latency_table=configs/latency/...`) resolves as ROOT/that path in both cases.
"""

import importlib.resources
import os
import re
import sys

from proxyless_tf.errors import EXIT_INTERNAL, ConfigError, report_internal_error, run_cli

_FLAGFILE = re.compile(r"^--?flagfile=(.*)$")


def _config_root():
    """The checkout's top directory if this package sits in one, else the installed package's."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    checkout = os.path.dirname(package)
    # pyproject.toml too: a site-packages/configs of some other distribution is not ours.
    if os.path.isfile(os.path.join(checkout, "pyproject.toml")) and \
            os.path.isfile(os.path.join(checkout, "configs", "quickstart.flags")):
        return checkout
    # Installed: configs/ is package data. A wheel installs unpacked, so this is a real directory.
    return os.fspath(importlib.resources.files("proxyless_tf"))


ROOT = _config_root()
CONFIGS = os.path.join(ROOT, "configs")


def resolve_path(value, subdir):
    """A path as given if it exists, else the same name under configs/SUBDIR or the repo root."""
    if not value:
        return value
    value = os.path.expanduser(value)
    if os.path.exists(value) or os.path.isabs(value):
        return value
    for cand in (os.path.join(CONFIGS, subdir, value), os.path.join(ROOT, value)):
        if os.path.exists(cand):
            return cand
    return value


def resolve_flagfiles(argv):
    """--flagfile=NAME (no directory, not in cwd) -> configs/NAME, so flag files work from anywhere."""
    out = []
    for a in argv:
        if a.startswith("--flagfile="):
            v = a.split("=", 1)[1]
            if not os.path.exists(v) and os.path.dirname(v) == "":
                cand = os.path.join(CONFIGS, v)
                if os.path.exists(cand):
                    a = f"--flagfile={cand}"
            elif not os.path.exists(v):
                print(f"error: {v}: --flagfile: flag file does not exist (fix: check the path, or pass a name "
                      f"from {CONFIGS})", file=sys.stderr)
                sys.exit(2)
        out.append(a)
    return out


def _flagfile_args(lines):
    """File names of the --flagfile=X directives among argv words or flag-file lines."""
    out = []
    for i, a in enumerate(lines):
        a = a.strip()
        m = _FLAGFILE.match(a)
        if m:
            out.append(os.path.expanduser(m.group(1).strip()))
        elif a in ("--flagfile", "-flagfile") and i + 1 < len(lines):
            out.append(os.path.expanduser(lines[i + 1].strip()))
    return out


MAX_FLAGFILE_DEPTH = 16    # our flag files include one or two levels; deeper is a loop or an attack
MAX_FLAGFILES = 256        # files read in all (a few files including each other twice per level grow fast)
MAX_FLAGFILE_BYTES = 1 << 20


def check_flagfiles(argv, stack=(), seen=None):
    """Walk the flag files named in argv (and the ones they include); raise on a bad one.

    A file that is missing, unreadable, not a regular file (a pipe would hang), too big, not
    UTF-8, that includes itself (directly or through others), or a chain of includes deeper
    than MAX_FLAGFILE_DEPTH is a ConfigError naming that file: absl would skip the cycle
    silently, and hit Python's recursion limit on a deep chain.
    """
    from proxyless_tf import readers

    seen = [0] if seen is None else seen
    for name in _flagfile_args(argv):
        if not name:
            continue
        key = os.path.realpath(name)
        if key in stack:
            chain = " -> ".join([os.path.basename(s) for s in stack] + [os.path.basename(key)])
            raise ConfigError(name, "--flagfile", f"flag file includes itself ({chain})",
                              "remove the --flagfile line that points back to an including file")
        if len(stack) >= MAX_FLAGFILE_DEPTH:
            raise ConfigError(name, "--flagfile", f"flag files include each other more than {MAX_FLAGFILE_DEPTH} "
                              f"levels deep (from {os.path.basename(stack[0])})",
                              "flatten the chain: put the flags in fewer files")
        seen[0] += 1
        if seen[0] > MAX_FLAGFILES:
            raise ConfigError(name, "--flagfile", f"more than {MAX_FLAGFILES} flag files read for one command",
                              "include each flag file once")
        text = readers.read_text(name, "flag file", "--flagfile", MAX_FLAGFILE_BYTES, fix="check the path",
                                 encoding_fix="save the flag file as UTF-8 text, one --flag=value per line")
        check_flagfiles(text.splitlines(), stack + (key,), seen)


def parse_flags(argv):
    """absl's FLAGS(argv), but every problem is one `error:` line and exit code 2."""
    from absl import flags

    try:
        check_flagfiles(argv[1:])
        return flags.FLAGS(argv)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except flags.Error as e:
        msg = " ".join(str(e).split())
        m = re.search(r"--?(\w+)", msg) or re.search(r"flag '(\w+)'", msg)
        field = f"--{m.group(1)}" if m else "<flags>"
        print(f"error: <command line>: {field}: {msg} (fix: correct the flag; --helpfull lists every flag)",
              file=sys.stderr)
        sys.exit(2)
    except Exception as e:  # noqa: BLE001 - a bug in parsing: one line and a crash log, as run_cli does
        report_internal_error(e)
        sys.exit(EXIT_INTERNAL)


def run(main, argv=None):
    """app.run(main) with our flag parser, ConfigError handling (module docstring) and quiet console.

    Exit codes: 2 for bad input (one `error:` line saying what to fix), 1 for an internal error
    (one `error:` line naming the crash log that holds the traceback; errors.run_cli)."""
    from absl import app

    from proxyless_tf import console  # absl's --verbosity decides whether TensorFlow's own lines show

    app.run(run_cli(console.after_flags(main)), argv=resolve_flagfiles(sys.argv if argv is None else argv),
            flags_parser=parse_flags)
