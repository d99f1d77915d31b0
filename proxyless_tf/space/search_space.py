"""Search spaces and architectures.

A `SearchSpace` fixes everything but the per-layer op choice: stem, a fixed first block,
stages (width, depth, stride), the head and the candidate ops. An `Arch` is a space plus
one op name per searchable layer. Both serialise to JSON; an Arch embeds its space so a
published network (whose widths differ from the search space's) is self-describing.

Op names are decoded by `proxyless_tf.space.ops`, the one place that knows the grammar.
"""

import dataclasses
import hashlib
import json
import math
import os
import re

import numpy as np

from proxyless_tf.errors import ConfigError
from proxyless_tf.files import read_json, write_json_atomic
from proxyless_tf.space.ops import ALLOWED_KERNELS, ZERO, conv_output_size, expanded_channels, parse_op

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
ALLOWED_STRIDES = (1, 2)


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
        if len(shape) == 3 and any(v is None for v in shape) and all(v is None or type(v) is int for v in shape):
            raise ConfigError(src, "input_shape", f"{shape!r} leaves the input open (null): a network needs its size",
                              "run the search, which takes the size from --resolution or the data, or write "
                              "integers, e.g. [224, 224, 3]")
        if len(shape) != 3 or any(isinstance(v, bool) or not isinstance(v, int) for v in shape):
            raise ConfigError(src, "input_shape", f"expected [H, W, C] integers, got {shape!r}",
                              "write e.g. [224, 224, 3] (or [null, null, 3] for a search that takes the size "
                              "from the data)")
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
