"""The hostile-input corpus: every case runs a real entry point and must fail like a good tool.

tests/bad_inputs/ holds malformed and adversarial files (truncated or non-UTF-8 JSON,
wrong types, absurd sizes, unknown ops, foreign latency tables, self-including flag files,
corrupt models, unsafe .keras archives, poisoned YAML, image folders that are no dataset);
tests/bad_inputs/cases.json says, per case, which entry point gets which arguments and what the
one error line must name (the file, the field, the fix). Each case must exit with code 2, print exactly one `error:` line and
no traceback, and leave no partial output: the paths in `absent` must not exist afterwards, and a
good file named in `unchanged` (copied there before) must be byte-identical, and a directory named
in `unchanged_tree` (a run directory set up before) must hold exactly the same files with the same
bytes; a case with `max_rss_mb` (the bombs) also asserts the peak resident memory of the entry
point's process stays below it. Files that would be huge, or cannot live in git (a FIFO, a 1000-file
flag chain, gzip and zip bombs), are made by `setup` in the case's own directory, as are copies of
shipped files with one value changed (`patch_json`) and a search's resume checkpoint for the case's
own flags (`search_state`); `env` sets environment variables (TF_CONFIG). The TFLite files a
benchmark must refuse were converted once from tf.Modules: no_inputs (a variable's cumsum, no
input), invoke_fails (a gather at index 100 of 4 values, known only at invoke), huge_tensor (a [1,
20000, 20000, 3] float input, 4.8 GB). Placeholders: {ROOT} the repo, {BAD} the corpus, {TMP} a
fresh directory, {SHARED} ../shared/data/proxylessnas.

Every case is a real subprocess, as a user would run it. Most fail before TensorFlow is
imported (the entry points check files first) and take a fraction of a second; the cases whose
processes import it say so (`"tensorflow": true`) and are marked slow, so the default test run
keeps the cheap majority. Every run checks that claim both ways from the processes' import log
(PYTHONPROFILEIMPORTTIME), so a case that starts or stops loading TensorFlow fails until it is
moved. The selected cases are started two at a time when the first one is needed, and each test
then checks its own result.
"""

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from conftest import ROOT, SHARED_DATA, assert_one_line_error, run_cli

BAD = os.path.join(ROOT, "tests", "bad_inputs")
ENTRY = {
    "search": ["-m", "proxyless_tf.search"],
    "train": ["-m", "proxyless_tf.train"],
    "build_latency_table": ["tools/build_latency_table.py"],
    "validate_latency": ["tools/validate_latency.py"],
    "export_tflite": ["tools/export_tflite.py"],
    "benchmark_tflite": ["tools/benchmark_tflite.py"],
    "import_proxyless_config": ["tools/import_proxyless_config.py"],
    "import_proxyless_lut": ["tools/import_proxyless_lut.py"],
    "count_macs": ["tools/count_macs.py"],
}

with open(os.path.join(BAD, "cases.json"), encoding="utf-8") as _f:
    CASES = json.load(_f)


def _sub(value, tmp):
    for k, v in (("{ROOT}", ROOT), ("{BAD}", BAD), ("{TMP}", tmp), ("{SHARED}", SHARED_DATA)):
        value = value.replace(k, v)
    return value


def _idx(path, array, truncate=False):
    """A gzip IDX file of uint8 `array` (optionally cut in half: a broken download)."""
    a = np.asarray(array, np.uint8)
    raw = bytes([0, 0, 8, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape) + a.tobytes()
    blob = gzip.compress(raw)
    with open(path, "wb") as f:
        f.write(blob[: len(blob) // 2] if truncate else blob)


def _fashion_dir(spec, tmp):
    """Tiny Fashion-MNIST files: the labels of the case, valid test files."""
    d = _sub(spec["dir"], tmp)
    os.makedirs(d)
    labels = spec["labels"]
    n = spec.get("images", len(labels))
    _idx(os.path.join(d, "train-images-idx3-ubyte.gz"), np.zeros((n, 28, 28)), spec.get("truncate_images", False))
    _idx(os.path.join(d, "train-labels-idx1-ubyte.gz"), labels)
    _idx(os.path.join(d, "t10k-images-idx3-ubyte.gz"), np.zeros((10, 28, 28)))
    _idx(os.path.join(d, "t10k-labels-idx1-ubyte.gz"), np.arange(10))


def _fake_adb(tmp):
    """tests/fake_adb.py as `adb` first on PATH, with one attached phone FAKE01."""
    state = os.path.join(tmp, "fake_adb_state")
    os.makedirs(os.path.join(state, "fs"))
    with open(os.path.join(state, "config.json"), "w") as f:
        json.dump({"devices": [{"serial": "FAKE01", "state": "device"}], "format": "new"}, f)
    bindir = os.path.join(tmp, "bin")
    os.makedirs(bindir)
    adb = os.path.join(bindir, "adb")
    with open(adb, "w") as f:
        f.write(f"#!{sys.executable}\nimport runpy, sys\nsys.argv[0] = 'adb'\n"
                f"runpy.run_path({os.path.join(ROOT, 'tests', 'fake_adb.py')!r}, run_name='__main__')\n")
    os.chmod(adb, 0o755)
    return {"PATH": bindir + os.pathsep + os.environ["PATH"], "FAKE_ADB_STATE": state, "ADB": adb}


def _gzip_idx(spec, tmp):
    """A gzip IDX file whose header declares `dims` followed by `data_bytes` zeros, written in
    chunks: a bomb of hundreds of MB unpacked is a few hundred KB on disk and in this process."""
    dims, n = spec["dims"], spec["data_bytes"]
    with gzip.open(_sub(spec["path"], tmp), "wb", compresslevel=9) as f:
        f.write(bytes([0, 0, 8, len(dims)]) + b"".join(int(d).to_bytes(4, "big") for d in dims))
        chunk = bytes(1 << 20)
        while n > 0:
            f.write(chunk[:min(n, len(chunk))])
            n -= len(chunk)


def _zip_bomb(spec, tmp):
    """A .keras-looking zip whose weights member is `member_mb` MB of zeros (~1000x compression)."""
    import zipfile

    with zipfile.ZipFile(_sub(spec["path"], tmp), "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        z.writestr("config.json", json.dumps({"class_name": "Sequential", "config": {}}))
        with z.open("model.weights.h5", "w", force_zip64=True) as f:
            chunk = bytes(1 << 20)
            for _ in range(spec["member_mb"]):
                f.write(chunk)


def _flag_chain(spec, tmp):
    """`depth` flag files, each including the next (the last sets a harmless flag)."""
    d = _sub(spec["dir"], tmp)
    os.makedirs(d)
    n = spec["depth"]
    for i in range(n):
        with open(os.path.join(d, f"f{i}.flags"), "w") as f:
            f.write(f"--flagfile={os.path.join(d, f'f{i + 1}.flags')}\n" if i + 1 < n else "--epochs=1\n")


def _patch_json(spec, tmp):
    """A copy of a JSON file with some values replaced: [src, dst, [[[key, ...], value], ...]]."""
    src, dst, changes = spec
    with open(_sub(src, tmp), encoding="utf-8") as f:
        obj = json.load(f)
    for path, value in changes:
        node = obj
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
    dst = _sub(dst, tmp)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with open(dst, "w", encoding="utf-8") as f:
        json.dump(obj, f)


def _search_state(spec, tmp):
    """A search's resume checkpoint that belongs to the case's command (state.json carries the
    fingerprint of `values`, the SearchConfig the CLI builds from the case's flags), whose weights
    file is `weights`: the run gets past the configuration check to the file under test."""
    from proxyless_tf.search.config import SearchConfig

    d = _sub(spec["dir"], tmp)
    os.makedirs(d, exist_ok=True)
    values = {k: _sub(v, tmp) if isinstance(v, str) else v for k, v in spec["values"].items()}
    config = json.loads(json.dumps(SearchConfig(**values).fingerprint(), default=str))
    tag = "00001-00000005"
    shutil.copyfile(_sub(spec["weights"], tmp), os.path.join(d, f"state-{tag}.weights.h5"))
    np.savez(os.path.join(d, f"state-{tag}.npz"), num_rng=0, num_metrics=0)
    with open(os.path.join(d, "state.json"), "w", encoding="utf-8") as f:
        json.dump({"epoch": 1, "step": 5, "weights": f"state-{tag}.weights.h5", "arrays": f"state-{tag}.npz",
                   "config": config, "extra": {"alpha_history": [], "saved_epoch": 0}}, f)


def _png_bytes(h, w, channels, value):
    """A valid 8-bit PNG (gray or RGB) of one colour, written without an imaging library."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + bytes([value % 256]) * (w * channels)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0 if channels == 1 else 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(row * h))
            + chunk(b"IEND", b""))


def _image_folder(spec, tmp):
    """DIR/<class>/<i>.png for each class of the spec: count, size, channels, truncate (cut in half)."""
    root = _sub(spec["dir"], tmp)
    for name, c in spec["classes"].items():
        os.makedirs(os.path.join(root, name))
        for i in range(c["count"]):
            blob = _png_bytes(c["size"][0], c["size"][1], c["channels"], 40 * i)
            with open(os.path.join(root, name, f"{i}.png"), "wb") as f:
                f.write(blob[: len(blob) // 2] if c.get("truncate") else blob)


def _setup(case, tmp):
    setup = case.get("setup", {})
    for d in setup.get("mkdir", []):
        os.makedirs(_sub(d, tmp))
    for src, dst in setup.get("copy", []):
        dst = _sub(dst, tmp)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copyfile(_sub(src, tmp), dst)
    if "sparse" in setup:
        path, size = setup["sparse"]
        with open(_sub(path, tmp), "wb") as f:
            f.truncate(size)  # sparse: no disk space, but a size no JSON reader should load
    if "fashion" in setup:
        _fashion_dir(setup["fashion"], tmp)
    if "image_folder" in setup:
        _image_folder(setup["image_folder"], tmp)
    if "gzip_idx" in setup:  # after "fashion": replaces one of its files
        _gzip_idx(setup["gzip_idx"], tmp)
    if "zip_bomb" in setup:
        _zip_bomb(setup["zip_bomb"], tmp)
    if "flag_chain" in setup:
        _flag_chain(setup["flag_chain"], tmp)
    for path in setup.get("fifo", []):  # a named pipe: reading it would block forever
        os.mkfifo(_sub(path, tmp))
    for spec in setup.get("patch_json", []):
        _patch_json(spec, tmp)
    if "search_state" in setup:
        _search_state(setup["search_state"], tmp)
    env = {k: _sub(v, tmp) for k, v in case.get("env", {}).items()}
    return dict(env, **_fake_adb(tmp)) if case.get("fake_adb") else env


# Runs the entry point as its child and reports the child's peak resident memory on stderr.
_PEAK_RSS = ("import resource, subprocess, sys\n"
             "r = subprocess.run([sys.executable] + sys.argv[1:])\n"
             "print(f'peak_rss_kb={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}', file=sys.stderr)\n"
             "sys.exit(r.returncode)\n")


def test_corpus_is_big_and_every_case_names_an_entry_point():
    files = [f for f in os.listdir(BAD) if f != "cases.json"]
    assert len(files) >= 40, len(files)
    assert len(CASES) >= 40
    assert len({c["id"] for c in CASES}) == len(CASES)
    assert {c["entry"] for c in CASES} == set(ENTRY)
    # the default run (cases that fail before TensorFlow loads) still reaches every entry point
    assert {c["entry"] for c in CASES if not c.get("tensorflow")} == set(ENTRY)
    used = " ".join(" ".join(c["args"] + c["needles"]) + json.dumps(c.get("setup", {})) for c in CASES)
    unused = [f for f in files if f not in used]
    assert not unused, f"corpus files no case uses: {unused}"


def _runnable(case):
    """A case that reads the official files ({SHARED}) runs only where ../shared exists (CI has it)."""
    return os.path.isdir(SHARED_DATA) or "{SHARED}" not in json.dumps(case)


def _tree(root):
    """{relative path: bytes} of every file under `root`: a run directory, compared whole."""
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            with open(os.path.join(d, n), "rb") as f:
                out[os.path.relpath(os.path.join(d, n), root)] = f.read()
    return out


class _Run:
    """One case set up in its own directory and running (or finished) in the background."""

    def __init__(self, case, tmp, pool):
        self.tmp = tmp
        env = _setup(case, tmp)
        self.before = {}
        for p in case.get("unchanged", []):
            with open(_sub(p, tmp), "rb") as f:
                self.before[p] = f.read()
        self.trees = {p: _tree(_sub(p, tmp)) for p in case.get("unchanged_tree", [])}
        args = ENTRY[case["entry"]] + [_sub(a, tmp) for a in case["args"]]
        if "max_rss_mb" in case:
            args = ["-c", _PEAK_RSS] + args
        env["PYTHONPROFILEIMPORTTIME"] = "1"  # each process logs its imports: did TensorFlow load?
        self.future = pool.submit(run_cli, args, cwd=ROOT, timeout=300, **env)


_IMPORT_LINE = "import time:"
# one line of the import log: "import time: <self us> | <cumulative us> | <indent>tensorflow"
_TF_IMPORTED = re.compile(r"^import time:\s*\d+ \|\s*\d+ \|\s*tensorflow$", re.M)


def _without_import_log(proc):
    """(whether any process of the case imported TensorFlow, the result with its own stderr only)."""
    kept = "\n".join(l for l in proc.stderr.splitlines() if not l.startswith(_IMPORT_LINE))
    return bool(_TF_IMPORTED.search(proc.stderr)), subprocess.CompletedProcess(proc.args, proc.returncode,
                                                                              proc.stdout, kept)


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory):
    """Start every selected case (two processes at a time); tests wait for their own."""
    # this module's cases only: other modules parametrize their own "case" (test_train.py: strings)
    selected = {item.callspec.params["case"]["id"] for item in request.session.items
                if item.module is request.module and getattr(item, "callspec", None)
                and isinstance(item.callspec.params.get("case"), dict)}
    pool = ThreadPoolExecutor(max_workers=2)
    started = {c["id"]: _Run(c, str(tmp_path_factory.mktemp(c["id"][:40])), pool)
               for c in CASES if c["id"] in selected and _runnable(c)}
    yield started
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize("case", [pytest.param(c, id=c["id"], marks=[pytest.mark.slow] if c.get("tensorflow") else [])
                                  for c in CASES])
def test_bad_input_is_one_error_line(case, runs):
    if case["id"] not in runs:
        pytest.skip(f"{SHARED_DATA} is absent: the official reference files live in ../shared beside the checkout")
    run = runs[case["id"]]
    tmp, before = run.tmp, run.before
    loaded_tf, proc = _without_import_log(run.future.result())
    line = assert_one_line_error(proc, *[_sub(n, tmp) for n in case["needles"]])
    assert "(fix: " in line, line
    for p in case.get("absent", []):
        path = os.path.join(ROOT, _sub(p, tmp))
        assert not os.path.exists(path), f"{case['id']} left {path} behind"
    for p, content in before.items():
        with open(_sub(p, tmp), "rb") as f:
            assert f.read() == content, f"{case['id']} changed {p}"
    for p, files in run.trees.items():  # an existing run directory: no file added, changed or removed
        assert _tree(_sub(p, tmp)) == files, f"{case['id']} changed the run directory {p}"
    left = [f for f in os.listdir(tmp) if ".tmp." in f]
    assert not left, left
    if "max_rss_mb" in case:  # a bomb is refused before it is unpacked
        peak_kb = int(proc.stderr.rsplit("peak_rss_kb=", 1)[1].split()[0])
        assert peak_kb < case["max_rss_mb"] * 1024, f"{case['id']}: peak {peak_kb / 1024:.0f} MB"
    assert loaded_tf == case.get("tensorflow", False), (
        f"{case['id']}: its entry point {'imports' if loaded_tf else 'no longer imports'} TensorFlow before it fails; "
        f"{'set' if loaded_tf else 'drop'} \"tensorflow\": true in cases.json (that case then runs with the slow set)")
