"""Per-(layer, op) corrections: the ridge fit recovers known corrections, E[lat] stays exact,
nothing predicts below zero, and format-1 tables load and predict as before."""

import itertools
import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf

import proxyless_tf as pt
from conftest import ROOT
from latency_helpers import tiny_space
from proxyless_tf.errors import ConfigError
from proxyless_tf.latency import calibration as cal_lib
from proxyless_tf.latency import corrections as corr_lib
from proxyless_tf.latency import keys as keys_lib
from proxyless_tf.latency.table import LatencyStats, LatencyTable


def _synthetic_table(space, num_classes=10, seed=0):
    """Entries 0.02-0.3 ms (p5 = 0.9 x median), statistic p5."""
    rng = np.random.default_rng(seed)
    entries = {}
    for k in keys_lib.required_keys(space, num_classes):
        m = float(rng.uniform(0.02, 0.3))
        entries[k] = LatencyStats(m, 0.9 * m, 1.2 * m, 10)
    return LatencyTable({"backend": "fake"}, entries, num_classes, space.name, space.fingerprint(),
                        statistic="p5")


def _truth(table, space, seed=1):
    """A 'device': fixed cost and per-(layer, op) costs = lat * (1 + r) - 5 us, r in ±20 %."""
    rng = np.random.default_rng(seed)
    fixed = 0.9 * table.fixed_ms(space) + 0.02
    costs = []
    for layer, lat in zip(space.layers, table.layer_latencies(space)):
        r = rng.uniform(-0.2, 0.2, len(lat))
        nz = np.array([op != "zero" for op in layer.candidates], dtype=np.float64)
        costs.append(nz * (lat.astype(np.float64) * (1 + r) - 0.005))
    return fixed, costs


def _measure(space, fixed, costs, seeds, noise=0.0, seed=2):
    rng = np.random.default_rng(seed)
    archs = [space.sample(s) for s in seeds]
    y = np.array([fixed + sum(c[l.candidates.index(op)] for c, l, op in zip(costs, space.layers, a.ops))
                  for a in archs])
    return archs, y * (1 + noise * rng.standard_normal(y.size))


def _contrasts(costs, space):
    """What whole networks can identify: each cost relative to 'zero' where the layer has it,
    else relative to the layer's first candidate (a constant per layer trades with the offset)."""
    out = []
    for c, layer in zip(costs, space.layers):
        c = np.asarray(c, dtype=np.float64)
        ref = 0.0 if "zero" in layer.candidates else c[0]
        out.append(c - ref)
    return np.concatenate(out)


@pytest.fixture(scope="module")
def fm():
    return pt.SearchSpace.from_json(os.path.join(ROOT, "configs", "spaces", "fashion_mnist.json"))


def test_ridge_recovers_known_corrections_exactly_without_noise(fm):
    table = _synthetic_table(fm)
    fixed, costs = _truth(table, fm)
    archs, y = _measure(fm, fixed, costs, range(300))
    table.calibration = corr_lib.fit_predictor(table, fm, archs, y, 10, lambdas=(1e-12,))
    assert table.calibration["corrections"]["lambda"] == 1e-12  # CV prefers it to no corrections
    got = _contrasts(table.layer_costs(fm), fm)
    np.testing.assert_allclose(got, _contrasts(costs, fm), atol=2e-6)  # float32 costs of ~0.3 ms
    # and every network of the space, not only the 300 fitted, to float32 precision
    for a in [fm.sample(s) for s in range(1000, 1020)]:
        want = fixed + sum(c[l.candidates.index(op)] for c, l, op in zip(costs, fm.layers, a.ops))
        assert table.predict(a) == pytest.approx(want, rel=1e-6)


def test_ridge_recovers_known_corrections_within_noise(fm):
    """1 % measurement noise, 400 networks, λ chosen by cross-validation.

    A contrast c_li - c_lj is a difference of means over the ~n/7 networks using each op, so
    its standard error is about σ·ȳ·sqrt(2·7/n) (σ = 1 %, ȳ the mean latency); allow 5 of those
    (66 contrasts: a |z| > 5 happens with probability ~4e-5), and the mean error 1.5 of those
    (a half-normal's mean is 0.8; ridge's pull toward the prior adds a little bias: seeds 0-3 gave
    max 2.6-4.2, mean 0.63-1.20 with the one-SE rule's λ; least squares alone 2.7-3.5, 0.61-0.87).
    The linear calibration alone misses the ±20 % per-entry errors: its contrasts were 4-5 SE off
    on average, which is what the corrections are for.
    """
    table = _synthetic_table(fm)
    fixed, costs = _truth(table, fm)
    n = 400
    archs, y = _measure(fm, fixed, costs, range(n), noise=0.01)
    cal = corr_lib.fit_predictor(table, fm, archs, y, 10)
    table.calibration = cal
    se = 0.01 * float(y.mean()) * math.sqrt(2 * 7 / n)
    err = np.abs(_contrasts(table.layer_costs(fm), fm) - _contrasts(costs, fm))
    assert err.max() < 5 * se and err.mean() < 1.5 * se, (err.max() / se, err.mean() / se)
    lin = LatencyTable(table.device, table.entries, 10, fm.name, fm.fingerprint(),
                       corr_lib.fit_predictor(table, fm, archs, y, 10, corrections=False), statistic="p5")
    err_lin = np.abs(_contrasts(lin.layer_costs(fm), fm) - _contrasts(costs, fm))
    assert err_lin.mean() > 3 * err.mean()
    # held-out networks: the corrected table within 2 % of the noise-free truth for all 100
    hold, truth = _measure(fm, fixed, costs, range(5000, 5100))
    rel = np.array([table.predict(a) for a in hold]) / truth - 1
    assert np.abs(rel).max() < 0.02


def test_corrections_shrink_to_zero_with_strong_prior_and_few_networks(fm):
    table = _synthetic_table(fm)
    fixed, costs = _truth(table, fm)
    archs, y = _measure(fm, fixed, costs, range(60))
    prob = corr_lib._Problem(table, fm, archs, y, 10)
    rows = np.arange(60)
    cal = prob.linear(rows, "linear_blocks")
    sizes = [np.abs(prob.corrections(rows, cal, lam)).max() for lam in (1e-3, 1e-1, 10.0, 1e6)]
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] < 1e-4  # |r| = |δ / lat|
    few = corr_lib.fit_predictor(table, fm, archs[:5], y[:5], 10)  # < MIN_CV_SAMPLES: linear only
    assert "corrections" not in few and "corrections_cv" not in few


def _enumerate(space):
    return [pt.Arch(space, list(ops)) for ops in itertools.product(*(l.candidates for l in space.layers))]


def _fitted_on_every_arch():
    """The tiny space's table fitted on all 3 x 3 x 2 = 18 of its architectures, measured without noise."""
    space = tiny_space()
    table = _synthetic_table(space)
    fixed, costs = _truth(table, space)
    archs = _enumerate(space)
    y = np.array([fixed + sum(c[l.candidates.index(op)] for c, l, op in zip(costs, space.layers, a.ops))
                  for a in archs])
    table.calibration = corr_lib.fit_predictor(table, space, archs, y, 10, lambdas=(1e-3,))
    return space, table, archs


def test_expected_latency_is_the_exact_enumeration_with_corrections():
    space, table, archs = _fitted_on_every_arch()
    assert "corrections" in table.calibration
    rng = np.random.default_rng(3)
    alphas = [tf.Variable(rng.normal(size=len(l.candidates)).astype("float32")) for l in space.layers]
    probs = [tf.nn.softmax(a).numpy().astype(np.float64) for a in alphas]
    exact = sum(np.prod([p[l.candidates.index(op)] for p, l, op in zip(probs, space.layers, a.ops)])
                * table.predict(a) for a in archs)
    with tf.GradientTape() as tape:
        e = table.expected_latency(alphas, space)
    assert float(e) == pytest.approx(exact, rel=1e-6)
    for a, g, p, c in zip(alphas, tape.gradient(e, alphas), probs, table.layer_costs(space)):
        c = c.astype(np.float64)
        np.testing.assert_allclose(g.numpy(), p * (c - p @ c), atol=1e-6)  # dE/dα_i = p_i (c_i - Σ p_j c_j)
    preds = [table.predict(a) for a in archs]
    assert table.latency_range(space) == pytest.approx((min(preds), max(preds)), rel=1e-6)


def test_bounded_fit_keeps_every_piece_non_negative():
    # fit networks all of one size, measured as 2 x raw - 4 ms: unbounded, the offset (-4) makes the
    # fixed part (0.5 ms raw) cost -3 ms and a block of 0.05 ms cost 2 x 0.05 - 0.04 < 0 ... negative
    rng = np.random.default_rng(0)
    raw = rng.uniform(5.0, 6.0, 20)
    n = rng.integers(10, 14, 20).astype(float)
    y = 2.0 * raw - 0.2 * n - 4.0 + rng.normal(0, 0.01, 20)
    free = cal_lib.fit(raw, n, y)
    assert free["scale"] * 0.5 + free["offset"] < 0 and "bounded" not in free  # the old behaviour
    cal = cal_lib.fit(raw, n, y, min_block_ms=0.05, fixed_ms=0.5)
    assert cal["bounded"] is True
    assert cal["scale"] >= 0
    assert cal["scale"] * 0.5 + cal["offset"] >= cal_lib.MIN_FIXED_FRACTION * 0.5 - 1e-12  # fixed part
    assert cal["scale"] * 0.05 + cal["per_block"] >= -1e-12  # the smallest block
    # bounds that hold at the free optimum change nothing
    same = cal_lib.fit(raw, n, 1.1 * raw + 0.01 * n + 0.3, min_block_ms=0.05, fixed_ms=0.5)
    assert (same["scale"], same["per_block"], same["offset"]) == pytest.approx((1.1, 0.01, 0.3), abs=1e-9)
    assert "bounded" not in same


def test_predictions_never_negative():
    space = tiny_space()
    table = _synthetic_table(space)
    # a hand-made (or old) calibration whose offset sinks every network below zero
    table.calibration = {"kind": "linear", "scale": 1.0, "offset": -100.0}
    archs = _enumerate(space)
    assert all(table.predict(a) == 0.0 for a in archs)
    assert table.latency_range(space) == (0.0, 0.0)
    # a fitted table on the same space: every architecture strictly positive
    y = np.array([0.3 * table.raw_sum(a) - 0.01 for a in archs[:12]])  # would extrapolate negative
    table.calibration = corr_lib.fit_predictor(table, space, archs[:12], y, 10)
    lo, hi = table.latency_range(space)
    assert lo >= cal_lib.MIN_FIXED_FRACTION * table.fixed_ms(space) - 1e-6 and hi > lo
    assert all(c.min() >= 0 for c in table.layer_costs(space))
    assert min(table.predict(a) for a in archs) == pytest.approx(lo, rel=1e-6)


def test_format_1_table_loads_and_predicts_as_before():
    """A committed table (format 1, linear calibration with a per-block term) predicts exactly the
    hand-computed scale * raw + per_block * blocks + offset and saves back unchanged."""
    path = os.path.join(ROOT, "configs", "latency", "fashion_mnist_litert1_ref_xeon.json")
    with open(path) as f:
        d = json.load(f)
    assert d["format"] == 1 and "corrections" not in d["calibration"]
    table = LatencyTable.load(path)
    fm = pt.SearchSpace.from_json(os.path.join(ROOT, "configs", "spaces", "fashion_mnist.json"))
    cal = d["calibration"]
    for s in range(5):
        a = fm.sample(s)
        raw = sum(d["entries"][k][d.get("statistic", "median")] for k in keys_lib.arch_keys(a, 10))
        blocks = sum(op != "zero" for op in a.ops)
        assert table.predict(a) == cal["scale"] * raw + cal["per_block"] * blocks + cal["offset"]
    assert table.to_dict() == d  # format 1 again, every field as it was
    lat = table.layer_latencies(fm)
    for c, l, layer in zip(table.layer_costs(fm), lat, fm.layers):  # float32 costs, bit for bit as before
        nz = np.asarray([op != "zero" for op in layer.candidates], dtype=np.float32)
        np.testing.assert_array_equal(c, (cal["scale"] * l + cal["per_block"] * nz).astype(np.float32))


def test_corrected_table_is_format_2_and_round_trips(tmp_path):
    space, table, archs = _fitted_on_every_arch()
    table.save(tmp_path / "t.json")
    d = json.loads((tmp_path / "t.json").read_text())
    assert d["format"] == 2 and d["calibration"]["corrections"]["statistic"] == "p5"
    back = LatencyTable.load(tmp_path / "t.json")
    assert [back.predict(a) for a in archs] == [table.predict(a) for a in archs]
    # corrections are bound to their space and statistic
    with pytest.raises(ConfigError, match="corrections.space"):
        back.predict(pt.Arch(tiny_space(bn_eps=0.01), list(archs[0].ops)))  # same keys, other space
    back.statistic = "median"
    with pytest.raises(ConfigError, match="corrections.statistic.*--statistic=p5"):
        back.layer_costs(space)
    d["calibration"]["corrections"]["layers"][1]["mb_k3_e3"] = "x"
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(ConfigError) as e:
        LatencyTable.load(tmp_path / "bad.json")
    assert e.value.field == "calibration.corrections.layers[1].mb_k3_e3"
