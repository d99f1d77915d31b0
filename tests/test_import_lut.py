"""The imported Pixel 1 table reproduces the official ProxylessNAS estimator (sum of means).

configs/latency/pixel1_official.json is that import, committed so mobile.flags needs no
../shared: tools/import_proxyless_lut.py --out=configs/latency/pixel1_official.json
(defaults: ../shared/data/proxylessnas/mobile_trim.yaml, configs/spaces/proxyless_mobile.json).
"""

import json
import os

import pytest
import yaml

from conftest import run_cli
from proxyless_tf.errors import ConfigError
from proxyless_tf.latency.official import import_table
from proxyless_tf.latency.table import LatencyTable
from proxyless_tf.space import ZERO, Arch, SearchSpace, parse_op


def official_estimate(lut, arch):
    """The official `predict_network_latency`, written out from its source, on the raw YAML."""
    q = lambda k: lut[k]["mean"]  # noqa: E731
    lat = q("Conv-input:224x224x3-output:112x112x32")
    lat += q("Conv_1-input:7x7x320-output:7x7x1280")
    lat += q("Logits-input:7x7x1280-output:1000")
    lat += q("expanded_conv-input:112x112x32-output:112x112x16-expand:1-kernel:3-stride:1-idskip:0")
    fsize, c = 112, 16
    for layer, op in zip(arch.space.layers, arch.ops):
        out_fz = fsize // layer.stride
        if op != ZERO:
            spec = parse_op(op)
            idskip = int(layer.stride == 1 and c == layer.out_channels)
            lat += q(f"expanded_conv-input:{fsize}x{fsize}x{c}-output:{out_fz}x{out_fz}x{layer.out_channels}"
                     f"-expand:{int(spec.expand)}-kernel:{spec.kernel}-stride:{layer.stride}-idskip:{idskip}")
        fsize, c = out_fz, layer.out_channels
    return lat


@pytest.fixture(scope="module")
def mobile(repo_root, shared_data):
    space = SearchSpace.from_json(os.path.join(repo_root, "configs", "spaces", "proxyless_mobile.json"))
    path = os.path.join(shared_data, "mobile_trim.yaml")
    with open(path) as f:
        lut = yaml.safe_load(f)
    return space, path, lut


def test_predictions_equal_official_sum_of_means(mobile, tmp_path):
    space, path, lut = mobile
    table = import_table(path, space)
    table.save(tmp_path / "t.json")
    table = LatencyTable.load(tmp_path / "t.json")  # through JSON, as a user gets it
    largest = Arch(space, ["mb_k7_e6"] * space.num_layers)
    smallest = Arch(space, [ZERO if ZERO in l.candidates else "mb_k3_e3" for l in space.layers])
    archs = [space.sample(seed=s) for s in range(3)] + [largest, smallest]
    for arch in archs:
        assert table.predict(arch) == pytest.approx(official_estimate(lut, arch), abs=1e-6)
    # The all-zero net pays stem + first block + 6 stride/width-changing blocks + head only.
    assert table.predict(smallest) < table.predict(archs[0]) < table.predict(largest)


def test_head_is_conv1_plus_logits(mobile):
    space, path, lut = mobile
    table = import_table(path, space)
    head = [k for k in table.entries if k.startswith("head:")]
    assert head == ["head:7x7x320:1280:1000"]
    want = lut["Conv_1-input:7x7x320-output:7x7x1280"]["mean"] + lut["Logits-input:7x7x1280-output:1000"]["mean"]
    assert table.entries[head[0]].median == pytest.approx(want, abs=1e-12)


def test_cli_writes_table(repo_root, shared_data, tmp_path):
    out = tmp_path / "pixel1.json"
    proc = run_cli(["tools/import_proxyless_lut.py", f"--yaml={shared_data}/mobile_trim.yaml", f"--out={out}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(LatencyTable.load(out)) == 69  # 3 fixed keys + 66 distinct candidate blocks


COMMITTED = os.path.join("configs", "latency", "pixel1_official.json")


def test_committed_table_is_a_fresh_conversion_of_the_official_yaml(mobile, repo_root, tmp_path):
    space, path, lut = mobile
    import_table(path, space).save(tmp_path / "fresh.json")
    with open(tmp_path / "fresh.json") as f:
        fresh = json.load(f)
    with open(os.path.join(repo_root, COMMITTED)) as f:
        committed = json.load(f)
    assert committed == fresh  # regenerate with the command in this module's docstring
    stem = committed["entries"]["stem:224x224x3:k3:s2:32"]
    assert stem["median"] == lut["Conv-input:224x224x3-output:112x112x32"]["mean"]
    assert stem["count"] == lut["Conv-input:224x224x3-output:112x112x32"]["count"]


def test_committed_table_covers_the_mobile_space_without_shared(repo_root):
    """Runs without ../shared: the table mobile.flags names prices every network of the mobile space."""
    space = SearchSpace.from_json(os.path.join(repo_root, "configs", "spaces", "proxyless_mobile.json"))
    table = LatencyTable.load(os.path.join(repo_root, COMMITTED))
    assert len(table) == 69 and table.num_classes == 1000
    table.check_space(space, 1000)
    lo, hi = table.latency_range(space)
    assert (round(lo, 2), round(hi, 2)) == (29.61, 191.03)  # all-zero/smallest and all mb_k7_e6
    with open(os.path.join(repo_root, "configs", "mobile.flags")) as f:
        flags = f.read().splitlines()
    assert f"--latency_table={COMMITTED}" in flags and lo < 80 < hi and "--target_ms=80" in flags


def test_uncovered_space_is_one_clear_error(repo_root, shared_data):
    # Fashion-MNIST blocks (28x28 inputs) are not in the Pixel 1 table.
    fm = SearchSpace.from_json(os.path.join(repo_root, "configs", "spaces", "fashion_mnist.json"))
    with pytest.raises(ConfigError, match="not in the official table"):
        import_table(os.path.join(shared_data, "mobile_trim.yaml"), fm, num_classes=10)


def test_bad_yaml_is_one_clear_error(repo_root, tmp_path):
    fm = SearchSpace.from_json(os.path.join(repo_root, "configs", "spaces", "fashion_mnist.json"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("Conv-input:224x224x3-output:112x112x32: {count: 3, mean: [oops\n")
    with pytest.raises(ConfigError, match="cannot be read as YAML"):
        import_table(bad, fm)
