"""One error type for every bad input a user can hand us.

Entry points catch `ConfigError` and print its single line (file, field, fix) with exit
code 2, so a user never sees a traceback from deep inside TensorFlow for a typo.
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


def run_cli(main_fn):
    """Wrap an entry point so ConfigError becomes one line on stderr and exit code 2."""
    import sys

    def wrapped(*args, **kwargs):
        try:
            return main_fn(*args, **kwargs)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    return wrapped
