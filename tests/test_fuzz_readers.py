"""Property-based fuzzing of every reader a command uses on a user's file (hypothesis).

The property is the project's rule for bad input: whatever the bytes, a reader returns a valid
object or raises `ConfigError` (one line: file, field, fix); any other exception is a bug that
would reach the user as a traceback (or, since errors.run_cli, as an internal-error report).
Inputs are random bytes and structured mutations of the shipped files (a subtree replaced by a
hostile value, a key dropped, a byte flipped), so the fuzzer gets past the JSON parser into each
file's own validation.

Fixed seed (`derandomize=True`): CI sees the same examples on every run, and a failure
reproduces. The default budget keeps this file to a few seconds; the `slow`-marked variants run
the same properties with a larger budget (with the slow set: `-m slow`, as CI runs it). What they found is in tests/bad_inputs (cases `fuzz_*`).
"""

import copy
import gzip
import json
import math
import os
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT
from proxyless_tf.cli.flagfiles import check_flagfiles
from proxyless_tf.data.idx import read_idx
from proxyless_tf.errors import ConfigError
from proxyless_tf.latency.official import load_official_yaml
from proxyless_tf.latency.table import LatencyTable
from proxyless_tf.space import Arch, SearchSpace, op_name, parse_op

FAST = settings(derandomize=True, max_examples=60, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SLOW = settings(FAST, max_examples=int(os.environ.get("PROXYLESS_FUZZ_EXAMPLES", 400)))

SPACE = os.path.join(ROOT, "configs", "spaces", "fashion_mnist.json")
ARCH = os.path.join(ROOT, "configs", "archs", "fashion_mnist_example.json")
TABLE = os.path.join(ROOT, "configs", "latency", "fashion_mnist_litert1.json")
_DIR = tempfile.mkdtemp(prefix="proxyless_fuzz_")


def _load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


VALID = {"space": _load(SPACE), "arch": _load(ARCH), "table": _load(TABLE)}

# Values a hostile or careless file puts where a number, a name or an object belongs.
hostile_scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-2**70, max_value=2**70),
    st.sampled_from([0, -1, 10**30, 2**63, -2**63]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["mb_k3_e6", "mb_k03_e6", "mb_k\uff13_e6", "mb_k3_e6.0", "zero", "ZERO", "mb_k3_e6\n",
                     "mb_k9999999999_e6", "", "nan", "1e999", "../../etc/passwd"]),
)
# Raw JSON text no json.dumps of a Python value produces: a 5000-digit integer (past Python's
# int-conversion limit), a duplicate key, nesting deep and very deep, a lone surrogate.
hostile_raw = st.sampled_from(["9" * 5000, "-" + "9" * 4400, "1" * 41, '{"a": 1, "a": 2}', "[" * 40 + "]" * 40,
                               "[" * 3000 + "]" * 3000, "1e999", "-Infinity", "NaN", '"\\ud800"', "1.5e-400",
                               '"mb_k\\uff13_e6"'])
hostile_values = st.recursive(hostile_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=8)


def _paths(obj, prefix=()):
    """Every path (tuple of keys/indices) to a node of a JSON object, without recursion."""
    out, stack = [], [(obj, prefix)]
    while stack:
        o, p = stack.pop()
        out.append(p)
        if isinstance(o, dict):
            stack.extend((v, p + (k,)) for k, v in o.items())
        elif isinstance(o, list):
            stack.extend((v, p + (i,)) for i, v in enumerate(o))
    return out


@st.composite
def mutated(draw, kind):
    """A valid file of `kind` with one to three nodes replaced, dropped or duplicated."""
    obj, raws = copy.deepcopy(VALID[kind]), []
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(obj) if p]
        path = draw(st.sampled_from(sorted(paths, key=repr)))
        parent = obj
        for k in path[:-1]:
            parent = parent[k]
        action = draw(st.sampled_from(["replace", "replace", "drop", "wrap", "raw"]))
        if action == "raw":
            parent[path[-1]] = "@@RAW%d@@" % len(raws)
            raws.append(draw(hostile_raw))
        elif action == "replace":
            parent[path[-1]] = draw(hostile_values)
        elif action == "drop":
            del parent[path[-1]]
        else:
            parent[path[-1]] = [parent[path[-1]]]
    text = json.dumps(obj, allow_nan=True)
    for i, raw in enumerate(raws):
        text = text.replace(f'"@@RAW{i}@@"', raw)
    return text.encode()


@st.composite
def byte_mutated(draw, kind):
    """The valid file's bytes with a few bytes flipped, inserted or cut."""
    raw = bytearray(json.dumps(VALID[kind], indent=1).encode())
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(raw) - 1))
        op = draw(st.sampled_from(["flip", "insert", "cut", "token"]))
        if op == "token":
            raw[i:i] = draw(hostile_raw).encode()
        elif op == "flip":
            raw[i] = draw(st.integers(0, 255))
        elif op == "insert":
            raw[i:i] = draw(st.binary(min_size=1, max_size=8))
        else:
            del raw[i:i + draw(st.integers(1, 64))]
    return bytes(raw)


def _write(name, content):
    path = os.path.join(_DIR, name)
    with open(path, "wb") as f:
        f.write(content)
    return path


def _valid_or_config_error(fn, *args):
    try:
        return fn(*args)
    except ConfigError as e:
        assert str(e) and "\n" not in str(e), repr(str(e))
        return None


def _space(content):
    sp = _valid_or_config_error(SearchSpace.from_json, _write("space.json", content))
    if sp is not None:  # an accepted space is usable: it samples an arch, it has a fingerprint
        assert len(sp.sample(seed=0).ops) == sp.num_layers
        assert sp.fingerprint()


def _arch(content):
    _valid_or_config_error(Arch.from_json, _write("arch.json", content))


_TABLE_ARCH = Arch.from_json(ARCH)


def _table(content):
    def load_and_predict(path):
        t = LatencyTable.load(path)
        t.check_space(_TABLE_ARCH.space, 10)
        ms = t.predict(_TABLE_ARCH, 10)
        assert isinstance(ms, float) and math.isfinite(ms), ms
        if t.device.get("backend") == "litert":  # the backend validation and --derive_measure rebuild from it
            from proxyless_tf.latency.backends import make_backend
            from proxyless_tf.latency.measured_derivation import MEASURABLE

            make_backend("litert", **{k: t.device[k] for k in MEASURABLE["litert"] if k in t.device})
        return t

    _valid_or_config_error(load_and_predict, _write("table.json", content))


_CHECKS = {"space": _space, "arch": _arch, "table": _table}
inputs = st.sampled_from(sorted(_CHECKS)).flatmap(
    lambda kind: st.tuples(st.just(kind), st.one_of(mutated(kind), byte_mutated(kind), st.binary(max_size=200))))


def _json_property(case):
    kind, content = case
    _CHECKS[kind](content)


@FAST
@given(inputs)
def test_json_readers_return_a_valid_object_or_one_config_error(case):
    _json_property(case)


@pytest.mark.slow
@SLOW
@given(inputs)
def test_json_readers_slow(case):
    _json_property(case)


# ---- op names ----------------------------------------------------------------------------------

op_like = st.one_of(
    st.text(max_size=16),
    st.builds(lambda k, e: f"mb_k{k}_e{e}", st.text("0123456789\uff10\uff13\u0663.", min_size=1, max_size=5),
              st.text("0123456789\uff16.", min_size=1, max_size=5)))


@FAST
@given(op_like)
def test_parse_op_accepts_only_canonical_spellings(name):
    spec = _valid_or_config_error(parse_op, name)
    if spec is not None and not spec.is_zero:
        assert name == op_name(spec.kernel, spec.expand)  # one op, one spelling
        assert name.isascii()


# ---- flag files, IDX, YAML -----------------------------------------------------------------------

flag_lines = st.lists(st.one_of(
    st.sampled_from(["--epochs=3", "--flagfile=a.flags", "--flagfile=b.flags", "--flagfile", "a.flags",
                     "--flagfile=", "--flagfile=/dev/null", "--flagfile=missing.flags", "# comment", ""]),
    st.text(max_size=20)), max_size=6)


def _flags_property(a, raw):
    """a.flags holds generated lines (its --flagfile names resolve here); b.flags holds raw bytes."""
    text = "\n".join(a).replace("a.flags", os.path.join(_DIR, "a.flags")).replace(
        "b.flags", os.path.join(_DIR, "b.flags"))
    _write("a.flags", text.encode("utf-8", "surrogatepass"))
    _write("b.flags", raw)
    _valid_or_config_error(check_flagfiles, [f"--flagfile={os.path.join(_DIR, 'a.flags')}"])


@FAST
@given(flag_lines, st.binary(max_size=64))
def test_flag_files_pass_or_fail_with_one_line(a, raw):
    _flags_property(a, raw)


def _idx_bytes(draw_header, body, compress):
    raw = draw_header + body
    return gzip.compress(raw, 1) if compress else raw


idx_inputs = st.tuples(
    st.one_of(st.binary(max_size=20),
              st.builds(lambda nd, dims: bytes([0, 0, 8, nd]) + b"".join(d.to_bytes(4, "big") for d in dims),
                        st.integers(0, 6), st.lists(st.integers(0, 2**32 - 1), max_size=6))),
    st.binary(max_size=64), st.booleans())


def _idx_property(case):
    header, body, compress = case
    path = _write("x-idx1-ubyte.gz" if compress else "x-idx1-ubyte", _idx_bytes(header, body, compress))
    a = _valid_or_config_error(read_idx, path)
    if a is not None:  # an accepted file is exactly what its header declares
        assert a.size == len(header) - 4 - 4 * header[3] + len(body) and list(a.shape) == [
            int.from_bytes(header[4 + 4 * i:8 + 4 * i], "big") for i in range(header[3])]


@FAST
@given(idx_inputs)
def test_idx_reader_returns_an_array_or_one_config_error(case):
    _idx_property(case)


yaml_text = st.one_of(
    st.text(max_size=80),
    st.builds(lambda k, mean, count, extra: f"{k}:\n  mean: {mean}\n  count: {count}\n{extra}",
              st.sampled_from(["Conv-input:224x224x3-output:112x112x32", "[a, b]", "? [x]", "&a k", "*a"]),
              st.sampled_from(["0.5", "-1", "nan", ".inf", "1e999", "9" * 5000, "'3'", "[1]", "~"]),
              st.sampled_from(["1", "0", "true", "9" * 4000, "1.5"]),
              st.sampled_from(["", "  var: -1\n", "  var: .nan\n", "x: *y\n", "- 1\n", "[" * 50 + "]" * 50])))


def _yaml_property(text):
    _valid_or_config_error(load_official_yaml, _write("lut.yaml", text.encode("utf-8", "surrogatepass")))


@FAST
@given(yaml_text)
def test_official_yaml_reader_returns_a_table_or_one_config_error(text):
    _yaml_property(text)


@pytest.mark.slow
@SLOW
@given(yaml_text, idx_inputs, flag_lines, st.binary(max_size=64))
def test_yaml_idx_and_flag_files_slow(text, idx, a, raw):
    _yaml_property(text)
    _idx_property(idx)
    _flags_property(a, raw)


def test_readers_refuse_what_is_not_a_regular_file():
    """/dev/zero would never end and a FIFO would block forever; both are refused before opening."""
    from proxyless_tf import readers

    for reader in (readers.read_json, lambda p: readers.read_yaml(p), read_idx,
                   lambda p: check_flagfiles([f"--flagfile={p}"])):
        with pytest.raises(ConfigError, match="is a device, not a regular file"):
            reader("/dev/zero")
    fifo = os.path.join(_DIR, "pipe.json")
    if not os.path.exists(fifo):
        os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="is a named pipe, not a regular file"):
        readers.read_json(fifo)
