"""LatencyTable: JSON round-trip, lookup errors, space checks, calibration and the gradient of E[lat]."""

import numpy as np
import pytest
import tensorflow as tf

import proxyless_tf as pt
from latency_helpers import tiny_space
from proxyless_tf.errors import ConfigError
from proxyless_tf.latency import keys as keys_lib
from proxyless_tf.latency.table import LatencyStats, LatencyTable


def _table(space, calibration=None, num_classes=10):
    """A table with made-up, distinct latencies: key i gets 0.1 * (i + 1) ms."""
    entries = {k: LatencyStats(0.1 * (i + 1), 0.09 * (i + 1), 0.12 * (i + 1), 7)
               for i, k in enumerate(keys_lib.required_keys(space, num_classes))}
    return LatencyTable({"backend": "litert", "threads": 1}, entries, num_classes, space.name,
                        space.fingerprint(), calibration)


def test_round_trip_keeps_every_field(tmp_path):
    space = tiny_space()
    t = _table(space, {"kind": "linear", "scale": 1.05, "offset": 0.01, "per_block": -0.002, "fit_samples": 30})
    path = tmp_path / "t.json"
    t.save(path)
    u = LatencyTable.load(path)
    assert u.to_dict() == t.to_dict()
    assert u.entries == t.entries and u.num_classes == 10 and u.space_fingerprint == space.fingerprint()
    arch = pt.Arch(space, ["mb_k5_e3", "zero", "mb_k3_e3"])
    assert u.predict(arch) == pytest.approx(t.predict(arch), abs=1e-12)


def test_predict_is_the_calibrated_block_sum():
    space = tiny_space()
    t = _table(space)
    arch = pt.Arch(space, ["mb_k5_e3", "zero", "mb_k3_e3"])
    raw = sum(t.entries[k].median for k in keys_lib.arch_keys(arch, 10))
    # stem, first block, head + two searchable blocks (zero costs nothing)
    assert len(keys_lib.arch_keys(arch, 10)) == 5
    assert t.predict(arch) == pytest.approx(raw)
    t.calibration = {"kind": "linear", "scale": 1.1, "offset": 0.05, "per_block": 0.01}
    assert t.predict(arch) == pytest.approx(1.1 * raw + 0.01 * 2 + 0.05)
    lo, hi = t.latency_range(space)
    all_archs = [pt.Arch(space, [a, b, c]) for a in space.layers[0].candidates
                 for b in space.layers[1].candidates for c in space.layers[2].candidates]
    preds = [t.predict(a) for a in all_archs]
    assert (lo, hi) == pytest.approx((min(preds), max(preds)))


@pytest.mark.parametrize("calibration", [None, {"kind": "linear", "scale": 1.3, "offset": 0.2},
                                         {"kind": "linear", "scale": 0.9, "offset": 0.1, "per_block": 0.05}])
def test_expected_latency_gradient_matches_closed_form(calibration):
    space = tiny_space()
    t = _table(space, calibration)
    rng = np.random.default_rng(0)
    alphas = [tf.Variable(rng.normal(size=len(l.candidates)).astype("float32")) for l in space.layers]
    with tf.GradientTape() as tape:
        e = t.expected_latency(alphas, space)
    grads = tape.gradient(e, alphas)
    cal = calibration or {}
    scale, per_block = cal.get("scale", 1.0), cal.get("per_block", 0.0)
    expect_e = cal.get("offset", 0.0) + scale * t.fixed_ms(space)
    for a, g, layer, lat in zip(alphas, grads, space.layers, t.layer_latencies(space)):
        p = tf.nn.softmax(a).numpy().astype(np.float64)
        # the calibrated cost of each candidate: scale * lat (+ per_block for a real block)
        c = scale * lat.astype(np.float64) + per_block * np.array([op != "zero" for op in layer.candidates])
        expect_e += float(p @ c)
        np.testing.assert_allclose(g.numpy(), p * (c - p @ c), atol=1e-5)  # dE/da_i = p_i (c_i - sum_j p_j c_j)
    assert float(e) == pytest.approx(expect_e, abs=1e-5)


def test_missing_key_names_the_key_and_the_fill_command(tmp_path):
    space = tiny_space()
    t = _table(space)
    key = keys_lib.layer_key(space.layers[2], "mb_k5_e3")
    del t.entries[key]
    t.save(tmp_path / "t.json")
    t = LatencyTable.load(tmp_path / "t.json")
    with pytest.raises(ConfigError) as e:
        t.predict(pt.Arch(space, ["mb_k3_e3", "mb_k3_e3", "mb_k5_e3"]))
    msg = str(e.value)
    assert key in msg and "tools/build_latency_table.py" in msg and str(tmp_path / "t.json") in msg
    assert "--backend=litert --threads=1 --num_classes=10" in msg  # the command that resumes this table
    with pytest.raises(ConfigError, match="block:8x8x8|block:16x16x8"):
        t.check_space(space)


def test_table_of_another_space_is_rejected():
    t = _table(tiny_space())
    other = tiny_space(head={"out_channels": 48})
    with pytest.raises(ConfigError) as e:
        t.check_space(other)
    assert e.value.field == "space.fingerprint" and "'tiny'" in str(e.value)
    with pytest.raises(ConfigError, match="num_classes"):
        t.check_space(tiny_space(), num_classes=100)


def test_bad_calibration_in_file_is_one_clear_error(tmp_path):
    t = _table(tiny_space(), {"kind": "linear", "scale": 1.0, "offset": 0.0, "per_block": "x"})
    d = t.to_dict()
    with pytest.raises(ConfigError) as e:
        LatencyTable.from_dict(d, source="t.json")
    assert e.value.field == "calibration.per_block"


def test_floor_is_the_median_of_round_minima_and_round_trips(tmp_path):
    from proxyless_tf.latency.table import LatencyStats

    s = LatencyStats.from_rounds([[2.0, 1.0, 3.0], [5.0, 4.0, 6.0], [1.5, 2.5, 9.0]])
    assert s.floor == 1.5 and s.count == 9 and s.median == 3.0
    t = LatencyTable({"backend": "x"}, {"k": s}, statistic="floor")
    t.save(tmp_path / "t.json")
    back = LatencyTable.load(tmp_path / "t.json")
    assert back.statistic == "floor" and back.entries["k"] == s and back.lookup("k") == 1.5


def test_floor_table_without_floor_entries_is_refused(tmp_path):
    import json

    from proxyless_tf.errors import ConfigError
    from proxyless_tf.latency.table import LatencyStats

    t = LatencyTable({"backend": "x"}, {"k": LatencyStats(1.0, 0.9, 1.2, 10)})
    d = t.to_dict()
    d["statistic"] = "floor"
    (tmp_path / "t.json").write_text(json.dumps(d))
    with pytest.raises(ConfigError, match=r"entries\['k'\]\.floor"):
        LatencyTable.load(tmp_path / "t.json")
