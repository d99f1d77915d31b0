"""Shared test fixtures: where the repo and ../shared are, and running our CLIs as a user would."""

import os
import subprocess
import sys

import pytest

# The package turns oneDNN on before TensorFlow loads, as in every user's process; imported here,
# first, it keeps the in-process tests on those kernels whichever test module is collected first
# (before, the suite ran under Eigen or oneDNN depending on the order of the modules given).
import proxyless_tf  # noqa: F401,E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data", "proxylessnas")

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture(scope="session")
def repo_root():
    return ROOT


@pytest.fixture(scope="session")
def shared_data():
    """../shared/data/proxylessnas: reference data read in place, never copied into the repo."""
    if not os.path.isdir(SHARED_DATA):
        pytest.fail(f"{SHARED_DATA} is missing: tests expect ../shared beside the checkout")
    return SHARED_DATA


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
