"""Search spaces and architectures: the one place that knows the op-name grammar.

A `SearchSpace` fixes everything but the per-layer op choice: stem, a fixed first block,
stages (width, depth, stride), the head and the candidate ops. An `Arch` is a space plus
one op name per searchable layer. Both serialise to JSON; an Arch embeds its space so a
published network (whose widths differ from the search space's) is self-describing.

Op names: `mb_k{k}_e{e}` (MBConv, kernel k, expand ratio e) and `zero` (the layer is
skipped: the residual block becomes identity). Latency keys, logs and plots use the
same names.
"""

import dataclasses
import hashlib
import json
import math
import os
import re

import numpy as np

from proxyless_tf.errors import ConfigError

ZERO = "zero"
_MB_RE = re.compile(r"^mb_k(\d+)_e(\d+(?:\.\d+)?)$")

# Limits checked by `SearchSpace` validation, before any layer or tensor is allocated: a typo
# such as 2560000 channels or a 100000-pixel input must be one error line, not a process that
# swallows all memory. Generous for real use: the published ProxylessNAS networks use at most
# 1792 channels, 224x224 inputs and 21 searchable layers.
MAX_CHANNELS = 4096      # any stem / block / stage / head width
MAX_RESOLUTION = 1024    # input height and width
MAX_DEPTH = 64           # layers of one stage
MAX_LAYERS = 64          # searchable layers of the whole space
MAX_WEIGHTS = 250_000_000  # weights of the supernet (every candidate of every layer): 1 GB float32
MAX_ACTIVATION = 1 << 27   # elements of the largest feature map of one image (512 MB float32)
MAX_JSON_BYTES = 64 << 20  # spaces, archs and latency tables are kilobytes; refuse to read a huge file
ALLOWED_KERNELS = (1, 3, 5, 7, 9)
ALLOWED_STRIDES = (1, 2)


@dataclasses.dataclass(frozen=True)
class OpSpec:
    """Decoded op name. `kernel`/`expand` are None for the zero op."""

    name: str
    kernel: int = None
    expand: float = None

    @property
    def is_zero(self):
        return self.name == ZERO


def op_name(kernel, expand):
    """Canonical name for an MBConv op (integer expand ratios print without '.0')."""
    e = int(expand) if float(expand).is_integer() else expand
    return f"mb_k{int(kernel)}_e{e}"


def parse_op(name, source=None, field="op"):
    """Decode an op name, or raise ConfigError naming where it came from."""
    if name == ZERO:
        return OpSpec(ZERO)
    m = _MB_RE.match(name) if isinstance(name, str) else None
    if not m:
        raise ConfigError(
            source, field, f"unknown op name {name!r}",
            "use 'zero' or 'mb_k{k}_e{e}', e.g. 'mb_k3_e6'")
    kernel, expand = int(m.group(1)), float(m.group(2))
    if kernel not in ALLOWED_KERNELS:
        raise ConfigError(source, field, f"kernel {kernel} in {name!r} is not supported",
                          f"use one of {ALLOWED_KERNELS}")
    if not 1 <= expand <= 16:
        raise ConfigError(source, field, f"expand ratio {expand:g} in {name!r} is out of range",
                          "use an expand ratio between 1 and 16")
    return OpSpec(name, kernel, expand)


def expanded_channels(in_channels, expand):
    """Width of the expanded (depthwise) part: round(in * e), no rounding to multiples of 8."""
    return int(round(in_channels * expand))


def conv_output_size(size, stride):
    """'same' padding output size."""
    return int(math.ceil(size / stride))


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """A searchable layer as the network sees it: where it sits and what it may be."""

    index: int
    stage: int
    in_hw: tuple
    in_channels: int
    out_channels: int
    stride: int
    candidates: tuple

    @property
    def out_hw(self):
        return tuple(conv_output_size(s, self.stride) for s in self.in_hw)

    @property
    def has_residual(self):
        return self.stride == 1 and self.in_channels == self.out_channels


def _require(d, key, kind, source, path):
    if not isinstance(d, dict):
        raise ConfigError(source, path or "<top>", f"expected an object, got {type(d).__name__}",
                          "see configs/spaces/*.json for the format")
    if key not in d:
        raise ConfigError(source, f"{path}.{key}" if path else key, "missing field",
                          f"add '{key}' (see configs/spaces/*.json)")
    v = d[key]
    full = f"{path}.{key}" if path else key
    if kind is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(source, full, f"expected an integer, got {v!r}", "write a whole number")
    elif kind is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(source, full, f"expected a number, got {v!r}", "write a finite number")
    elif kind is str:
        if not isinstance(v, str):
            raise ConfigError(source, full, f"expected a string, got {v!r}", "write a quoted string")
    elif kind is list:
        if not isinstance(v, list):
            raise ConfigError(source, full, f"expected a list, got {type(v).__name__}", "write a JSON list")
    elif kind is dict:
        if not isinstance(v, dict):
            raise ConfigError(source, full, f"expected an object, got {type(v).__name__}", "write a JSON object")
    return v


def _check_range(v, lo, hi, source, field, what):
    if not lo <= v <= hi:
        raise ConfigError(source, field, f"{what} {v} is out of range [{lo}, {hi}]",
                          f"use a value between {lo} and {hi}")
    return v


def read_json(path, what="file"):
    """Read a JSON file with one clear line for a missing, non-UTF-8, truncated or malformed file."""
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        if size > MAX_JSON_BYTES:
            raise ConfigError(path, "<file>", f"{what} is {size} bytes, more than the {MAX_JSON_BYTES} allowed",
                              "pass the right file (these files are kilobytes)")
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ConfigError(path, "<file>", f"{what} does not exist", "check the path") from None
    except IsADirectoryError:
        raise ConfigError(path, "<file>", "is a directory, not a JSON file", "pass the .json file") from None
    except OSError as e:
        raise ConfigError(path, "<file>", f"cannot be read ({e.strerror})", "check permissions") from None
    try:
        text = raw.decode("utf-8-sig")  # a BOM from a Windows editor is harmless
    except UnicodeDecodeError as e:
        raise ConfigError(path, "<file>", f"is not UTF-8 (byte {e.start})",
                          "save the file as UTF-8 JSON") from None
    if not text.strip():
        raise ConfigError(path, "<file>", "is empty", "regenerate or restore the file")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(path, f"line {e.lineno} column {e.colno}",
                          f"malformed or truncated JSON ({e.msg})",
                          "fix the JSON or regenerate the file") from None
    except RecursionError:
        raise ConfigError(path, "<file>", "JSON nested too deeply", "pass a real file of this kind") from None


def check_output_path(path, field="--out"):
    """Fail before any work if `path` cannot be written: it is a directory, or a parent is a file."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ConfigError(path, field, "is a directory", "pass a file name inside it")
    d = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(d):
        d = os.path.dirname(d)
    if not os.path.isdir(d):
        raise ConfigError(path, field, f"{d} is a file, not a directory", "pass a path inside a directory")
    if not os.access(d, os.W_OK):
        raise ConfigError(path, field, f"{d} is not writable", "pass a path in a writable directory")


def write_bytes_atomic(path, content):
    """Write bytes to a temporary file beside `path` and rename it: readers (and a rerun) see the
    old file or the whole new one, never half of one, even when the process is killed mid-write."""
    path = os.fspath(path)
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise ConfigError(path, "<file>", f"cannot be written ({e.strerror})",
                          "check the directory exists and is writable") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json_atomic(path, obj):
    """Write JSON to a temporary file and rename it, so a crash never leaves half a file."""
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode("utf-8"))


def write_text_atomic(path, text):
    """write_bytes_atomic for UTF-8 text (summaries, reports)."""
    write_bytes_atomic(path, text.encode("utf-8"))


class SearchSpace:
    """Everything about a network except the op of each searchable layer.

    Args:
        name: a short identifier, stored in latency tables to catch mismatches.
        input_shape: (H, W, C) of the network input.
        stem: dict(out_channels, kernel, stride) of the first plain conv (BN + ReLU6).
        first_block: dict(op, out_channels) of the fixed block after the stem.
        stages: list of dict(width, depth, stride); each layer of a stage is searchable.
        head: dict(out_channels) of the 1x1 conv before pooling and the classifier.
        candidates: op names every searchable layer may take; `zero` is added automatically
            to layers with stride 1 and equal in/out channels when `allow_zero` is true.
        allow_zero: whether identity (skip) is a candidate where shapes allow it.
        bn_eps: batch-norm epsilon of every BN layer.
    """

    def __init__(self, name, input_shape, stem, first_block, stages, head, candidates,
                 allow_zero=True, bn_eps=1e-3, source=None):
        self.source = source
        self.name = name
        self.input_shape = tuple(int(v) for v in input_shape)
        self.stem = dict(stem)
        self.first_block = dict(first_block)
        self.stages = [dict(s) if isinstance(s, dict) else s for s in stages]  # non-objects: _validate says so
        self.head = dict(head)
        self.candidates = tuple(candidates)
        self.allow_zero = bool(allow_zero)
        self.bn_eps = float(bn_eps)
        self._validate()
        self.layers = self._layout()
        self._check_budget()

    # ---- construction and validation -------------------------------------------------
    @classmethod
    def from_dict(cls, d, source=None):
        src = source
        if not isinstance(d, dict):
            raise ConfigError(src, "<top>", f"expected a JSON object, got {type(d).__name__}",
                              "see configs/spaces/*.json for the format")
        name = _require(d, "name", str, src, "")
        shape = _require(d, "input_shape", list, src, "")
        if len(shape) != 3 or any(isinstance(v, bool) or not isinstance(v, int) for v in shape):
            raise ConfigError(src, "input_shape", f"expected [H, W, C] integers, got {shape!r}",
                              "write e.g. [224, 224, 3]")
        stem = _require(d, "stem", dict, src, "")
        fb = _require(d, "first_block", dict, src, "")
        stages = _require(d, "stages", list, src, "")
        head = _require(d, "head", dict, src, "")
        cands = _require(d, "candidates", list, src, "")
        allow_zero = d.get("allow_zero", True)
        if not isinstance(allow_zero, bool):
            raise ConfigError(src, "allow_zero", f"expected true/false, got {allow_zero!r}", "write true or false")
        eps = d.get("bn_eps", 1e-3)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
            raise ConfigError(src, "bn_eps", f"expected a small positive number, got {eps!r}", "write e.g. 0.001")
        return cls(name, shape, stem, fb, stages, head, cands, allow_zero, eps, source=src)

    @classmethod
    def from_json(cls, path):
        return cls.from_dict(read_json(path, "search space file"), source=os.fspath(path))

    def _validate(self):
        src = self.source
        if not self.name or not re.match(r"^[A-Za-z0-9_.\-]+$", self.name):
            raise ConfigError(src, "name", f"{self.name!r} is not a simple identifier",
                              "use letters, digits, '_', '-', '.'")
        h, w, c = self.input_shape
        _check_range(h, 8, MAX_RESOLUTION, src, "input_shape[0]", "height")
        _check_range(w, 8, MAX_RESOLUTION, src, "input_shape[1]", "width")
        _check_range(c, 1, 16, src, "input_shape[2]", "channels")
        for key in ("out_channels", "kernel", "stride"):
            _require(self.stem, key, int, src, "stem")
        _check_range(self.stem["out_channels"], 1, MAX_CHANNELS, src, "stem.out_channels", "channels")
        if self.stem["kernel"] not in ALLOWED_KERNELS:
            raise ConfigError(src, "stem.kernel", f"kernel {self.stem['kernel']} is not supported",
                              f"use one of {ALLOWED_KERNELS}")
        if self.stem["stride"] not in ALLOWED_STRIDES:
            raise ConfigError(src, "stem.stride", f"stride {self.stem['stride']} is not supported",
                              f"use one of {ALLOWED_STRIDES}")
        fb_op = _require(self.first_block, "op", str, src, "first_block")
        if parse_op(fb_op, src, "first_block.op").is_zero:
            raise ConfigError(src, "first_block.op", "the fixed first block cannot be 'zero'",
                              "use an MBConv op such as 'mb_k3_e1'")
        _check_range(_require(self.first_block, "out_channels", int, src, "first_block"),
                     1, MAX_CHANNELS, src, "first_block.out_channels", "channels")
        if not self.stages:
            raise ConfigError(src, "stages", "no stages", "add at least one stage")
        if len(self.stages) > MAX_LAYERS:
            raise ConfigError(src, "stages", f"{len(self.stages)} stages, more than {MAX_LAYERS} layers in all",
                              f"use at most {MAX_LAYERS} searchable layers")
        for i, st in enumerate(self.stages):
            p = f"stages[{i}]"
            _check_range(_require(st, "width", int, src, p), 1, MAX_CHANNELS, src, f"{p}.width", "width")
            _check_range(_require(st, "depth", int, src, p), 1, MAX_DEPTH, src, f"{p}.depth", "depth")
            s = _require(st, "stride", int, src, p)
            if s not in ALLOWED_STRIDES:
                raise ConfigError(src, f"{p}.stride", f"stride {s} is not supported",
                                  f"use one of {ALLOWED_STRIDES}")
        total = sum(st["depth"] for st in self.stages)
        if total > MAX_LAYERS:
            raise ConfigError(src, "stages", f"{total} searchable layers in all, more than {MAX_LAYERS}",
                              f"lower the stage depths to at most {MAX_LAYERS} layers in all")
        _check_range(_require(self.head, "out_channels", int, src, "head"), 1, MAX_CHANNELS, src,
                     "head.out_channels", "channels")
        if not self.candidates:
            raise ConfigError(src, "candidates", "no candidate ops", "list ops like 'mb_k3_e6'")
        seen = set()
        for i, op in enumerate(self.candidates):
            spec = parse_op(op, src, f"candidates[{i}]")
            if spec.is_zero:
                raise ConfigError(src, f"candidates[{i}]", "'zero' is added automatically where allowed",
                                  "remove 'zero' and set allow_zero instead")
            if op in seen:
                raise ConfigError(src, f"candidates[{i}]", f"duplicate op {op!r}", "list each op once")
            seen.add(op)

    def _layout(self):
        h, w, _ = self.input_shape
        s = self.stem["stride"]
        hw = (conv_output_size(h, s), conv_output_size(w, s))
        c = self.first_block["out_channels"]
        layers = []
        for si, st in enumerate(self.stages):
            for j in range(st["depth"]):
                stride = st["stride"] if j == 0 else 1
                out = st["width"]
                cands = list(self.candidates)
                if self.allow_zero and stride == 1 and c == out:
                    cands.append(ZERO)
                layers.append(LayerSpec(len(layers), si, hw, c, out, stride, tuple(cands)))
                hw = tuple(conv_output_size(v, stride) for v in hw)
                c = out
        return tuple(layers)

    def _check_budget(self):
        """Refuse spaces whose supernet or feature maps could not be allocated (each width alone may
        be within limits while, say, 4096 channels x expand 16 at 1024x1024 is not)."""
        c0 = self.stem["out_channels"]
        weights = self.stem["kernel"] ** 2 * self.input_shape[2] * c0
        acts = [self.stem_out_hw[0] * self.stem_out_hw[1] * c0]
        fb = parse_op(self.first_block["op"])
        mid = expanded_channels(c0, fb.expand)
        weights += c0 * mid + fb.kernel ** 2 * mid + mid * self.first_block["out_channels"]
        acts.append(self.stem_out_hw[0] * self.stem_out_hw[1] * mid)
        for layer in self.layers:
            for op in layer.candidates:
                spec = parse_op(op)
                if spec.is_zero:
                    continue
                mid = expanded_channels(layer.in_channels, spec.expand)
                weights += layer.in_channels * mid + spec.kernel ** 2 * mid + mid * layer.out_channels
                acts.append(layer.in_hw[0] * layer.in_hw[1] * mid)
        weights += self.final_channels * self.head["out_channels"]
        if weights > MAX_WEIGHTS:
            raise ConfigError(self.source, "stages", f"the supernet would have {weights:,} weights, more than "
                              f"{MAX_WEIGHTS:,}", "use fewer or narrower layers, or smaller expand ratios")
        if max(acts) > MAX_ACTIVATION:
            raise ConfigError(self.source, "input_shape", f"a feature map would have {max(acts):,} elements per "
                              f"image, more than {MAX_ACTIVATION:,}", "use a smaller input or narrower layers")

    # ---- derived facts -------------------------------------------------------------------
    @property
    def num_layers(self):
        return len(self.layers)

    @property
    def stem_out_hw(self):
        s = self.stem["stride"]
        return tuple(conv_output_size(v, s) for v in self.input_shape[:2])

    @property
    def final_hw(self):
        return self.layers[-1].out_hw

    @property
    def final_channels(self):
        return self.layers[-1].out_channels

    def num_architectures(self):
        return int(np.prod([len(l.candidates) for l in self.layers], dtype=object))

    def to_dict(self):
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "stem": dict(self.stem),
            "first_block": dict(self.first_block),
            "stages": [dict(s) for s in self.stages],
            "head": dict(self.head),
            "candidates": list(self.candidates),
            "allow_zero": self.allow_zero,
            "bn_eps": self.bn_eps,
        }

    def fingerprint(self):
        """Short hash of everything that affects block shapes; tables store it to catch mismatches."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_json(self, path):
        write_json_atomic(path, self.to_dict())

    def sample(self, seed=None):
        """A uniformly random Arch of this space (seeded, reproducible)."""
        rng = np.random.default_rng(seed)
        return Arch(self, [str(rng.choice(l.candidates)) for l in self.layers])

    def __eq__(self, other):
        return isinstance(other, SearchSpace) and self.to_dict() == other.to_dict()

    def __hash__(self):
        return hash(self.fingerprint())

    def __repr__(self):
        return f"SearchSpace({self.name!r}, input={self.input_shape}, layers={self.num_layers})"


class Arch:
    """A space plus one op name per searchable layer; JSON embeds the space."""

    def __init__(self, space, ops, source=None):
        self.space = space
        self.source = source
        if isinstance(ops, (str, bytes)) or not isinstance(ops, (list, tuple)):
            raise ConfigError(source, "ops", f"expected a list of op names, got {type(ops).__name__}",
                              "write a JSON list like [\"mb_k3_e6\", \"zero\", ...]")
        self.ops = [o for o in ops]
        if len(self.ops) != space.num_layers:
            raise ConfigError(source, "ops", f"{len(self.ops)} op names for {space.num_layers} "
                              f"searchable layers of space {space.name!r}",
                              f"give exactly {space.num_layers} op names")
        for i, (op, layer) in enumerate(zip(self.ops, space.layers)):
            parse_op(op, source, f"ops[{i}]")
            if op not in layer.candidates:
                why = ("'zero' is only allowed where stride is 1 and in/out channels match"
                       if op == ZERO else f"not a candidate of space {space.name!r}")
                raise ConfigError(source, f"ops[{i}]", f"{op!r} at layer {i}: {why}",
                                  f"choose one of {list(layer.candidates)}")

    @classmethod
    def from_dict(cls, d, source=None):
        if not isinstance(d, dict):
            raise ConfigError(source, "<top>", f"expected a JSON object, got {type(d).__name__}",
                              "see configs/archs/*.json for the format")
        sp = _require(d, "space", dict, source, "")
        ops = _require(d, "ops", list, source, "")
        try:
            space = SearchSpace.from_dict(sp, source=source)
        except ConfigError as e:
            raise ConfigError(source, f"space.{e.field}", e.problem, e.fix) from None
        return cls(space, ops, source=source)

    @classmethod
    def from_json(cls, path):
        return cls.from_dict(read_json(path, "architecture file"), source=os.fspath(path))

    def to_dict(self):
        return {"space": self.space.to_dict(), "ops": list(self.ops)}

    def to_json(self, path):
        write_json_atomic(path, self.to_dict())

    def __eq__(self, other):
        return isinstance(other, Arch) and self.space == other.space and self.ops == other.ops

    def __repr__(self):
        return f"Arch({self.space.name!r}, {self.ops})"
