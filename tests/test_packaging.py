"""`pip install .` ships a package that runs on its own: every subpackage, configs/ inside it, the dependencies.

The wheel is built from a copy of the sources (no build/ or egg-info left in the checkout),
offline and without build isolation (the test venv's setuptools), in about two seconds.
The copy of configs/ it carries is then resolved the way an installed package resolves it:
the wheel unpacked, run from another directory with no checkout on the path.
"""

import email
import glob
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from conftest import ROOT, assert_one_line_error
from search_helpers import synthetic_table

from proxyless_tf.space import SearchSpace

tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+")


def _configs_files():
    """configs/ of the checkout, as paths relative to it (what the wheel must carry)."""
    out = []
    for p in glob.glob(os.path.join(ROOT, "configs", "**", "*"), recursive=True):
        if os.path.isfile(p):
            out.append(os.path.relpath(p, os.path.join(ROOT, "configs")).replace(os.sep, "/"))
    return sorted(out)


def test_pyproject_lists_every_subpackage():
    """The package list is written out (configs/ maps onto proxyless_tf.configs); a new subpackage must join it."""
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        cfg = tomllib.load(f)
    listed = set(cfg["tool"]["setuptools"]["packages"])
    on_disk = {os.path.relpath(os.path.dirname(p), ROOT).replace(os.sep, ".")
               for top in ("proxyless_tf", "mobile")
               for p in glob.glob(os.path.join(ROOT, top, "**", "__init__.py"), recursive=True)}
    assert on_disk - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert listed - on_disk == {"proxyless_tf.configs"}
    assert cfg["tool"]["setuptools"]["package-dir"] == {"proxyless_tf.configs": "configs"}
    deps = " ".join(cfg["project"]["dependencies"])
    for name in ("tensorflow>=2.21,<2.22", "keras>=3.15,<4", "absl-py", "numpy", "ai-edge-litert", "PyYAML"):
        assert name in deps
    assert "pytest" not in deps  # a test dependency, not a runtime one


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    setuptools = pytest.importorskip("setuptools", reason="building the wheel offline needs setuptools in this venv")
    if tuple(int(p) for p in setuptools.__version__.split(".")[:2]) < (70, 1):
        pytest.importorskip("wheel", reason=f"setuptools {setuptools.__version__} builds wheels with the `wheel` package")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.tmp.*")
    for d in ("proxyless_tf", "mobile", "configs"):
        shutil.copytree(os.path.join(ROOT, d), src / d, ignore=ignore)
    for f in ("pyproject.toml", "README.md"):
        shutil.copyfile(os.path.join(ROOT, f), src / f)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "--disable-pip-version-check", "-q", "-w", str(tmp / "dist"), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = glob.glob(str(tmp / "dist" / "proxyless_tf-*.whl"))
    return path


def test_wheel_carries_configs_and_every_module(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = sorted(n[len("proxyless_tf/configs/"):] for n in names if n.startswith("proxyless_tf/configs/"))
    assert shipped == _configs_files()
    for want in ("quickstart.flags", "mobile.flags", "train_fashion_mnist.flags", "spaces/fashion_mnist.json",
                 "spaces/proxyless_mobile.json", "latency/pixel1_official.json", "latency/fashion_mnist_litert1.json"):
        assert want in shipped, want
    modules = sorted(os.path.relpath(p, ROOT).replace(os.sep, "/")
                     for top in ("proxyless_tf", "mobile")
                     for p in glob.glob(os.path.join(ROOT, top, "**", "*.py"), recursive=True))
    assert [m for m in modules if m not in names] == []
    assert not any(n.startswith(("tests/", "research/", "tools/", "configs/")) for n in names)
    meta = email.message_from_string(zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith(".dist-info/METADATA"))).decode())
    requires = meta.get_all("Requires-Dist")
    assert any(r.startswith("tensorflow") and "2.21" in r for r in requires), requires
    assert [r for r in requires if r.startswith("pytest")] == ['pytest>=8; extra == "test"']


def test_unpacked_wheel_resolves_flag_files_and_their_paths_from_anywhere(wheel, tmp_path):
    """As after a non-editable `pip install .`: the package's own configs/, from a directory with no checkout.

    quickstart.flags by name, its space by name (configs/spaces), and a table path that
    mobile.flags writes from the top (configs/latency/pixel1_official.json) all resolve
    inside site/proxyless_tf/configs; the runs stop at a one-line check that names them.
    """
    site, work = tmp_path / "site", tmp_path / "work"
    zipfile.ZipFile(wheel).extractall(site)
    work.mkdir()
    env = dict(os.environ, PYTHONPATH=str(site), TF_CPP_MIN_LOG_LEVEL="3")

    def run(*args):
        return subprocess.run([sys.executable, *args], cwd=work, env=env, capture_output=True, text=True,
                              timeout=300)

    proc = run("-c", "from proxyless_tf import cli; print(cli.ROOT); print(cli.CONFIGS)")
    assert proc.stdout.split() == [str(site / "proxyless_tf"), str(site / "proxyless_tf" / "configs")], proc.stderr
    fm = SearchSpace.from_json(os.path.join(ROOT, "configs", "spaces", "fashion_mnist.json"))
    table = synthetic_table(fm, 10)
    table.save(tmp_path / "t.json")
    lo, hi = table.latency_range(fm, 10)
    proc = run("-m", "proxyless_tf.search", "--flagfile=quickstart.flags", f"--latency_table={tmp_path}/t.json",
               f"--target_ms={hi * 3}", f"--out_dir={work}/quick")
    assert_one_line_error(proc, "outside the reachable range", f"{lo:.4g}", f"{hi:.4g}")
    proc = run("-m", "proxyless_tf.search", "--flagfile=mobile.flags", "--latency_num_classes=10",
               f"--out_dir={work}/mobile")
    assert_one_line_error(proc, str(site / "proxyless_tf" / "configs" / "latency" / "pixel1_official.json"),
                          "1000 classes, not 10")
    assert not (work / "mobile").exists()
