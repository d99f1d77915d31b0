"""The top-level guard of every entry point (errors.run_cli, cli.run): bad input is exit 2 and one
line; a bug is exit 1 and one line naming a crash log that holds the traceback; never a raw trace."""

import os
import re
import sys

import pytest

from conftest import ROOT, run_cli
from proxyless_tf.errors import ConfigError, run_cli as guard

# tools/count_macs.py with its library call replaced by one that fails like a bug would.
_BROKEN_TOOL = (
    "import runpy, sys\n"
    "sys.path.insert(0, {root!r})\n"
    "import proxyless_tf.space.macs as m\n"
    "def broken(*a, **k):\n"
    "    raise {exc}\n"
    "m.count_macs = broken\n"
    "sys.argv = ['count_macs.py', 'configs/archs/fashion_mnist_example.json', '--num_classes=10']\n"
    "runpy.run_path('tools/count_macs.py', run_name='__main__')\n")


def _error_lines(stderr):
    return [l for l in stderr.strip().splitlines() if l.startswith("error:")]


def test_a_bug_in_a_tool_is_one_line_exit_1_and_a_crash_log(tmp_path):
    code = _BROKEN_TOOL.format(root=ROOT, exc="ZeroDivisionError('a bug deep inside')")
    proc = run_cli(["-c", code], timeout=300, XDG_CACHE_HOME=str(tmp_path / "cache"))
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = _error_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert "internal error: ZeroDivisionError: a bug deep inside" in lines[0], lines[0]
    log = re.search(r"traceback in (\S+);", lines[0]).group(1)
    assert os.path.dirname(log) == str(tmp_path / "cache" / "proxyless_tf")
    text = open(log, encoding="utf-8").read()
    assert "Traceback (most recent call last)" in text and "def broken" not in text
    assert "raise ZeroDivisionError('a bug deep inside')" in text or "ZeroDivisionError: a bug deep inside" in text
    assert "count_macs.py" in text  # the command line, for the bug report


def test_bad_input_in_the_same_tool_stays_exit_2_and_writes_no_crash_log(tmp_path):
    code = _BROKEN_TOOL.format(root=ROOT, exc="__import__('proxyless_tf').ConfigError('x.json', 'ops[0]', "
                               "'bad op', 'use mb_k3_e6')")
    proc = run_cli(["-c", code], timeout=300, XDG_CACHE_HOME=str(tmp_path / "cache"))
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert _error_lines(proc.stderr) == ["error: x.json: ops[0]: bad op (fix: use mb_k3_e6)"]
    assert not os.path.exists(tmp_path / "cache")


def test_a_bug_while_parsing_flags_is_exit_1_too(tmp_path):
    code = ("import runpy, sys\n"
            f"sys.path.insert(0, {ROOT!r})\n"
            "import proxyless_tf.cli.flagfiles as ff\n"
            "def broken(argv, *a):\n"
            "    raise RecursionError('deep')\n"
            "ff.check_flagfiles = broken\n"
            "sys.argv = ['count_macs.py', '--num_classes=10']\n"
            "runpy.run_path('tools/count_macs.py', run_name='__main__')\n")
    proc = run_cli(["-c", code], timeout=300, XDG_CACHE_HOME=str(tmp_path / "cache"))
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    lines = _error_lines(proc.stderr)
    assert len(lines) == 1 and "internal error: RecursionError: deep" in lines[0], proc.stderr
    assert len(os.listdir(tmp_path / "cache" / "proxyless_tf")) == 1


def test_guard_in_process_config_error_and_bug_and_fallback_dir(tmp_path, monkeypatch, capsys):
    def bad_input():
        raise ConfigError("f.json", "field", "wrong", "fix it")

    with pytest.raises(SystemExit) as e:
        guard(bad_input)()
    assert e.value.code == 2
    assert capsys.readouterr().err == "error: f.json: field: wrong (fix: fix it)\n"

    def bug():
        raise KeyError("k")

    # the cache directory cannot be created (a file is in the way): the log goes to the temp dir
    (tmp_path / "blocked").write_text("a file, not a directory")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "blocked"))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    with pytest.raises(SystemExit) as e:
        guard(bug)()
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: internal error: KeyError: 'k' (traceback in " + str(tmp_path / "tmp")), err
    assert len(os.listdir(tmp_path / "tmp")) == 1

    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # Ctrl-C is the user's, not a bug
        guard(interrupted)()
    with pytest.raises(SystemExit) as e:
        guard(lambda: sys.exit(3))()
    assert e.value.code == 3
