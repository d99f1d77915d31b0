"""Calibration and validation: the fit recovers known coefficients, metrics are hand-checkable."""

import os

import numpy as np
import pytest
from proxyless_tf import files as files_lib

import proxyless_tf as pt
from latency_helpers import tiny_space
from proxyless_tf.latency import calibration as cal_lib
from proxyless_tf.latency import validate as val
from proxyless_tf.latency.backends import Backend
from proxyless_tf.latency.builder import build_table
from proxyless_tf.latency.table import LatencyStats, LatencyTable


def test_fit_recovers_scale_offset_and_per_block():
    rng = np.random.default_rng(0)
    raw = rng.uniform(1, 10, 40)
    n = rng.integers(5, 20, 40)
    y = 1.07 * raw - 0.004 * n + 0.3
    cal = cal_lib.fit(raw, n, y, "linear_blocks")
    assert (cal["scale"], cal["per_block"], cal["offset"]) == pytest.approx((1.07, -0.004, 0.3), abs=1e-9)
    lin = cal_lib.fit(raw, n, 2 * raw + 1, "linear")
    assert (lin["scale"], lin["offset"]) == pytest.approx((2.0, 1.0)) and "per_block" not in lin
    same_n = cal_lib.fit(raw, np.full(40, 7), 2 * raw + 1, "linear_blocks")  # not identifiable: plain linear
    assert same_n["fit"] == "linear" and same_n["scale"] == pytest.approx(2.0)


def test_metrics_by_hand():
    m = cal_lib.metrics([1.0, 2.08, 2.9, 4.5], [1.0, 2.0, 3.0, 4.0])
    # relative errors 0, +4%, -3.33%, +12.5%
    assert m["within_5_pct"] == pytest.approx(75.0)
    assert m["within_10_pct"] == pytest.approx(75.0)
    assert m["mape_pct"] == pytest.approx(100 * (0 + 0.04 + 0.1 / 3 + 0.125) / 4)
    assert m["rmse_ms"] == pytest.approx(np.sqrt((0 + 0.0064 + 0.01 + 0.25) / 4))
    assert m["kendall_tau"] == pytest.approx(1.0)
    assert cal_lib.metrics([2, 1], [1, 2])["kendall_tau"] == pytest.approx(-1.0)


class ParamCountBackend(Backend):
    """Deterministic stand-in: 'latency' = 1 us per parameter + 5 us per model (no timing, no TFLite)."""

    name = "fake"

    def describe(self):
        return {"backend": self.name, "threads": 1, "date": "now"}

    def measure(self, keras_model):
        ms = 1e-3 * keras_model.count_params() + 5e-3
        return LatencyStats(ms, ms, ms, 1)


def test_validate_fits_on_one_set_scores_another_and_stores_it(tmp_path):
    space = tiny_space()
    backend = ParamCountBackend()
    path = str(tmp_path / "t.json")
    table = build_table(space, backend, path, 10, progress=False)
    report = val.validate(table, space, backend, 10, holdout=3, fit_samples=4, seed0=0,
                          cache_path=val.samples_path_for(path), plot_path=str(tmp_path / "p.png"),
                          progress=False)
    table.save()
    assert report["fit_seeds"] == [0, 4] and report["holdout_seeds"] == [4, 7]
    assert report["holdout_calibrated"]["n"] == 3 and report["fit_calibrated"]["n"] == 4
    t = LatencyTable.load(path)
    assert t.calibration["fit_samples"] == 4 and t.calibration["holdout"]["n"] == 3
    cache = files_lib.read_json(val.samples_path_for(path))
    assert sorted(cache["samples"], key=int) == [str(s) for s in range(7)]
    # the held-out score uses exactly the cached measurements and the stored calibration
    archs = [pt.Arch(space, cache["samples"][str(s)]["ops"]) for s in range(4, 7)]
    measured = [cache["samples"][str(s)]["stats"]["median"] for s in range(4, 7)]
    expect = cal_lib.metrics([t.predict(a) for a in archs], measured)
    assert report["holdout_calibrated"]["mape_pct"] == pytest.approx(expect["mape_pct"])
    assert os.path.getsize(tmp_path / "p.png") > 1000
    # parameters add up block by block, but every isolated piece pays the 5 us per-model cost
    # that the whole network pays once: raw = params + 5 us * (blocks + 3 fixed pieces), so the
    # fit is exact with scale 1, per_block -5 us, offset -2 * 5 us (the invoke-overhead effect)
    assert t.calibration["scale"] == pytest.approx(1.0, abs=1e-6)
    assert t.calibration["per_block"] == pytest.approx(-0.005, abs=1e-6)
    assert t.calibration["offset"] == pytest.approx(-0.010, abs=1e-6)
    assert report["holdout_calibrated"]["mape_pct"] < 1e-3
    # a rerun measures nothing new: every network comes from the cache
    again = val.validate(t, space, backend, 10, holdout=3, fit_samples=4, cache_path=val.samples_path_for(path),
                         progress=False)
    assert again["holdout_calibrated"] == pytest.approx(report["holdout_calibrated"])
    assert again["measure_seconds"] < 5


def test_a_table_from_another_host_is_refused_with_each_callers_remedy():
    from proxyless_tf.errors import ConfigError
    from proxyless_tf.latency.backends import make_backend

    backend = make_backend("litert", threads=1, clock="ref")
    table = LatencyTable(dict(backend.describe(), host_cpu="Some Other CPU"), {}, 10, "micro", "x")
    with pytest.raises(ConfigError,
                       match=r"t\.json: device\.host_cpu: .*'Some Other CPU'.*validate on the machine"):
        val.check_same_device(table, backend, "t.json")
    with pytest.raises(ConfigError, match=r"device\.host_cpu: .*\(fix: build a table here\)$"):
        val.check_same_device(table, backend, "t.json", "build a table here")
    val.check_same_device(LatencyTable(backend.describe(), {}, 10, "micro", "x"), backend, "t.json")  # same host
