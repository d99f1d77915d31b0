"""TF-runtime backend: batched timing on a device, through make_backend like a user gets it."""

import keras
import pytest

from proxyless_tf.errors import ConfigError
from proxyless_tf.latency.backends import Backend, make_backend


def _tiny():
    inp = keras.Input((8, 8, 3))
    return keras.Model(inp, keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(
        keras.layers.Conv2D(8, 3)(inp))))


def test_measures_batched_model_on_cpu():
    be = make_backend("tf", batch_size=8, device="/CPU:0", warmup_runs=2, num_runs=7)
    assert isinstance(be, Backend) and be.name == "tf"
    st = be.measure(_tiny())
    assert st.count == 7 and 0 < st.p5 <= st.median <= st.p95
    d = be.describe()
    assert d["batch_size"] == 8 and d["device"] == "/CPU:0" and "date" not in be.identity()


@pytest.mark.parametrize("kw,needle", [({"device": "/GPU:7"}, "GPU"), ({"device": "/TPU:0"}, "TPU"),
                                       ({"batch_size": 0}, "batch_size")])
def test_bad_settings_are_one_config_error(kw, needle):
    with pytest.raises(ConfigError, match=needle):
        make_backend("tf", **kw)


def test_predictor_fit_on_a_tf_table(tmp_path):
    """The whole-network fit works on a TF-backend table as on LiteRT ones: p5 statistic, the held-out,
    repeat and lower-pass figures stored, and predictions that are the fitted calibration's."""
    from latency_helpers import tiny_space
    from proxyless_tf.latency import validate as val
    from proxyless_tf.latency.builder import build_table

    space = tiny_space()
    be = make_backend("tf", batch_size=2, device="/CPU:0", warmup_runs=2, num_runs=9)
    table = build_table(space, be, str(tmp_path / "tf.json"), 10, progress=False)
    assert table.statistic == "p5"
    report = val.validate(table, space, be, 10, holdout=4, fit_samples=8, progress=False, repeat=True)
    cal = table.calibration
    assert report["holdout_calibrated"]["n"] == 4 and cal["holdout_best_of_two"]["n"] == 4
    assert report["repeat"]["n"] == 4 and 0 <= report["repeat"]["median_abs_pct"] < 100
    arch = space.sample(0)
    raw = table.raw_sum(arch, 10)
    assert raw > 0 and table.predict(arch, 10) >= 0
    if not cal.get("corrections"):
        want = cal["scale"] * raw + cal.get("per_block", 0.0) * table.num_blocks(arch) + cal["offset"]
        assert table.predict(arch, 10) == pytest.approx(max(want, 0.0), rel=1e-9)
