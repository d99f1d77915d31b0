"""BUILD covers every module, tool and test (Bazel can't fetch its rules here, so we check)."""

import glob
import os

from conftest import ROOT


def _targets():
    """Evaluate BUILD's Starlark subset with recording stand-ins for the rules."""
    targets = []

    def rule(kind):
        def record(**kw):
            targets.append((kind, kw))
        return record

    env = {k: rule(k) for k in ("py_library", "py_test", "py_binary")}
    env.update(load=lambda *a: None, package=lambda **kw: None, glob=lambda *a, **kw: [])
    exec(compile(open(os.path.join(ROOT, "BUILD")).read(), "BUILD", "exec"), env)
    return targets


def test_every_python_file_is_in_a_target():
    covered = {s for _, kw in _targets() for s in kw.get("srcs", [])}
    files = {os.path.relpath(p, ROOT) for pat in ("proxyless_tf/**/*.py", "mobile/**/*.py", "tools/*.py", "tests/**/*.py")
             for p in glob.glob(os.path.join(ROOT, pat), recursive=True) if "__pycache__" not in p}
    missing = sorted(files - covered)
    assert not missing, f"not in BUILD (run python tools/gen_build.py): {missing}"
    stale = sorted(covered - files)
    assert not stale, f"BUILD names files that do not exist: {stale}"


def test_every_test_file_has_a_py_test():
    tests = {kw["srcs"][0] for kind, kw in _targets() if kind == "py_test"}
    files = {os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "tests", "test_*.py"))}
    assert tests == files
