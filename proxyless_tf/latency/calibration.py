"""Fit the map from a sum of block latencies to a whole-network latency, and score it.

A network is not exactly the sum of its blocks measured one by one: each isolated block
pays an interpreter call and cold input/output buffers that a block inside a network does
not, and the network's ops run back to back. Both effects are close to linear, so the
calibration is

    measured ≈ scale * raw_block_sum + per_block * non_zero_layers + offset

fitted by least squares on *relative* error (each sample weighted by 1/measured), since
we report relative error and latencies in one space can differ by 10x.

Given the table's smallest block and its fixed part (stem, first block, head), the fit is
bounded so that no piece costs less than nothing: scale >= 0, every block's calibrated cost
scale * lat + per_block >= 0, and the fixed cost scale * fixed + offset >= MIN_FIXED_FRACTION
of its isolated time. An unbounded affine fit extrapolates: fitted on mid-sized networks,
its negative offset made the smallest networks of a space predict below zero (issue 32).
With the bounds every architecture predicts at least the positive fixed cost.
"""

import numpy as np
import scipy.stats

KINDS = ("linear", "linear_blocks")
# the fixed pieces inside a whole network cost at least this fraction of their isolated time
# (a guard against extrapolation, far below anything measured: whole networks ran 0.77-1.1x
# their block sums in docs/latency.md)
MIN_FIXED_FRACTION = 0.25


def fit(raw_ms, n_blocks, measured_ms, kind="linear_blocks", min_block_ms=None, fixed_ms=None):
    """Calibration dict (the table's `calibration` field) fitted on samples.

    Args:
        raw_ms: per sample, the table's raw block sum (stem + blocks + head).
        n_blocks: per sample, the number of non-zero searchable layers.
        measured_ms: per sample, the measured whole-network median.
        kind: 'linear' (scale, offset) or 'linear_blocks' (also a per-block term).
        min_block_ms, fixed_ms: the table's smallest searchable entry and its fixed part; when
            given, the fit is bounded (module docstring) and says so with "bounded": true
            when a bound was active.
    """
    raw, n, y = (np.asarray(v, dtype=np.float64) for v in (raw_ms, n_blocks, measured_ms))
    if kind not in KINDS:
        raise ValueError(f"unknown calibration kind {kind!r}; use one of {KINDS}")
    cols = [raw, np.ones_like(raw)]
    if kind == "linear_blocks":
        if np.ptp(n) == 0:  # every sample has the same block count: the term is not identifiable
            kind = "linear"
        else:
            cols.append(n)
    a = np.stack(cols, axis=1) / y[:, None]
    coef, *_ = np.linalg.lstsq(a, np.ones_like(y), rcond=None)
    bounded = False
    if fixed_ms is not None:
        coef, bounded = _bounded(coef, raw, n, y, kind, float(min_block_ms or 0.0), float(fixed_ms))
    cal = {"kind": "linear", "scale": float(coef[0]), "offset": float(coef[1]),
           "fit": kind, "fit_samples": int(y.size)}
    if kind == "linear_blocks":
        cal["per_block"] = float(coef[2])
    if bounded:
        cal["bounded"] = True
    return cal


def _bounded(coef, raw, n, y, kind, m, fx):
    """(scale, offset[, per_block]) with scale >= 0, every block cost >= 0, fixed cost >= its floor.

    In the parameters (scale, F = offset + scale*fx, q = per_block + scale*m) the bounds are a
    box: predicted = scale * (raw - fx - m*n) + F + q*n with scale, q >= 0, F >= floor.
    """
    floor = MIN_FIXED_FRACTION * fx
    blocks = kind == "linear_blocks"
    scale, offset = coef[0], coef[1]
    per_block = coef[2] if blocks else 0.0
    if scale >= 0 and scale * fx + offset >= floor and (not blocks or scale * m + per_block >= 0):
        return coef, False
    import scipy.optimize

    cols = [raw - fx - (m * n if blocks else 0.0), np.ones_like(raw)] + ([n] if blocks else [])
    lower = [0.0, floor] + ([0.0] if blocks else [])
    a = np.stack(cols, axis=1) / y[:, None]
    x = scipy.optimize.lsq_linear(a, np.ones_like(y), bounds=(lower, [np.inf] * len(lower)), method="bvls").x
    scale, f = x[0], x[1]
    out = [scale, f - scale * fx] + ([x[2] - scale * m] if blocks else [])
    return np.array(out), True


def apply(cal, raw_ms, n_blocks):
    """Predictions of a calibration dict (None: the raw sum)."""
    raw = np.asarray(raw_ms, dtype=np.float64)
    if not cal:
        return raw
    return cal["scale"] * raw + cal.get("per_block", 0.0) * np.asarray(n_blocks, dtype=np.float64) + cal["offset"]


def metrics(predicted_ms, measured_ms):
    """Agreement of predictions with measurements: the numbers the issue asks for."""
    p, m = np.asarray(predicted_ms, dtype=np.float64), np.asarray(measured_ms, dtype=np.float64)
    rel = (p - m) / m
    tau = scipy.stats.kendalltau(p, m).statistic if p.size > 1 else float("nan")
    return {
        "n": int(p.size),
        "rmse_ms": float(np.sqrt(np.mean((p - m) ** 2))),
        "mape_pct": float(100 * np.mean(np.abs(rel))),
        "mean_error_pct": float(100 * np.mean(rel)),
        "max_abs_error_pct": float(100 * np.max(np.abs(rel))),
        "within_5_pct": float(100 * np.mean(np.abs(rel) <= 0.05)),
        "within_10_pct": float(100 * np.mean(np.abs(rel) <= 0.10)),
        "kendall_tau": float(tau),
    }
