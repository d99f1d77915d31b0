"""LiteRT measurement: the timed model computes what Keras computes, and the stats are sane."""

import time

import numpy as np
import pytest

from latency_helpers import tiny_space
from proxyless_tf.models import nets
from proxyless_tf.errors import ConfigError
from proxyless_tf.latency import backends
from proxyless_tf.latency.backends import LiteRTBackend, make_backend, time_calls
from proxyless_tf.latency.builder import model_for_key
from proxyless_tf.latency import keys as keys_lib


def test_litert_block_output_agrees_with_keras_and_stats_are_sane():
    space = tiny_space()
    key = keys_lib.layer_key(space.layers[2], "mb_k5_e3")  # 16x16x8 -> 8x8x16, stride 2
    model = model_for_key(key, space, 10)
    b = LiteRTBackend(threads=1, warmup_runs=3, num_runs=25, retries=0)
    interp, x = b.interpreter(model)
    interp.invoke()
    out = interp.get_tensor(interp.get_output_details()[0]["index"])
    ref = model(x, training=False).numpy()
    assert out.shape == ref.shape == (1, 8, 8, 16)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
    s = b.measure_interpreter(interp)
    assert s.count == 25
    assert 0 < s.p5 <= s.median <= s.p95 < 1000.0


def test_rounds_and_wall_clock_keep_the_count():
    model = nets.build_stem_model(tiny_space())
    s = LiteRTBackend(threads=2, warmup_runs=1, num_runs=7, rounds=3, retries=0).measure(model)
    assert s.count == 7 and 0 < s.p5 <= s.median <= s.p95


def test_time_calls_counts_and_measures_ms():
    calls = []
    samples = time_calls(lambda: (calls.append(1), time.sleep(0.002)), 2, 5)
    assert len(calls) == 7 and samples.shape == (5,)
    assert np.all(samples >= 2.0) and np.all(samples < 200.0)  # milliseconds, not seconds


def test_contention_check_keeps_the_least_disturbed_try(monkeypatch):
    b = LiteRTBackend(threads=1, warmup_runs=0, num_runs=3, rounds=1, max_busy=0.3, retries=2, retry_wait_s=0.0)
    busy = iter([0.9, 0.5, 0.7])
    monkeypatch.setattr(backends, "others_busy", lambda before, after: next(busy))
    medians = iter([3.0, 2.0, 1.0])
    monkeypatch.setattr(b, "_time_once", lambda interp: backends.LatencyStats(next(medians), 0, 9, 3))
    s = b.measure_interpreter(None)
    assert (s.median, b.last_busy) == (2.0, 0.5)  # all three tried, the quietest kept


def test_describe_names_the_device():
    d = LiteRTBackend(threads=1).describe()
    for field in ("backend", "threads", "ai_edge_litert", "tensorflow", "keras", "host_cpu", "date", "clock"):
        assert d.get(field), field
    assert d["backend"] == "litert" and d["threads"] == 1 and d["clock"] == "cpu"
    assert "date" not in LiteRTBackend(threads=1).identity()


def test_make_backend():
    b = make_backend("litert", threads=1, num_runs=9, warmup_runs=None)
    assert isinstance(b, LiteRTBackend) and b.num_runs == 9 and b.warmup_runs == 20
    with pytest.raises(ConfigError, match="cpu only with threads=1"):
        make_backend("litert", threads=2, clock="cpu")


def test_new_host_tables_read_p5_and_a_resumed_table_keeps_its_statistic(tmp_path):
    """p5 repeated best on a quiet host (docs/latency.md): new LiteRT (cpu/wall clock) and TF tables
    read it; clock=ref keeps the ratio's median; a table started with another statistic resumes with it."""
    import json

    from conftest import run_cli
    from latency_helpers import write_space
    from proxyless_tf.latency.builder import build_table
    from proxyless_tf.latency.tf_backend import TFRuntimeBackend

    assert LiteRTBackend(threads=1).statistic == "p5" and LiteRTBackend(threads=2).statistic == "p5"
    assert LiteRTBackend(threads=1, clock="ref").statistic == "median"
    assert TFRuntimeBackend().statistic == "p5"
    space = tiny_space()
    out = tmp_path / "t.json"
    b = LiteRTBackend(threads=1, warmup_runs=1, num_runs=5, rounds=1, retries=0)
    table = build_table(space, b, out, 10, progress=False)
    assert table.statistic == "p5" and table.lookup(keys_lib.stem_key(space)) == table.entries[
        keys_lib.stem_key(space)].p5
    d = json.loads(out.read_text())  # as a table begun before p5 was the default: floor, one key missing
    d["statistic"] = d["device"]["statistic"] = "floor"
    del d["entries"][keys_lib.stem_key(space)]
    out.write_text(json.dumps(d))
    proc = run_cli(["tools/build_latency_table.py", f"--space={write_space(tmp_path)}", f"--out={out}",
                    "--num_classes=10", "--noprogress", "--warmup_runs=1", "--num_runs=5", "--rounds=1", "--retries=0"],
                   timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    back = json.loads(out.read_text())
    assert back["statistic"] == "floor" and len(back["entries"]) == 7


def _fit_with(backend, tmp_path, statistic):
    """Build the tiny table with `backend`, validate (4 fit, 2 held-out, repeat), then refit with
    corrections forced on (λ = 0.01, no cross-validation) from the cached networks: the fit works on
    this backend's numbers."""
    import numpy as np

    from proxyless_tf.latency import corrections as corr_lib
    from proxyless_tf.latency import validate as val
    from proxyless_tf.latency.builder import build_table
    from proxyless_tf.latency.table import LatencyTable

    space = tiny_space()
    path = str(tmp_path / "t.json")
    table = build_table(space, backend, path, 10, progress=False)
    assert table.statistic == statistic
    cache = val.samples_path_for(path)
    report = val.validate(table, space, backend, 10, holdout=2, fit_samples=4, cache_path=cache, progress=False,
                          repeat=True)
    assert report["holdout_calibrated"]["n"] == report["repeat"]["n"] == 2
    assert table.calibration["fit_samples"] == 4 and table.calibration["holdout_repeat"]["n"] == 2
    measured = val.measure_archs(space, backend, 10, list(range(4)), val.SampleCache(cache, space, 10, table.device),
                                 progress=False)
    archs = [measured[s][0] for s in range(4)]
    y = np.array([getattr(measured[s][1], statistic) for s in range(4)])
    table.calibration = corr_lib.fit_predictor(table, space, archs, y, 10, lam=1e-2)
    assert "corrections" in table.calibration
    table.save()
    back = LatencyTable.load(path)
    pred = [back.predict(a) for a in archs]
    fixed, costs = back.fixed_cost(space, 10), back.layer_costs(space)
    for a, p in zip(archs, pred):  # additive: predict = fixed + the layers' corrected costs
        assert p > 0 and p == pytest.approx(fixed + sum(float(c[l.candidates.index(op)])
                                                        for c, l, op in zip(costs, space.layers, a.ops)), rel=1e-5)
    return report


@pytest.mark.slow
def test_the_fit_works_with_the_fake_phone(tmp_path, monkeypatch):
    from test_mobile_adb import FakePhone

    phone = FakePhone(tmp_path, monkeypatch)
    b = make_backend("adb", serial="FAKE01", benchmark_binary=str(phone.binary), threads=1, warmup_runs=1,
                     num_runs=5)
    _fit_with(b, tmp_path, "median")  # phones keep the median (old benchmark_model prints no p5)
    assert len(phone.runs()) == 7 + 6 + 2  # keys, 4 fit + 2 held-out networks, the 2 again; the refit measured none


def test_the_fit_works_with_the_tf_backend(tmp_path):
    from proxyless_tf.latency.tf_backend import TFRuntimeBackend

    _fit_with(TFRuntimeBackend(warmup_runs=2, num_runs=5), tmp_path, "p5")
