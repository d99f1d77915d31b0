"""Per-(layer, op) corrections of a latency table, fitted on measured whole networks.

A block timed on its own is not the block inside a network: neighbours share caches,
XNNPACK packs and fuses differently, and isolated runs pay a call each. The linear
calibration (calibration.py) removes what is common to all blocks; what depends on which
op sits at which layer is left. So each (layer, op) gets an additive correction δ in ms:

    predicted(arch) = scale * raw_sum + per_block * blocks + offset + Σ_l δ[l][op_l]

This stays additive over (layer, op), so the search's E[lat] = F + Σ_l Σ_i p_li c_li is
still exact and differentiable (c_li = scale * lat_li + per_block + δ_li), only with
corrected costs.

The fit is ridge regression on relative error. Each correction is a fraction r_j of its own
entry (δ_j = lat_j * r_j), shrunk toward zero, i.e. toward the calibrated block sum:

    min_r  Σ_n ((y_n - base_n - Σ_j X_nj lat_j r_j) / y_n)^2  +  λ Σ_j r_j^2

with X_nj = 1 when network n uses (layer, op) j. With few networks the corrections vanish
and the predictor is the linear calibration. λ is chosen by k-fold cross-validation on the
fit set (the calibration refitted in each fold), from a grid that includes λ = ∞ (no
corrections), by the one-standard-error rule: the strongest prior whose CV error is within
one standard error of the best. A fit set too small to support them falls back by itself
(refitting the committed 10-network mobile table, measured under load: the plain CV minimum
picked λ = 1e-4 and held-out MAPE rose from 16 % to 22 %; the rule keeps λ = ∞ there). Bounds
r_j >= -c_j / lat_j keep every corrected cost non-negative, so no network predicts below
the (positive) fixed cost.
"""

import math

import numpy as np

from proxyless_tf import space as space_lib
from proxyless_tf.errors import ConfigError
from proxyless_tf.latency import calibration as cal_lib
from proxyless_tf.latency import keys as keys_lib

KIND = "ridge_layer_op"
VERSION = 1
# λ grid (dimensionless: squared relative error against squared relative correction), plus ∞
LAMBDAS = tuple(float(v) for v in np.logspace(-4, 2, 13))
MIN_CV_SAMPLES = 6  # below this, no held-out fold can judge the corrections: linear calibration only


def candidate_index(space):
    """[(layer index, op)] of every non-zero candidate: the columns of the design matrix."""
    return [(l, op) for l, layer in enumerate(space.layers) for op in layer.candidates if op != space_lib.ZERO]


def design(space, archs):
    """0/1 matrix (networks x candidates): which (layer, op) each network uses."""
    col = {c: j for j, c in enumerate(candidate_index(space))}
    x = np.zeros((len(archs), len(col)))
    for n, arch in enumerate(archs):
        for l, op in enumerate(arch.ops):
            if op != space_lib.ZERO:
                x[n, col[(l, op)]] = 1.0
    return x


def _ridge(a, b, lam, lower):
    """argmin ||a r - b||^2 + lam ||r||^2 subject to r >= lower."""
    p = a.shape[1]
    r = np.linalg.solve(a.T @ a + lam * np.eye(p), a.T @ b)
    if np.all(r >= lower - 1e-12):
        return r
    import scipy.optimize

    aug = np.vstack([a, math.sqrt(lam) * np.eye(p)])
    rhs = np.concatenate([b, np.zeros(p)])
    return scipy.optimize.lsq_linear(aug, rhs, bounds=(lower, np.full(p, np.inf)), method="bvls").x


class _Problem:
    """The fit set as arrays: raw sums, block counts, measurements, design matrix, entry sizes."""

    def __init__(self, table, space, archs, measured, num_classes):
        self.raw = np.array([table.raw_sum(a, num_classes) for a in archs], dtype=np.float64)
        self.nb = np.array([table.num_blocks(a) for a in archs], dtype=np.float64)
        self.y = np.asarray(measured, dtype=np.float64)
        self.x = design(space, archs)
        idx = candidate_index(space)
        self.lat = np.array([table.lookup(keys_lib.layer_key(space.layers[l], op)) for l, op in idx])
        self.size = np.maximum(self.lat, 1e-9)  # r_j is relative to its entry; a 0 entry gets ~no room
        self.fixed_ms = table.fixed_ms(space, num_classes)
        self.min_block_ms = float(self.lat.min()) if self.lat.size else 0.0

    def linear(self, rows, kind):
        return cal_lib.fit(self.raw[rows], self.nb[rows], self.y[rows], kind,
                           min_block_ms=self.min_block_ms, fixed_ms=self.fixed_ms)

    def corrections(self, rows, cal, lam):
        """Relative corrections r (one per candidate) on `rows`, over the calibration `cal`."""
        y = self.y[rows]
        base = cal_lib.apply(cal, self.raw[rows], self.nb[rows])
        a = self.x[rows] * self.size[None, :] / y[:, None]
        cost = cal["scale"] * self.lat + cal.get("per_block", 0.0)  # calibrated per-(layer, op) cost, >= 0
        return _ridge(a, (y - base) / y, lam, -np.maximum(cost, 0.0) / self.size)

    def predict(self, rows, cal, r):
        out = cal_lib.apply(cal, self.raw[rows], self.nb[rows])
        return out if r is None else out + self.x[rows] @ (self.size * r)


def cross_validate(prob, kind, lambdas=LAMBDAS, folds=5):
    """{λ: (mean, standard error) of the squared relative error over k held-out folds}
    (λ = inf: the calibration alone)."""
    n = prob.y.size
    k = min(folds, n)
    fold = np.arange(n) % k
    sq = {lam: [] for lam in (math.inf,) + tuple(lambdas)}
    for f in range(k):
        train, test = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        cal = prob.linear(train, kind)
        for lam in sq:
            r = None if math.isinf(lam) else prob.corrections(train, cal, lam)
            rel = prob.predict(test, cal, r) / prob.y[test] - 1.0
            sq[lam].extend(rel ** 2)
    return {lam: (float(np.mean(v)), float(np.std(v) / math.sqrt(len(v)))) for lam, v in sq.items()}


def choose_lambda(scores):
    """The largest λ (∞ first) whose CV error is within one standard error of the minimum."""
    best = min(scores, key=lambda v: scores[v][0])
    limit = scores[best][0] + scores[best][1]
    return max(v for v, (mean, _) in scores.items() if mean <= limit)


def fit_predictor(table, space, archs, measured, num_classes, kind="linear_blocks", corrections=True,
                  lambdas=LAMBDAS, folds=5, lam=None):
    """The table's `calibration` dict: the bounded linear calibration and, if cross-validation
    prefers them, per-(layer, op) corrections (key "corrections"; the table then saves as format 2).

    Args:
        table: the LatencyTable (its raw entries, with its statistic; its calibration is ignored).
        space: the space the networks belong to (the corrections are indexed by its layers).
        archs, measured: the fit networks and their measured latencies (ms, the table's statistic).
        kind: the linear calibration's kind (calibration.KINDS).
        corrections: False fits the linear calibration alone.
        lambdas, folds: the cross-validation's grid (∞ is always tried) and fold count.
        lam: a fixed λ instead of cross-validation (corrections then always fitted).
    """
    prob = _Problem(table, space, archs, measured, num_classes)
    rows = np.arange(prob.y.size)
    cal = prob.linear(rows, kind)
    if not corrections or not prob.lat.size or (lam is None and prob.y.size < MIN_CV_SAMPLES):
        return cal
    if lam is not None:
        best, cv = float(lam), {"folds": 0, "fixed_lambda": True}
    else:
        scores = cross_validate(prob, kind, lambdas, folds)
        best = choose_lambda(scores)
        cv = {"folds": min(folds, prob.y.size), "rule": "one standard error",
              "mse_rel_by_lambda": {("inf" if math.isinf(k) else f"{k:.4g}"): v[0] for k, v in scores.items()}}
    if math.isinf(best):
        cal["corrections_cv"] = dict(cv, chosen="none")
        return cal
    r = prob.corrections(rows, cal, best)
    delta = prob.size * r
    layers = [dict() for _ in space.layers]
    for (l, op), d in zip(candidate_index(space), delta):
        layers[l][op] = float(d)
    cal["corrections"] = {"kind": KIND, "version": VERSION, "space": space.fingerprint(),
                          "statistic": table.statistic, "lambda": best, "fit_samples": int(prob.y.size),
                          "cv": cv, "layers": layers}
    return cal


def check(corr, source):
    """Raise a one-line ConfigError if a stored corrections dict is malformed."""
    fix = "refit with tools/validate_latency.py --fit"
    if not isinstance(corr, dict) or corr.get("kind") != KIND or corr.get("version") != VERSION:
        raise ConfigError(source, "calibration.corrections",
                          f"expected kind {KIND!r} version {VERSION}, got {corr.get('kind') if isinstance(corr, dict) else corr!r}",
                          fix)
    layers = corr.get("layers")
    if not isinstance(corr.get("space"), str) or not isinstance(layers, list):
        raise ConfigError(source, "calibration.corrections", "needs a space fingerprint and a list of layers", fix)
    for l, row in enumerate(layers):
        if not isinstance(row, dict):
            raise ConfigError(source, f"calibration.corrections.layers[{l}]", "expected {op: ms}", fix)
        for op, v in row.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(source, f"calibration.corrections.layers[{l}].{op}",
                                  f"expected a finite number, got {v!r}", fix)


def layer_deltas(corr, space, statistic, source):
    """Per searchable layer, the correction (ms) of each candidate in candidate order (zero: 0)."""
    if corr["space"] != space.fingerprint():
        raise ConfigError(source, "calibration.corrections.space",
                          f"corrections were fitted for space {corr['space']}, not {space.name!r} "
                          f"({space.fingerprint()})", "refit with tools/validate_latency.py --fit on this space")
    if corr.get("statistic") not in (None, statistic):
        raise ConfigError(source, "calibration.corrections.statistic",
                          f"corrections were fitted for statistic {corr['statistic']!r}, the table reads "
                          f"{statistic!r}", f"use --statistic={corr['statistic']} or refit with --fit")
    if len(corr["layers"]) != len(space.layers):
        raise ConfigError(source, "calibration.corrections.layers",
                          f"{len(corr['layers'])} layers for {len(space.layers)} searchable layers", "refit")
    return [np.array([0.0 if op == space_lib.ZERO else float(row.get(op, 0.0)) for op in layer.candidates])
            for layer, row in zip(space.layers, corr["layers"])]
