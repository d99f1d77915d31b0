"""--derive_samples: drawn networks moved into the band, scored by the supernet, the best derived."""

import json
import types

import numpy as np
import pytest

from conftest import assert_one_line_error, run_cli
from test_search_cli import write_micro

from proxyless_tf.search import sampled_derivation
from proxyless_tf.search.supernet import derive_toward_target


def test_the_table_edits_begin_at_the_given_start():
    # two layers of three ops costing 0, 1, 2 ms; α's argmax [0, 1] (1 ms)
    logp = [np.log([0.6, 0.3, 0.1]), np.log([0.4, 0.5, 0.1])]
    costs = [[0.0, 1.0, 2.0]] * 2
    assert derive_toward_target(logp, costs, 0.0, 2.0, 0.1) == [1, 1]  # +1 ms where it loses the least logp
    assert derive_toward_target(logp, costs, 0.0, 2.0, 0.1, start=[2, 0]) == [2, 0]  # in the band: kept
    # 4 ms: down one step where it gains the most logp per ms (layer 1 first, then layer 0)
    assert derive_toward_target(logp, costs, 0.0, 3.0, 0.1, start=[2, 2]) == [2, 1]
    assert derive_toward_target(logp, costs, 0.0, 2.0, 0.1, start=[2, 2]) == [1, 1]


def test_draws_are_seeded_uniform_or_from_softmax_alpha():
    logp = [np.log([0.98, 0.01, 0.01]), np.log([0.01, 0.01, 0.98])]
    def draw(proposal, seed):
        return sampled_derivation.draw(logp, 200, proposal, np.random.default_rng(seed)).tolist()

    a = draw("uniform", 3)
    assert a == draw("uniform", 3) and a != draw("uniform", 4)
    counts = np.bincount([s[0] for s in a], minlength=3)
    assert counts.min() > 40  # every op drawn about a third of the time
    b = draw("alpha", 3)
    assert sum(s == [0, 2] for s in b) > 180  # 0.98^2 of the draws
    with pytest.raises(ValueError, match="proposal"):
        draw("argmax", 0)


def test_candidates_are_uniform_over_the_band_and_edited_in_only_when_the_band_is_too_sparse():
    import keras

    from search_helpers import MICRO, synthetic_table
    from proxyless_tf.space import SearchSpace
    from proxyless_tf.search.supernet import SuperNet

    space = SearchSpace.from_dict(dict(MICRO, input_shape=[28, 28, 1]))
    table = synthetic_table(space, 10)
    keras.utils.set_random_seed(0)
    net = SuperNet(space, 10, table, seed=0)
    every = [[i, j] for i in range(len(space.layers[0].candidates)) for j in range(len(space.layers[1].candidates))]
    pred = net.predicted_ms_of(every)
    np.testing.assert_allclose(pred, [table.predict(net.arch_of(ix), 10) for ix in every], rtol=1e-6)
    target, tol = 2.3, 0.015  # the micro space's 6 networks predict 2.13 .. 2.37 ms
    band = {tuple(ix) for ix, p in zip(every, pred) if abs(p - target) <= tol * target}
    assert 1 < len(band) < len(every)
    got = sampled_derivation.candidates(net, 100, "uniform", seed=0, target_ms=target, tolerance=tol)
    assert sorted(tuple(s) for s, _, nudged in got) == sorted(band) and not any(n for _, _, n in got)
    # no draw left to reject from: every candidate is edited into the band, distinct
    edited = sampled_derivation.candidates(net, 100, "uniform", seed=0, target_ms=target, tolerance=tol, max_draws=0)
    assert edited and all(n for _, _, n in edited) and len({tuple(a.ops) for _, a, _ in edited}) == len(edited)
    for _, arch, _ in got + edited:
        assert abs(table.predict(arch, 10) - target) <= tol * target + 1e-9


def test_scores_do_not_depend_on_order_and_bn_statistics_are_restored():
    import keras
    import tensorflow as tf

    from search_helpers import MICRO
    from proxyless_tf.space import SearchSpace
    from proxyless_tf.search.supernet import SuperNet

    space = SearchSpace.from_dict(dict(MICRO, input_shape=[28, 28, 1]))
    keras.utils.set_random_seed(0)
    net = SuperNet(space, 10, None, seed=0, weight_sharing="nested")
    x = tf.random.normal([32, 28, 28, 1])
    y = tf.constant(np.arange(32) % 10)
    net._forward(x, False, "argmax")
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    valid = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    archs = [space.sample(seed=i) for i in range(3)]
    # the path function traced once per supernet computes each arch's own network: its logits are those
    # of the plain path (Python-int op indices, no switch_case), and differ between archs
    _, infer_path = net._path_functions()
    logits = []
    for arch in archs[:2]:
        idx = [m.candidates.index(op) for m, op in zip(net.mixed_ops, arch.ops)]
        logits.append(infer_path(x, tf.constant(idx, tf.int32)).numpy())
        np.testing.assert_allclose(logits[-1], net._forward(x, False, "single", idx).numpy(), rtol=1e-5, atol=1e-6)
    assert archs[0].ops != archs[1].ops and not np.allclose(logits[0], logits[1])
    data = types.SimpleNamespace(valid=valid, search=train)
    before = [v.numpy() for v in net.non_trainable_variables]
    fwd = sampled_derivation.score_all(net, archs, data, 2, seed=1, log=lambda _: None)
    back = sampled_derivation.score_all(net, archs[::-1], data, 2, seed=1, log=lambda _: None)
    assert fwd == back[::-1]
    for v, b in zip(net.non_trainable_variables, before):
        np.testing.assert_array_equal(v.numpy(), b)
    # a score is the path's accuracy as evaluate_argmax gives it, from the same statistics and seed
    keras.utils.set_random_seed(1)
    assert fwd[1] == net.evaluate_argmax(valid, train, 2, arch=archs[1])


@pytest.mark.slow
def test_search_cli_derives_from_the_best_scored_draw(tmp_path):
    space, table, sp, tp = write_micro(tmp_path)
    out = tmp_path / "run"
    args = ["-m", "proxyless_tf.search", f"--space={sp}", f"--latency_table={tp}", "--target_frac=0.5",
            "--latency_loss=add#linear", "--max_train=64", "--valid_size=20", "--batch_size=16", "--epochs=2",
            "--warmup_epochs=1", "--steps_per_epoch=2", "--bn_recalibration_steps=1", "--verbose=0",
            "--derive_tolerance=0.2", "--derive_samples=5"]
    proc = run_cli(args + [f"--out_dir={out}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.load(open(out / "result.json"))
    cands = json.load(open(out / "derive_samples.json"))
    assert 1 <= len(cands) <= 5 and res["derive_samples"] == len(cands)
    scores = [c["score"] for c in cands]
    assert scores == sorted(scores, reverse=True) and res["derive_sample_scores"] == scores
    assert len({tuple(c["ops"]) for c in cands}) == len(cands)  # distinct networks
    target = res["target_ms"]
    from proxyless_tf.space import Arch

    for c in cands:  # every candidate in the table's band, kept as drawn (rejection), not edited into it
        assert abs(table.predict(Arch(space, c["ops"]), 10) - target) <= 0.2 * target + 1e-9
        assert not c["nudged"] and [space.layers[l].candidates[i] for l, i in enumerate(c["start"])] == c["ops"]
    assert res["ops"] == cands[0]["ops"]  # the best scored is the derived network
    # its validation accuracy is the score it was picked by (same recalibration, seed and statistics)
    assert res["valid_acc"] == pytest.approx(cands[0]["score"])
    assert f"picked by the supernet's score among {len(cands)} uniform draws" in (out / "summary.txt").read_text()
    # bad input: one line each, nothing written
    bad = tmp_path / "bad"
    assert_one_line_error(run_cli(args + ["--derive_samples=-1", f"--out_dir={bad}"]), "--derive_samples", ">= 0")
    assert_one_line_error(run_cli(args + ["--derive_tolerance=0", f"--out_dir={bad}"]), "--derive_samples",
                          "--derive_tolerance > 0")
    assert not bad.exists()


@pytest.mark.slow
def test_with_derive_measure_each_round_redraws_in_its_own_band(tmp_path):
    """A real LiteRT table of the micro space: when the pick misses the measured band, the next round
    draws and scores again around the corrected table target instead of editing the scored network."""
    from proxyless_tf.latency import backends, builder

    space, _, sp, _ = write_micro(tmp_path)
    tp = tmp_path / "litert.json"
    builder.build_table(space, backends.make_backend("litert", threads=1, clock="ref", warmup_runs=5, num_runs=20),
                        str(tp), 10, progress=False)
    out = tmp_path / "run"
    proc = run_cli(["-m", "proxyless_tf.search", f"--space={sp}", f"--latency_table={tp}", "--target_frac=0.5",
                    "--latency_loss=add#linear", "--max_train=64", "--valid_size=20", "--batch_size=16", "--epochs=2",
                    "--warmup_epochs=1", "--steps_per_epoch=2", "--bn_recalibration_steps=1", "--verbose=0",
                    "--derive_measure", "--derive_tolerance=0.05", "--derive_samples=3", f"--out_dir={out}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.load(open(out / "result.json"))
    rounds, cands = res["measured_rounds"], json.load(open(out / "derive_samples.json"))
    assert 1 <= len(rounds) <= 5
    # every round drew and scored its own candidates
    assert proc.stdout.count("derive_samples: 1/") >= len(rounds)
    kept = min(rounds, key=lambda r: abs(r["measured_ms"] - res["measured_target_ms"]))
    assert res["ops"] == kept["ops"] == cands[0]["ops"]  # the kept round's pick, with that round's candidates
