"""The test policy holds together: the default run leaves the slow tests out, the README gives the
command for each set, and CI runs exactly those commands, so nothing marked slow goes untested."""

import os
import re

from cli_helpers import ROOT


def _readme_test_commands():
    """The pytest command lines of the README's shell blocks."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        blocks = re.findall(r"^```sh\n(.*?)^```", f.read(), re.M | re.S)
    return [line for b in blocks for line in b.splitlines() if " -m pytest " in line]


def test_ci_runs_the_readmes_fast_and_slow_commands_verbatim():
    commands = set(_readme_test_commands())
    fast = {c for c in commands if " -m slow" not in c}
    slow = commands - fast
    assert len(fast) == 1 and len(slow) == 1, commands
    assert slow == {fast.pop() + " -m slow"}, commands
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
        ci = [line.strip() for line in f if not line.lstrip().startswith("#")]
    # a command line as is, or followed by `|| failed=1` (CI goes on to the next set)
    missing = [c for c in _readme_test_commands() if not any(re.fullmatch(re.escape(c) + r"( \|\| .+)?", l) for l in ci)]
    assert not missing, f".ci/run does not run the README's {missing}"


def test_the_default_run_deselects_slow_and_the_marker_is_registered(pytestconfig):
    assert pytestconfig.getini("addopts") == ["-m", "not slow"], pytestconfig.getini("addopts")
    assert any(m.startswith("slow:") for m in pytestconfig.getini("markers")), pytestconfig.getini("markers")
