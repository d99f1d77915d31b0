"""Shared test fixtures: where the repo and ../shared are; the CLI helpers live in cli_helpers.py."""

import os

import pytest

# The package turns oneDNN on before TensorFlow loads, as in every user's process; imported here,
# first, it keeps the in-process tests on those kernels whichever test module is collected first
# (before, the suite ran under Eigen or oneDNN depending on the order of the modules given).
import proxyless_tf  # noqa: F401,E402
from cli_helpers import ROOT, SHARED_DATA, assert_one_line_error, cli_env, run_cli  # noqa: F401

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture(scope="session")
def repo_root():
    return ROOT


@pytest.fixture(scope="session")
def shared_data():
    """../shared/data/proxylessnas: reference data read in place, never copied into the repo."""
    if not os.path.isdir(SHARED_DATA):
        pytest.skip(f"{SHARED_DATA} is absent: the official reference files live in ../shared beside the checkout")
    return SHARED_DATA
