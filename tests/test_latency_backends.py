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
