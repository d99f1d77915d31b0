"""Running our CLIs as a user would, and asserting how they fail; shared by tests/ and research/tests/."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data", "proxylessnas")

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def cli_env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env.update(extra)
    return env


def run_cli(args, cwd=None, timeout=600, **env):
    """Run `python ARGS...` (a tool path or `-m module`) like a user; returns CompletedProcess."""
    return subprocess.run([sys.executable, *args], cwd=cwd or ROOT, env=cli_env(**env),
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(proc, *needles):
    """Exit code 2, no traceback, and the last stderr line names every needle."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [l for l in proc.stderr.strip().splitlines() if l.startswith("error:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]
