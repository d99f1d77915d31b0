"""`LatencyTable`: per-block latencies of one device, prediction and the search's expectation.

A table is a JSON file: the device it was measured on, the space it was built for (name
and fingerprint, to catch a table used with the wrong space), one entry per key with
median / p5 / p95 / count in milliseconds, and an optional calibration that maps the sum
of block medians to a whole-network latency (whole networks are not exactly the sum of
their blocks). A calibration may carry per-(layer, op) corrections fitted on measured
networks (corrections.py); such a table is written as format 2, so an older reader refuses
it rather than predict without them. Format 1 tables load and predict as they always did.
"""

import dataclasses
import math
import os

import numpy as np
from proxyless_tf import files as files_lib

from proxyless_tf import space as space_lib
from proxyless_tf.errors import ConfigError
from proxyless_tf.latency import keys as keys_lib

FORMAT_VERSION = 2  # written only when the calibration has corrections; 1 otherwise
READ_FORMATS = (1, 2)
# Which summary of each entry predictions use. p5 (the fast tail) is what new host LiteRT
# tables use: measured twice on a quiet host, whole networks' p5 repeated to a median 1.3 %
# (89 % within ±5 %), floor 2.5 % (67 %), median 15.5 % (33 %; it drifts with the VM). The
# median is the default of a table that says nothing. `floor` (the median over
# timing rounds of each round's fastest run) is what the host LiteRT backend uses: on this
# VM whole seconds run 20-50 % slower at random (the hypervisor), which moves every
# percentile of a round, while the fastest run of an undisturbed round repeats to ~2 %.
STATISTICS = ("median", "p5", "floor")
FILL_COMMAND = "python tools/build_latency_table.py --space=SPACE.json --out={path}"


@dataclasses.dataclass
class LatencyStats:
    """Summary of repeated timings of one piece, in milliseconds."""

    median: float
    p5: float
    p95: float
    count: int
    floor: float | None = None  # median over rounds of each round's minimum (None: not recorded)

    @classmethod
    def from_samples(cls, samples_ms):
        a = np.asarray(samples_ms, dtype=np.float64)
        return cls(float(np.median(a)), float(np.percentile(a, 5)), float(np.percentile(a, 95)), int(a.size),
                   float(a.min()))

    @classmethod
    def from_rounds(cls, rounds_ms):
        """Stats of timings taken in separate rounds: floor = median of the rounds' minima."""
        stats = cls.from_samples(np.concatenate([np.asarray(r, dtype=np.float64) for r in rounds_ms]))
        stats.floor = float(np.median([np.min(r) for r in rounds_ms]))
        return stats

    def to_dict(self):
        d = dataclasses.asdict(self)
        if d["floor"] is None:
            del d["floor"]
        return d


def _entry_from_dict(d, source, key):
    field = f"entries[{key!r}]"
    if not isinstance(d, dict):
        raise ConfigError(source, field, "expected an object with median/p5/p95/count", "rebuild the table")
    vals = {}
    for name in ("median", "p5", "p95", "count", "floor"):
        v = d.get(name)
        if name == "floor" and v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ConfigError(source, f"{field}.{name}", f"expected a non-negative number, got {v!r}",
                              "rebuild this entry with tools/build_latency_table.py")
        vals[name] = v
    floor = vals.get("floor")
    return LatencyStats(float(vals["median"]), float(vals["p5"]), float(vals["p95"]), int(vals["count"]),
                        None if floor is None else float(floor))


class LatencyTable:
    """Block latencies of one device.

    Args:
        device: dict describing where it was measured (backend, threads, versions, host, date).
        entries: dict key -> LatencyStats.
        num_classes: classifier width the head entries were measured with.
        space_name, space_fingerprint: the space the table was built for (None for imported
            tables that are matched by keys alone).
        calibration: None, or dict(kind="linear", scale=a, offset=b, per_block=c (optional),
            corrections=... (optional, corrections.py), ...): predicted = a * sum_of_medians +
            c * non_zero_layers + b (+ Σ_l δ[l][op_l]). Other keys (fit set size, held-out
            metrics) are kept as they are.
        path: where it was loaded from / will be saved to (used in error messages).
        statistic: 'median' (default), 'p5' or 'floor': the summary of each entry that lookups,
            predictions and the calibration use; whole networks are validated with the same.
    """

    def __init__(self, device, entries=None, num_classes=None, space_name=None, space_fingerprint=None,
                 calibration=None, path=None, statistic="median"):
        self.device = dict(device)
        self.entries = dict(entries or {})
        self.num_classes = num_classes
        self.space_name = space_name
        self.space_fingerprint = space_fingerprint
        self.calibration = calibration
        self.path = os.fspath(path) if path is not None else None
        if statistic not in STATISTICS:
            raise ValueError(f"statistic must be one of {STATISTICS}, not {statistic!r}")
        self.statistic = statistic

    # ---- I/O ------------------------------------------------------------------------------
    def to_dict(self):
        return {
            "format": FORMAT_VERSION if (self.calibration or {}).get("corrections") else 1,
            "device": self.device,
            "space": {"name": self.space_name, "fingerprint": self.space_fingerprint},
            "num_classes": self.num_classes,
            "statistic": self.statistic,
            "calibration": self.calibration,
            "entries": {k: v.to_dict() for k, v in self.entries.items()},
        }

    def save(self, path=None):
        path = os.fspath(path or self.path)
        files_lib.write_json_atomic(path, self.to_dict())
        self.path = path

    @classmethod
    def from_dict(cls, d, source=None):
        if not isinstance(d, dict):
            raise ConfigError(source, "<top>", "expected a JSON object", "pass a latency table JSON file")
        if d.get("format") not in READ_FORMATS:
            raise ConfigError(source, "format", f"unsupported table format {d.get('format')!r}",
                              f"rebuild the table (format {FORMAT_VERSION})")
        device = d.get("device")
        if not isinstance(device, dict):
            raise ConfigError(source, "device", "missing device description", "rebuild the table")
        check_device(device, source)
        entries_raw = d.get("entries")
        if not isinstance(entries_raw, dict):
            raise ConfigError(source, "entries", "missing or not an object", "rebuild the table")
        entries = {k: _entry_from_dict(v, source, k) for k, v in entries_raw.items()}
        sp = d.get("space") or {}
        if not isinstance(sp, dict):
            raise ConfigError(source, "space", "expected an object with name and fingerprint", "rebuild the table")
        nc = d.get("num_classes")
        if nc is not None and (isinstance(nc, bool) or not isinstance(nc, int)
                               or not 1 <= nc <= space_lib.MAX_CLASSES):
            raise ConfigError(source, "num_classes", f"expected an integer from 1 to {space_lib.MAX_CLASSES}, got "
                              f"{repr(nc)[:40]}", "rebuild the table")
        cal = d.get("calibration")
        if cal is not None:
            _check_calibration(cal, source)
        stat = d.get("statistic", "median")
        if stat not in STATISTICS:
            raise ConfigError(source, "statistic", f"expected one of {list(STATISTICS)}, got {stat!r}",
                              "write \"median\", \"p5\" or \"floor\"")
        if stat == "floor":
            missing = [k for k, v in entries.items() if v.floor is None]
            if missing:
                raise ConfigError(source, f"entries[{missing[0]!r}].floor",
                                  "the table's statistic is 'floor' but this entry has none",
                                  "rebuild the entry with tools/build_latency_table.py, or set \"statistic\": \"median\"")
        return cls(device, entries, nc, sp.get("name"), sp.get("fingerprint"), cal, path=source,
                   statistic=stat)

    @classmethod
    def load(cls, path):
        return cls.from_dict(files_lib.read_json(path, "latency table"), source=os.fspath(path))

    # ---- lookup ---------------------------------------------------------------------------
    def _fill_hint(self):
        cmd = FILL_COMMAND.format(path=self.path or "TABLE.json")
        backend = self.device.get("backend")
        if backend in ("litert", "adb", "tf"):  # resuming needs the same backend and settings
            cmd += f" --backend={backend}"
            if self.device.get("threads"):
                cmd += f" --threads={self.device['threads']}"
        if self.num_classes:
            cmd += f" --num_classes={self.num_classes}"
        return cmd

    def lookup(self, key):
        """Latency (ms, the table's statistic) of one key; a missing key names itself and the fill command."""
        try:
            return getattr(self.entries[key], self.statistic)
        except KeyError:
            raise ConfigError(self.path or "<latency table>", f"entries[{key!r}]",
                              "no measurement for this block", f"fill it with: {self._fill_hint()}") from None

    def check_space(self, space, num_classes=None):
        """Fail early, with one line, if this table cannot predict every architecture of `space`."""
        src = self.path or "<latency table>"
        if self.space_fingerprint and self.space_fingerprint != space.fingerprint():
            raise ConfigError(src, "space.fingerprint",
                              f"table was built for space {self.space_name!r} ({self.space_fingerprint}), "
                              f"not for {space.name!r} ({space.fingerprint()})",
                              f"build a table for this space: {self._fill_hint()}")
        nc = num_classes if num_classes is not None else self.num_classes
        if num_classes is not None and self.num_classes is not None and num_classes != self.num_classes:
            raise ConfigError(src, "num_classes", f"table head measured for {self.num_classes} classes, "
                              f"not {num_classes}", f"rebuild the table: {self._fill_hint()}")
        for key in keys_lib.required_keys(space, nc):
            self.lookup(key)

    # ---- prediction -----------------------------------------------------------------------
    def _deltas(self, space):
        """Per-layer corrections (ms, candidate order) of the calibration, or None."""
        corr = (self.calibration or {}).get("corrections")
        if not corr:
            return None
        from proxyless_tf.latency import corrections as corrections_lib

        return corrections_lib.layer_deltas(corr, space, self.statistic, self.path or "<latency table>")

    def calibrate(self, raw_ms, n_blocks=0.0):
        """Map a sum of block medians to a whole-network prediction (works on tensors too).

        predicted = scale * raw_ms + per_block * n_blocks + offset, where n_blocks counts the
        searchable layers that are not `zero` (per_block is 0 when the calibration has none):
        a per-block term absorbs what a block costs in isolation but not inside a network.
        """
        if not self.calibration:
            return raw_ms
        cal = self.calibration
        out = cal["scale"] * raw_ms + cal["offset"]
        if cal.get("per_block"):
            out = out + cal["per_block"] * n_blocks
        return out

    @staticmethod
    def num_blocks(arch):
        """Searchable layers of `arch` that are not `zero` (the count the calibration uses)."""
        return sum(op != space_lib.ZERO for op in arch.ops)

    def raw_sum(self, arch, num_classes=None):
        nc = num_classes if num_classes is not None else self.num_classes
        return float(sum(self.lookup(k) for k in keys_lib.arch_keys(arch, nc)))

    def predict(self, arch, num_classes=None):
        """Predicted whole-network latency of `arch` in ms (calibrated, and corrected per (layer, op)
        when the table has corrections); never below 0, whatever a hand-made calibration says."""
        out = float(self.calibrate(self.raw_sum(arch, num_classes), self.num_blocks(arch)))
        deltas = self._deltas(arch.space)
        if deltas is not None:
            out += float(sum(d[layer.candidates.index(op)] for d, layer, op in zip(deltas, arch.space.layers,
                                                                                   arch.ops)))
        return max(out, 0.0)

    def fixed_ms(self, space, num_classes=None):
        """Latency every architecture pays: stem, fixed first block and head."""
        nc = num_classes if num_classes is not None else self.num_classes
        return float(sum(self.lookup(k) for k in keys_lib.fixed_keys(space, nc)))

    def layer_latencies(self, space):
        """Per searchable layer, the latency (ms) of each candidate in `layer.candidates` order (zero: 0)."""
        out = []
        for layer in space.layers:
            row = [0.0 if op == space_lib.ZERO else self.lookup(keys_lib.layer_key(layer, op))
                   for op in layer.candidates]
            out.append(np.asarray(row, dtype=np.float32))
        return out

    def layer_costs(self, space):
        """Per layer and candidate, its calibrated contribution: scale * lat + per_block * (op != zero)
        + the (layer, op) correction when the calibration has corrections.

        The predictor is additive in each layer's choice, so predict(arch) = offset + scale * fixed
        + sum over layers of these costs; the range and the expectation are built on them.
        """
        cal = self.calibration or {}
        scale, per_block = cal.get("scale", 1.0), cal.get("per_block", 0.0) or 0.0
        deltas = self._deltas(space)
        out = []
        for l, (layer, lat) in enumerate(zip(space.layers, self.layer_latencies(space))):
            nonzero = np.asarray([op != space_lib.ZERO for op in layer.candidates], dtype=np.float32)
            cost = scale * lat + per_block * nonzero  # float32, exactly as format-1 tables always had it
            if deltas is not None:
                cost = scale * lat.astype(np.float64) + per_block * nonzero + deltas[l]
            out.append(cost.astype(np.float32))
        return out

    def fixed_cost(self, space, num_classes=None):
        """offset + scale * (stem, first block, head): predict(arch) = this + the layers' costs."""
        cal = self.calibration or {}
        return cal.get("scale", 1.0) * self.fixed_ms(space, num_classes) + cal.get("offset", 0.0)

    def latency_range(self, space, num_classes=None):
        """(fastest, slowest) predicted latency over the whole space, in ms (never below 0, as predict).

        A fitted calibration keeps both positive (calibration.fit's bounds)."""
        costs = self.layer_costs(space)
        fixed = self.fixed_cost(space, num_classes)
        lo = fixed + sum(float(r.min()) for r in costs)
        hi = fixed + sum(float(r.max()) for r in costs)
        return max(float(lo), 0.0), max(float(hi), 0.0)

    def expected_latency(self, alpha_logits, space, num_classes=None):
        """E[latency] = calibrated(fixed + sum_l softmax(alpha_l) . lat_l), differentiable in alpha.

        With the calibration expanded per layer this is offset + scale * fixed +
        sum_l softmax(alpha_l) . (scale * lat_l + per_block * [op != zero]).

        Args:
            alpha_logits: one 1-D tensor of logits per searchable layer, in candidate order.
            space: the space whose layers the logits belong to.
        """
        import keras

        costs = self.layer_costs(space)
        if len(alpha_logits) != len(costs):
            raise ValueError(f"{len(alpha_logits)} logit vectors for {len(costs)} searchable layers")
        total = keras.ops.convert_to_tensor(self.fixed_cost(space, num_classes), dtype="float32")
        for logits, cost in zip(alpha_logits, costs):
            p = keras.ops.softmax(keras.ops.cast(logits, "float32"))
            total = total + keras.ops.sum(p * keras.ops.convert_to_tensor(cost))
        return total

    def __len__(self):
        return len(self.entries)

    def __repr__(self):
        return f"LatencyTable({len(self.entries)} entries, device={self.device.get('backend')!r}, path={self.path!r})"


# The device fields a backend is rebuilt from (validation, --derive_measure, resuming a build,
# the fill hint): (kind, lowest value). Checked when a table loads, so a hand-edited "threads": "1"
# is one line naming the field, not a TypeError inside a backend's constructor.
DEVICE_FIELDS = {"backend": (str, None), "threads": (int, 1), "warmup_runs": (int, 0), "num_runs": (int, 1),
                 "rounds": (int, 1), "batch_size": (int, 1), "round_pause_s": (float, 0.0),
                 "reference_ms": (float, 1e-9), "clock": (str, None), "statistic": (str, None),
                 "serial": (str, None), "benchmark_binary": (str, None), "cpu_mask": (str, None),
                 "delegate": (str, None), "device": (str, None)}
MAX_DEVICE_INT = 1 << 20  # more threads or runs than this is no measurement setting


def check_device(device, source):
    """Raise ConfigError for a device field a backend reads that has the wrong type or range
    (null is allowed: the backend's default; unknown fields are descriptions and left alone)."""
    for name, (kind, low) in DEVICE_FIELDS.items():
        v = device.get(name)
        if v is None:
            continue
        if kind is str:
            ok = isinstance(v, str) and len(v) <= 1000
            want = "a string"
        elif kind is int:
            ok = not isinstance(v, bool) and isinstance(v, int) and low <= v <= MAX_DEVICE_INT
            want = f"an integer from {low} to {MAX_DEVICE_INT}"
        else:
            ok = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) and low <= v <= 1e6
            want = "a positive number of ms" if low else "a number >= 0"
        if not ok:
            shown = repr(v) if isinstance(v, (str, int, float, bool)) else type(v).__name__
            raise ConfigError(source, f"device.{name}", f"expected {want}, got {shown[:60]}",
                              "rebuild the table with tools/build_latency_table.py (or restore this field)")
    if device.get("clock") is not None and device["clock"] not in ("cpu", "wall", "ref"):
        raise ConfigError(source, "device.clock", f"expected cpu, wall or ref, got {device['clock'][:60]!r}",
                          "rebuild the table with tools/build_latency_table.py (or restore this field)")


def _check_calibration(cal, source):
    if not isinstance(cal, dict) or cal.get("kind") != "linear":
        raise ConfigError(source, "calibration", "expected {\"kind\": \"linear\", \"scale\": a, \"offset\": b}",
                          "recalibrate with tools/validate_latency.py --fit")
    if "corrections" in cal:
        from proxyless_tf.latency import corrections as corrections_lib

        corrections_lib.check(cal["corrections"], source)
    for name in ("scale", "offset", "per_block"):
        if name == "per_block" and name not in cal:
            continue
        v = cal.get(name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(source, f"calibration.{name}", f"expected a finite number, got {v!r}",
                              "recalibrate with tools/validate_latency.py --fit")
