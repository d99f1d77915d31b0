"""The op-name grammar, in one place: `mb_k{k}_e{e}` (MBConv, kernel k, expand ratio e) and
`zero` (the layer is skipped: a residual block becomes identity). Spaces, archs, latency keys,
logs and plots all decode names here, so one op has one spelling everywhere."""

import dataclasses
import math
import re

from proxyless_tf.errors import ConfigError

ZERO = "zero"
_MB_RE = re.compile(r"^mb_k(\d{1,4})_e(\d{1,4}(?:\.\d{1,8})?)$")  # bounded: int() of 5000 digits raises

ALLOWED_KERNELS = (1, 3, 5, 7, 9)


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


def _shown(name):
    """repr of a name, cut to a readable length (a hostile file may hold megabytes in one string)."""
    r = repr(name)
    return r if len(r) <= 60 else r[:56] + "...'"


def parse_op(name, source=None, field="op"):
    """Decode an op name, or raise ConfigError naming where it came from."""
    if name == ZERO:
        return OpSpec(ZERO)
    m = _MB_RE.match(name) if isinstance(name, str) else None
    if not m:
        raise ConfigError(
            source, field, f"unknown op name {_shown(name)}",
            "use 'zero' or 'mb_k{k}_e{e}', e.g. 'mb_k3_e6'")
    kernel, expand = int(m.group(1)), float(m.group(2))
    if kernel not in ALLOWED_KERNELS:
        raise ConfigError(source, field, f"kernel {kernel} in {name!r} is not supported",
                          f"use one of {ALLOWED_KERNELS}")
    if not 1 <= expand <= 16:
        raise ConfigError(source, field, f"expand ratio {expand:g} in {name!r} is out of range",
                          "use an expand ratio between 1 and 16")
    canonical = op_name(kernel, expand)
    if name != canonical:  # 'mb_k03_e6', 'mb_k3_e6.0', fullwidth digits: one op, one spelling
        raise ConfigError(source, field, f"{name!r} is not the canonical spelling of this op",
                          f"write it as {canonical!r}")
    return OpSpec(name, kernel, expand)


def expanded_channels(in_channels, expand):
    """Width of the expanded (depthwise) part: round(in * e), no rounding to multiples of 8."""
    return int(round(in_channels * expand))


def conv_output_size(size, stride):
    """'same' padding output size."""
    return int(math.ceil(size / stride))
