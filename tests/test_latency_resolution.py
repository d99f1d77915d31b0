"""A search at a proxy resolution prices its latency term at the deployment resolution.

The supernet runs at 8x8 (the proxy); the table only has keys at 24x24 (the deployment
size) and for 1000 classes; `latency_space` / `latency_num_classes` make every latency
number of the search (expectation, argmax, range, latency-aware derivation) the table's
own value at 24x24, and `--latency_resolution` the table does not cover is one line.
"""

import numpy as np
import pytest

from conftest import assert_one_line_error, run_cli
from search_helpers import MICRO

from proxyless_tf import space as space_lib
from proxyless_tf.errors import ConfigError
from proxyless_tf.latency import keys as keys_lib
from proxyless_tf.latency.table import LatencyStats, LatencyTable

PROXY, DEPLOY, TABLE_CLASSES, DATA_CLASSES = 8, 24, 1000, 4


def at(res):
    return space_lib.SearchSpace.from_dict(dict(MICRO, input_shape=[res, res, 3]))


def area_ms(key):
    """Latency that depends on the input size: 1e-3 ms per input pixel x k x e (fixed parts: 2 ms)."""
    p = keys_lib.parse_key(key)
    if p["kind"] != "block":
        return 2.0
    k, e = (int(v) for v in p["op"][4:].split("_e"))
    return 1e-3 * p["in_hw"][0] * p["in_hw"][1] * k * e


def deploy_table():
    space = at(DEPLOY)
    entries = {k: LatencyStats(area_ms(k), area_ms(k), area_ms(k), 10)
               for k in keys_lib.required_keys(space, TABLE_CLASSES)}
    return LatencyTable({"backend": "synthetic"}, entries, TABLE_CLASSES, space.name, space.fingerprint())


def test_expected_and_argmax_latency_use_the_deployment_keys_while_the_net_runs_at_the_proxy():
    from proxyless_tf.search.supernet import SuperNet

    proxy, deploy, table = at(PROXY), at(DEPLOY), deploy_table()
    with pytest.raises(ConfigError):  # the table has no 8x8 keys: without latency_space it is refused
        SuperNet(proxy, DATA_CLASSES, table)
    net = SuperNet(proxy, DATA_CLASSES, table, latency_space=deploy, latency_num_classes=TABLE_CLASSES, seed=0)
    assert net(np.zeros((2, PROXY, PROXY, 3), np.float32)).shape == (2, DATA_CLASSES)  # runs at the proxy size
    for m, a in zip(net.mixed_ops, ([0.3, -0.2, 0.1], [0.5, -1.0])):
        m.alpha.assign(np.asarray(a[:m.num_candidates], np.float32))
    # by hand: both layers see 12x12 at 24 (at the proxy they would see 4x4: 9x less per block)
    lay = deploy.layers
    assert [l.in_hw for l in lay] == [(12, 12), (12, 12)]
    probs = [np.exp(a) / np.exp(a).sum() for a in (np.float64([0.3, -0.2, 0.1])[:len(lay[0].candidates)],
                                                   np.float64([0.5, -1.0]))]
    fixed = 2.0 + 1e-3 * 144 * 3 * 1 + 2.0  # stem, first block mb_k3_e1 at 12x12, head
    by_hand = fixed + sum(
        sum(p * (0.0 if op == "zero" else 1e-3 * 144 * space_lib.parse_op(op).kernel * space_lib.parse_op(op).expand)
            for p, op in zip(pr, l.candidates)) for pr, l in zip(probs, lay))
    got = float(net.expected_latency())
    assert got == pytest.approx(by_hand, rel=1e-5)
    assert got == pytest.approx(float(table.expected_latency([m.alpha for m in net.mixed_ops], deploy)), rel=1e-6)
    argmax = net.derive_arch()
    assert list(argmax.space.input_shape[:2]) == [PROXY, PROXY]
    assert float(net.argmax_latency()) == pytest.approx(table.predict(net.latency_arch(argmax)), rel=1e-6)
    # the reachable range the target is checked against is the deployment one
    lo, hi = table.latency_range(deploy)
    net.compile(latency_loss="add#linear", target_ms=(lo + hi) / 2)
    with pytest.raises(ConfigError, match="outside the reachable range"):
        net.compile(latency_loss="add#linear", target_ms=lo * 0.5)
    # latency-aware derivation swaps toward the target on the deployment table
    derived = net.derive_arch(target_ms=hi, tolerance=0.01)
    assert table.predict(net.latency_arch(derived)) == pytest.approx(hi, rel=0.01)
    # a calibration with a per-block term (the LiteRT tables have one): the search's latency numbers
    # are still the table's own expectation and prediction, per-block term included
    table.calibration = {"kind": "linear", "scale": 0.8, "offset": -1.0, "per_block": 0.5}
    assert float(net.expected_latency()) == pytest.approx(
        float(table.expected_latency([m.alpha for m in net.mixed_ops], deploy)), rel=1e-6)
    assert float(net.argmax_latency()) == pytest.approx(table.predict(net.latency_arch(net.derive_arch())), rel=1e-6)
    derived = net.derive_arch(target_ms=table.latency_range(deploy)[1], tolerance=0.01)
    assert table.predict(net.latency_arch(derived)) == pytest.approx(table.latency_range(deploy)[1], rel=0.01)
    cfg = net.get_config()
    assert cfg["latency_space"]["input_shape"][:2] == [DEPLOY, DEPLOY] and cfg["latency_num_classes"] == TABLE_CLASSES


def test_latency_resolution_the_table_does_not_cover_is_one_line(tmp_path):
    sp = tmp_path / "micro.json"
    at(DEPLOY).to_json(sp)
    tp = tmp_path / "table.json"
    deploy_table().save(tp)
    base = ["-m", "proxyless_tf.search", f"--space={sp}", f"--latency_table={tp}", f"--resolution={PROXY}",
            "--target_frac=0.5", "--latency_loss=add#linear", f"--out_dir={tmp_path}/run"]
    proc = run_cli(base + ["--latency_resolution=16", f"--latency_num_classes={TABLE_CLASSES}"])
    assert_one_line_error(proc, str(tp), "--latency_resolution", "16x16", "fix:")
    proc = run_cli(base + [f"--latency_resolution={DEPLOY}", "--latency_num_classes=10"])
    assert_one_line_error(proc, "--latency_num_classes", "1000")
    assert not (tmp_path / "run").exists()
