"""--derive_measure: the table-based derivation corrected by whole-network measurements.

The correction is checked here against a device whose per-op costs differ from the table's
in a known way (so the right answer is computable), and against this machine's real LiteRT
interpreter for the refusals; the search CLI test runs it end to end with a real table.
"""

import json

import numpy as np
import pytest

from proxyless_tf.errors import ConfigError
from proxyless_tf.latency.measured_derivation import derive_measured
from proxyless_tf.search.supernet import derive_toward_target


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


@pytest.mark.slow
def test_a_measured_reference_network_sets_the_target_and_rescales_each_measurement(tmp_path):
    """--measured_reference: the reference network is timed once as the target, then right after
    every derived network; each derived time is put on the target's clock by the reference's drift."""
    import os
    import re

    from conftest import assert_one_line_error, run_cli
    from test_search_cli import write_micro

    from proxyless_tf.latency import backends, builder
    from proxyless_tf.space import Arch

    space, _, sp, _ = write_micro(tmp_path)
    tp = tmp_path / "litert.json"
    builder.build_table(space, backends.make_backend("litert", threads=1, clock="ref", warmup_runs=5, num_runs=20),
                        str(tp), 10, progress=False)
    ref = tmp_path / "ref.json"
    Arch(space, [layer.candidates[-1] for layer in space.layers]).to_json(ref)
    out = tmp_path / "run"
    args = ["-m", "proxyless_tf.search", f"--space={sp}", f"--latency_table={tp}", "--target_frac=0.5",
            "--latency_loss=add#linear", "--max_train=64", "--valid_size=20", "--batch_size=16", "--epochs=2",
            "--warmup_epochs=1", "--steps_per_epoch=2", "--bn_recalibration_steps=1", "--verbose=0",
            "--derive_measure", "--derive_tolerance=0.05"]
    proc = run_cli(args + [f"--measured_reference={ref}", f"--out_dir={out}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = float(re.search(rf"reference {re.escape(str(ref))} measured ([0-9.e+-]+) ms \(the target\)",
                            proc.stdout).group(1))
    res = json.load(open(out / "result.json"))
    assert res["measured_target_ms"] == pytest.approx(first, rel=1e-3)  # printed to 4 digits
    rounds = res["measured_rounds"]
    assert 1 <= len(rounds) <= 5 and proc.stdout.count(", reference ") == len(rounds)
    for r in rounds:  # each time rescaled by the reference measured right after it
        assert r["raw_ms"] > 0 and r["reference_ms"] > 0
        assert r["measured_ms"] == pytest.approx(r["raw_ms"] * res["measured_target_ms"] / r["reference_ms"])
    assert f"the target is {ref}, timed after each" in (out / "summary.txt").read_text()
    # bad input: one line each, before any training, nothing written
    bad = [f"--out_dir={tmp_path}/bad"]
    assert_one_line_error(run_cli(args + [f"--measured_reference={ref}", "--measured_target_ms=1"] + bad),
                          "--measured_reference", "pass one of them")
    assert_one_line_error(run_cli([a for a in args if a != "--derive_measure"] + [f"--measured_reference={ref}"] + bad),
                          "--measured_reference", "pass --derive_measure too")
    assert_one_line_error(run_cli(args + [f"--measured_reference={tmp_path}/none.json"] + bad), "none.json")
    other = tmp_path / "other.json"
    Arch.from_json(os.path.join(os.path.dirname(__file__), "..", "configs", "archs",
                                "fashion_mnist_example.json")).to_json(other)
    assert_one_line_error(run_cli(args + [f"--measured_reference={other}"] + bad), "other.json", "space",
                          "pass an architecture of --space")
    assert not (tmp_path / "bad").exists()


def test_the_reference_timed_beside_each_network_takes_the_machines_drift_out(tmp_path):
    """A device that slows by 30 % between rounds: every derived network's time, put on the target's
    clock by the reference timed with it, comes out as its undisturbed time (exactly), and the raw
    times do not. Also: which reference files are accepted, and the loss's default target."""
    import types

    from test_search_cli import write_micro

    from proxyless_tf.models import nets

    from proxyless_tf.search import derive as derive_stage, inputs
    from proxyless_tf.space import Arch

    space, _, _, _ = write_micro(tmp_path)
    ref = tmp_path / "ref.json"
    Arch(space, [layer.candidates[0] for layer in space.layers]).to_json(ref)
    candidates = [Arch(space, [layer.candidates[i % len(layer.candidates)] for layer in space.layers])
                  for i in range(1, 4)]
    params = lambda arch: nets.build_model(arch, 10).count_params()  # noqa: E731
    undisturbed = {tuple(a.ops): params(a) * 1e-5 for a in candidates + [Arch(space, json_ops(ref))]}
    assert len(set(undisturbed.values())) == 4  # the fake device tells the networks apart by their size
    calls = []

    class Device:  # call k runs 1.3 ** ((k + 1) // 2) slower: a derived network and the next call alike
        def measure(self, model):
            key = next(k for k, a in ((k, Arch(space, list(k))) for k in undisturbed) if params(a) == model.count_params())
            calls.append(key)
            return types.SimpleNamespace(median=undisturbed[key] * 1.3 ** (len(calls) // 2))

    table = types.SimpleNamespace(statistic="median", predict=lambda arch, nc: undisturbed[tuple(arch.ops)])
    net = types.SimpleNamespace(space=space, latency_arch=lambda arch: arch, derive_arch=lambda target_ms, tolerance, ceiling: min(
        candidates, key=lambda a: abs(undisturbed[tuple(a.ops)] - target_ms)))
    cfg = types.SimpleNamespace(derive_mode="band", measured_target_ms=None, measured_reference=str(ref),
                                derive_tolerance=0.01)
    target = undisturbed[tuple(candidates[1].ops)]
    arch, (ms, rounds, on_device) = derive_stage.derive_on_device(net, table, Device(), 10, target, cfg)
    assert on_device == undisturbed[tuple(json_ops(ref))] and calls[0] == tuple(json_ops(ref))
    assert calls[2::2] == [tuple(json_ops(ref))] * len(rounds)  # the reference right after each network
    for r in rounds:
        assert r["measured_ms"] == pytest.approx(undisturbed[tuple(r["ops"])])
        assert r["raw_ms"] != pytest.approx(r["measured_ms"])  # the drift was there
    best = min(rounds, key=lambda r: abs(r["measured_ms"] - on_device))  # nearest the reference, undisturbed
    assert arch.ops == best["ops"] and ms == pytest.approx(undisturbed[tuple(best["ops"])])
    # the reference file: another input size is accepted (timed at the latency space's), other layers not
    d = json.loads(ref.read_text())
    d["space"]["input_shape"] = [d["space"]["input_shape"][0] * 2] * 2 + d["space"]["input_shape"][2:]
    (tmp_path / "big.json").write_text(json.dumps(d))
    ok = inputs.reference_arch(types.SimpleNamespace(measured_reference=str(tmp_path / "big.json")), space)
    assert ok.space == space and ok.ops == json_ops(ref)
    d["space"]["head"]["out_channels"] += 8  # same name, another network
    (tmp_path / "head.json").write_text(json.dumps(d))
    with pytest.raises(ConfigError, match=r"head\.json: space\.head: .*pass an architecture of --space"):
        inputs.reference_arch(types.SimpleNamespace(measured_reference=str(tmp_path / "head.json")), space)
    # without --target_ms / --target_frac the loss aims at the table's prediction of the reference
    lat = types.SimpleNamespace(latency_range=lambda s, nc: (0.0, 1e9), predict=table.predict)
    got, _ = inputs.resolve_target(types.SimpleNamespace(target_ms=None, target_frac=None,
                                                             measured_reference=str(ref)), lat, space, 10)
    assert got == undisturbed[tuple(json_ops(ref))]


def json_ops(path):
    return json.loads(open(path).read())["ops"]
