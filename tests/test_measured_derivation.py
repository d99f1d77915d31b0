"""--derive_measure: the table-based derivation corrected by whole-network measurements.

The correction is checked here against a device whose per-op costs differ from the table's
in a known way (so the right answer is computable), and against this machine's real LiteRT
interpreter for the refusals; the search CLI test runs it end to end with a real table.
"""

import numpy as np
import pytest

from proxyless_tf.errors import ConfigError
from proxyless_tf.latency.measured_derivation import derive_measured
from proxyless_tf.supernet import derive_toward_target


class Arch:
    def __init__(self, idx):
        self.ops = [f"op{i}" for i in idx]
        self.idx = idx


# six layers, three candidates each; the table prices them 1, 2, 3 ms; the device runs the
# third candidate 40 % slower than the table says (a kernel the table's per-block
# measurement under-rates), the others as priced
TABLE = [np.array([1.0, 2.0, 3.0])] * 6
DEVICE = [np.array([1.0, 2.0, 4.2])] * 6
LOGP = [np.log(p) for p in ([.2, .3, .5], [.2, .3, .5], [.3, .2, .5], [.5, .3, .2], [.25, .5, .25], [.2, .2, .6])]


def derive(target, tol):
    idx = derive_toward_target(LOGP, TABLE, 0.0, target, tol)
    return Arch(idx), float(sum(TABLE[layer][i] for layer, i in enumerate(idx)))


def measure_on_device(calls):
    def measure(arch):
        calls.append(tuple(arch.ops))
        return float(sum(DEVICE[layer][i] for layer, i in enumerate(arch.idx)))
    return measure


def test_a_network_in_the_table_band_that_misses_on_the_device_is_rederived_into_the_measured_band():
    target, tol = 14.0, 0.05
    # the table alone: the argmax is 3+3+3+1+2+3 = 15 ms predicted, 7 % over, so one cheaper swap
    # lands it on 14 ms, inside the table's band ...
    arch0, pred0 = derive(target, tol)
    assert abs(pred0 - target) <= tol * target
    calls = []
    dev0 = measure_on_device([])(arch0)
    assert abs(dev0 - target) > tol * target  # ... which the device measures outside the band
    arch, ms, rounds = derive_measured(derive, measure_on_device(calls), target, tol)
    assert abs(ms - target) <= tol * target
    assert ms == measure_on_device([])(arch)
    # round 1 is the table's own derivation; round 2 aims the table at pred x target / measured,
    # and derives into half the band
    assert rounds[0]["table_target_ms"] == target and rounds[0]["measured_ms"] == dev0
    assert rounds[1]["table_target_ms"] == pytest.approx(pred0 * target / dev0)
    assert rounds[-1]["ops"] == arch.ops and len(rounds) == 2
    # round 2 in numbers: 14 x 14 / 17.6 = 11.14 ms aimed, 11 predicted, 13.4 measured (-4.3 %)
    assert rounds[1]["predicted_ms"] == 11.0 and ms == pytest.approx(13.4)
    assert len(calls) == len(set(calls))  # every network measured once


def test_once_measurements_bracket_the_target_the_table_aims_between_them():
    # 23 ms: the argmax (18 ms by the table, four 4.2 ms ops: 25.2 on the device) is 9.6 % over;
    # the ratio aims at 18 x 23 / 25.2 = 16.43 -> 16 predicted, 20.8 measured (-9.6 %). The ratio
    # of that network would aim at 16 x 23 / 20.8 = 17.69 and derive the argmax again (18 ms):
    # back and forth, never in the band. The secant between the two measured networks aims at
    # 16 + (23 - 20.8) x (18 - 16) / (25.2 - 20.8) = 17 ms, which measures 23.0: on target.
    calls = []
    arch, ms, rounds = derive_measured(derive, measure_on_device(calls), 23.0, 0.05, max_rounds=4)
    assert [r["predicted_ms"] for r in rounds] == pytest.approx([18, 16, 17])
    assert [r["measured_ms"] for r in rounds] == pytest.approx([25.2, 20.8, 23.0])
    assert rounds[2]["table_target_ms"] == pytest.approx(17.0)
    assert ms == pytest.approx(23.0) and len(calls) == len(set(calls)) == 3


def test_a_network_in_the_outer_part_of_the_band_is_kept_only_when_nothing_nearer_follows():
    # 11 ms, band ±8 %: the argmax measures 13.4 (+22 %); the ratio aims at 9.03 -> 9 ms predicted,
    # 10.2 measured (-7.3 %): inside the band, but a fresh measurement at the end could put it
    # outside. With settle=1 the search stops there; by default (settle 0.5: within ±4 %) it
    # measures the secant's network too, 10 ms predicted, 11.2 measured (+1.8 %), and keeps that
    _, ms, rounds = derive_measured(derive, measure_on_device([]), 11.0, 0.08, settle=1.0)
    assert len(rounds) == 2 and ms == pytest.approx(10.2)
    calls = []
    arch, ms, rounds = derive_measured(derive, measure_on_device(calls), 11.0, 0.08)
    assert [r["measured_ms"] for r in rounds] == pytest.approx([13.4, 10.2, 11.2])
    assert ms == pytest.approx(11.2) and rounds[2]["predicted_ms"] == 10.0 and len(calls) == 3


def test_a_band_the_device_cannot_reach_returns_the_nearest_measured_network():
    # 6.5 ms: all-1 ms is 6, one 2 ms op makes 7 on both clocks; ±2 % holds neither
    # the device agrees with the table on this network (no k = 3 op), so the corrected table target
    # equals the first one: deriving again would repeat it, and the loop stops after one measurement
    calls = []
    arch, ms, rounds = derive_measured(derive, measure_on_device(calls), 6.5, 0.02, max_rounds=4)
    assert len(calls) == 1 and len(rounds) == 1
    assert ms == 7.0 and arch.idx == [0, 0, 0, 0, 1, 0]


def derive_ceiling(target, tol):
    idx = derive_toward_target(LOGP, TABLE, 0.0, target, tol, ceiling=True)
    return Arch(idx), float(sum(TABLE[layer][i] for layer, i in enumerate(idx)))


def test_ceiling_keeps_a_network_that_measures_under_budget_and_rederives_one_over_it():
    # the argmax: 15 ms by the table, 4.2 x 4 + 1 + 2 = 19.8 ms on the device
    calls = []
    arch, ms, rounds = derive_measured(derive_ceiling, measure_on_device(calls), 20.0, 0.05, ceiling=True)
    assert len(rounds) == 1 and ms == pytest.approx(19.8) and arch.idx == [int(np.argmax(lp)) for lp in LOGP]
    # a 16 ms budget: the table keeps the argmax (15 ms), the device says 19.8 -> derived again, under 16.8
    arch, ms, rounds = derive_measured(derive_ceiling, measure_on_device([]), 16.0, 0.05, ceiling=True)
    assert rounds[0]["predicted_ms"] == 15.0 and rounds[0]["measured_ms"] == pytest.approx(19.8)
    # round 2 aims at 15 x 16 / 19.8 = 12.12 ms, derives 12 ms, measured 14.4: under the budget
    assert len(rounds) == 2 and rounds[1]["table_target_ms"] == pytest.approx(15 * 16 / 19.8)
    assert ms == pytest.approx(14.4) and arch.idx == [1, 2, 0, 0, 1, 2]


def test_tables_this_process_cannot_measure_are_refused_by_name(tmp_path):
    from proxyless_tf.latency.measured_derivation import backend_like, check_measurable
    from proxyless_tf.latency.table import LatencyTable

    pixel = LatencyTable({"backend": "official", "device": "Pixel 1"}, {}, 1000, "mobile", "x")
    with pytest.raises(ConfigError, match=r"pixel\.json: device\.backend: .*'official'.*drop --derive_measure"):
        check_measurable(pixel, "pixel.json")
    # a LiteRT table measured on another CPU: the backend is real, the host is not the table's
    from proxyless_tf.latency.backends import make_backend

    device = dict(make_backend("litert", threads=1, clock="ref").describe(), host_cpu="Some Other CPU")
    with pytest.raises(ConfigError,
                       match=r"other\.json: device\.host_cpu: .*'Some Other CPU'.*build a table on this machine"):
        backend_like(LatencyTable(device, {}, 10, "micro", "x"), "other.json")
    # the same device as measured here: accepted, on the table's ms scale
    # (statistic 'floor': what an older clock=ref table, e.g. configs/latency/fashion_mnist_litert1_ref.json,
    # recorded; it is which summary is read, not how the device measures)
    device.update(host_cpu=make_backend("litert").describe()["host_cpu"], reference_ms=0.123, statistic="floor")
    assert backend_like(LatencyTable(device, {}, 10, "micro", "x"), "here.json").reference_ms == 0.123
