"""Import of the official ProxylessNAS latency lookup table (Pixel 1, `mobile_trim.yaml`).

The official table keys pieces by TFLite layer names and shapes
(`expanded_conv-input:112x112x16-output:56x56x24-expand:3-kernel:3-stride:2-idskip:0`,
`Conv-...`, `Conv_1-...`, `Logits-...`) and stores count / mean / var in ms. We translate
each key our space needs into that form, exactly as the official
`LatencyEstimator.predict_network_latency` queries it, so our `LatencyTable.predict`
reproduces the official estimate (a sum of means). Our head key covers the official
`Conv_1` (1x1 feature mix) plus `Logits` (pool + classifier): both are summed into it.
"""

import math
import os

from proxyless_tf import space as space_lib
from proxyless_tf.errors import ConfigError
from proxyless_tf.latency import keys as keys_lib
from proxyless_tf.latency.table import LatencyStats, LatencyTable

Z_95 = 1.6448536269514722  # p5/p95 of a normal with the entry's mean and variance


def _shape(dims):
    return "x".join(str(int(d)) for d in dims)


def official_key(l_type, input_shape, output_shape, expand=None, kernel=None, stride=None, idskip=None):
    """The key string the official estimator's `query` builds."""
    infos = [l_type, f"input:{_shape(input_shape)}", f"output:{_shape(output_shape)}"]
    if l_type == "expanded_conv":
        infos += [f"expand:{int(expand)}", f"kernel:{int(kernel)}", f"stride:{int(stride)}",
                  f"idskip:{int(idskip)}"]
    return "-".join(infos)


def official_keys_for(key):
    """Official keys whose means make up one of our table keys (head: Conv_1 + Logits)."""
    p = keys_lib.parse_key(key)
    if p["kind"] == "stem":
        h, w, c = p["input_shape"]
        s = p["stride"]
        out = (space_lib.conv_output_size(h, s), space_lib.conv_output_size(w, s), p["out_channels"])
        return [official_key("Conv", (h, w, c), out)]
    if p["kind"] == "head":
        (h, w), c = p["in_hw"], p["in_channels"]
        return [official_key("Conv_1", (h, w, c), (h, w, p["out_channels"])),
                official_key("Logits", (h, w, p["out_channels"]), (p["num_classes"],))]
    spec = space_lib.parse_op(p["op"])
    (h, w), s = p["in_hw"], p["stride"]
    out = (space_lib.conv_output_size(h, s), space_lib.conv_output_size(w, s), p["out_channels"])
    idskip = int(s == 1 and p["in_channels"] == p["out_channels"])
    return [official_key("expanded_conv", (h, w, p["in_channels"]), out, spec.expand, spec.kernel, s, idskip)]


def _non_negative(x):
    """A finite number >= 0 (an integer of thousands of digits is not finite as a float)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    try:
        return math.isfinite(float(x)) and x >= 0
    except OverflowError:
        return False


def load_official_yaml(path):
    """The official YAML as {key: {count, mean, var}}, with one clear line for a bad file."""
    from proxyless_tf import readers

    path = os.fspath(path)
    d = readers.read_yaml(path, "official latency table", fix="restore the official mobile_trim.yaml",
                          missing_fix="point --yaml at ../shared/data/proxylessnas/mobile_trim.yaml")
    if not isinstance(d, dict):
        raise ConfigError(path, "<top>", "expected a mapping of layer keys", "restore the official file")
    for k, v in d.items():
        ok = isinstance(v, dict) and all(_non_negative(v.get(n)) for n in ("mean", "count")) and (
            v.get("var") is None or _non_negative(v["var"]))
        if not ok:
            raise ConfigError(path, str(k)[:120], "entry needs a finite, non-negative mean and count "
                              "(and var, if given)", "restore the official file")
    return d


def import_table(yaml_path, space, num_classes=1000):
    """A LatencyTable with every key `space` needs, filled from the official Pixel 1 table."""
    lut = load_official_yaml(yaml_path)
    entries = {}
    for key in keys_lib.required_keys(space, num_classes):
        parts = []
        for ok in official_keys_for(key):
            if ok not in lut:
                raise ConfigError(yaml_path, ok, f"not in the official table (needed for {key})",
                                  "import a space the official table covers (configs/spaces/proxyless_mobile.json)")
            parts.append(lut[ok])
        mean = sum(float(p["mean"]) for p in parts)
        std = math.sqrt(sum(float(p.get("var", 0.0) or 0.0) for p in parts))
        entries[key] = LatencyStats(median=mean, p5=max(0.0, mean - Z_95 * std), p95=mean + Z_95 * std,
                                    count=int(min(int(p["count"]) for p in parts)))
    device = {"backend": "official_lut", "device": "Google Pixel 1 (ProxylessNAS official table)",
              "source": os.path.basename(os.fspath(yaml_path)), "statistic": "mean (stored as median)",
              "units": "ms"}
    return LatencyTable(device, entries, num_classes=num_classes, space_name=space.name,
                        space_fingerprint=space.fingerprint())
