"""One error type for every bad input a user can hand us.

Entry points catch `ConfigError` and print its single line (file, field, fix) with exit
code 2, so a user never sees a traceback from deep inside TensorFlow for a typo. Anything
else that escapes an entry point is a bug: one line with the path of a crash log holding
the traceback, exit code 1 (`run_cli`).
"""


class ConfigError(ValueError):
    """A user-supplied file, flag or value is wrong; the message says where and how to fix it."""

    def __init__(self, source, field, problem, fix=None):
        self.source = str(source) if source is not None else "<input>"
        self.field = field
        self.problem = problem
        self.fix = fix
        msg = f"{self.source}: {field}: {problem}"
        if fix:
            msg += f" (fix: {fix})"
        super().__init__(msg)


EXIT_INTERNAL = 1   # a bug of ours: the traceback is in a crash log
EXIT_BAD_INPUT = 2  # the user's file or flag: the line says what to fix


def crash_dir():
    """Where crash logs go: $XDG_CACHE_HOME/proxyless_tf (~/.cache/proxyless_tf), else the temp dir."""
    import os

    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "proxyless_tf")


def write_crash_log(exc):
    """The traceback of `exc` in a new file; returns its path (None if nowhere is writable)."""
    import os
    import sys
    import tempfile
    import time
    import traceback

    text = (f"command: {' '.join(sys.argv)}\npython: {sys.version.split()[0]}\n\n"
            + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    name = f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    for d in (crash_dir(), tempfile.gettempdir()):
        try:
            os.makedirs(d, exist_ok=True)
            path = os.path.join(d, name)
            with open(path, "x", encoding="utf-8") as f:
                f.write(text)
            return path
        except OSError:
            continue
    return None


def report_internal_error(exc):
    """One `error:` line for an exception that is a bug of ours, with the log holding its trace."""
    import sys

    path = write_crash_log(exc)
    first = str(exc).splitlines()[0][:200] if str(exc) else ""
    where = f"traceback in {path}" if path else "no crash log could be written"
    print(f"error: internal error: {type(exc).__name__}: {first} ({where}; please report it with that file)",
          file=sys.stderr)


def run_cli(main_fn):
    """Wrap an entry point: ConfigError becomes one line on stderr and exit code 2; any other
    exception (a bug) becomes one line naming a crash log with the traceback, exit code 1.
    SystemExit and KeyboardInterrupt pass through (a deliberate exit, a Ctrl-C)."""
    import sys

    def wrapped(*args, **kwargs):
        try:
            return main_fn(*args, **kwargs)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
        except Exception as e:  # noqa: BLE001 - the one place that turns a bug into a report
            report_internal_error(e)
            sys.exit(EXIT_INTERNAL)

    return wrapped
