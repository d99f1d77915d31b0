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
