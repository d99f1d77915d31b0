"""The research tests reuse the library tests' helpers (tests/cli_helpers.py, tests/search_helpers.py)."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tests"))

import proxyless_tf  # noqa: F401,E402
from cli_helpers import ROOT, SHARED_DATA, assert_one_line_error, cli_env, run_cli  # noqa: F401,E402
