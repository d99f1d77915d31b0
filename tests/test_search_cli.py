"""python -m proxyless_tf.search: flag files from anywhere, mobile.flags on mock ImageNet, bad inputs."""

import json
import os

import numpy as np
import pytest

from conftest import ROOT, assert_one_line_error, run_cli
from search_helpers import MICRO, synthetic_table

from proxyless_tf.errors import ConfigError
from proxyless_tf.space import SearchSpace


def write_micro(tmp_path, num_classes=10, drop=()):
    d = dict(MICRO, input_shape=[28, 28, 1])
    space = SearchSpace.from_dict(d)
    sp = tmp_path / "micro.json"
    space.to_json(sp)
    table = synthetic_table(space, num_classes, drop=drop)
    tp = tmp_path / "table.json"
    table.save(tp)
    return space, table, str(sp), str(tp)


def test_flagfile_by_name_from_another_directory_and_target_out_of_range(tmp_path):
    fm = SearchSpace.from_json(os.path.join(ROOT, "configs", "spaces", "fashion_mnist.json"))
    table = synthetic_table(fm, 10)
    table.save(tmp_path / "t.json")
    lo, hi = table.latency_range(fm, 10)
    proc = run_cli(["-m", "proxyless_tf.search", "--flagfile=quickstart.flags", f"--latency_table={tmp_path}/t.json",
                    f"--target_ms={hi * 3}", f"--out_dir={tmp_path}/run"], cwd=str(tmp_path))
    assert_one_line_error(proc, "outside the reachable range", f"{lo:.4g}", f"{hi:.4g}")


def test_table_missing_a_block_is_one_line(tmp_path):
    from proxyless_tf.latency import keys as keys_lib

    space = SearchSpace.from_dict(dict(MICRO, input_shape=[28, 28, 1]))
    missing = keys_lib.layer_key(space.layers[1], "mb_k5_e3")
    _, _, sp, tp = write_micro(tmp_path, drop=(missing,))
    proc = run_cli(["-m", "proxyless_tf.search", f"--space={sp}", f"--latency_table={tp}", "--target_frac=0.5",
                    "--latency_loss=add#linear", f"--out_dir={tmp_path}/run"])
    assert_one_line_error(proc, "no measurement", missing)


def test_missing_dataset_and_unknown_flagfile_are_one_line(tmp_path):
    # mobile.flags with --manual_dir alone gets past its space and the committed Pixel 1 table (checked
    # before the data) and stops only at the missing ImageNet tar files.
    proc = run_cli(["-m", "proxyless_tf.search", "--flagfile=mobile.flags", f"--data_dir={tmp_path}",
                    f"--manual_dir={tmp_path}/manual", f"--out_dir={tmp_path}/run"], cwd=str(tmp_path))
    assert_one_line_error(proc, "imagenet2012", "ILSVRC2012_img_train.tar")
    # The table it names from the top of the checkout resolves from another directory: a wrong head
    # width fails on that very file (the check runs only on a table that was found).
    proc = run_cli(["-m", "proxyless_tf.search", "--flagfile=mobile.flags", "--latency_num_classes=10",
                    f"--out_dir={tmp_path}/run"], cwd=str(tmp_path))
    assert_one_line_error(proc, os.path.join(ROOT, "configs", "latency", "pixel1_official.json"),
                          "1000 classes, not 10")
    proc = run_cli(["-m", "proxyless_tf.search", "--flagfile=nope/none.flags"])
    assert_one_line_error(proc, "none.flags")


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    _, _, sp, tp = write_micro(tmp_path)
    out = tmp_path / "run"
    proc = run_cli(["-m", "proxyless_tf.search", f"--space={sp}", f"--latency_table={tp}", "--target_frac=0.5",
                    "--latency_loss=add#linear", "--max_train=64", "--valid_size=20", "--batch_size=16",
                    "--epochs=3", "--steps_per_epoch=2", "--weight_lr=1e30", "--weight_momentum=0",
                    f"--out_dir={out}"])
    line = assert_one_line_error(proc, "NaN", "last good checkpoint")
    assert not (out / "arch.json").exists()
    if "kept at" in line:
        assert (out / "checkpoints" / "last.weights.h5").exists()


@pytest.mark.slow
def test_mobile_flags_on_mock_imagenet_for_a_few_steps(tmp_path, monkeypatch):
    """configs/mobile.flags on tfds mock ImageNet, at resolution 32, batch 2, two steps per epoch.

    The space is the mobile space with one layer per stage (widths, strides, candidates as
    written): tracing the full 21-layer supernet takes minutes on two cores, which is the
    search's business, not this test's. Every other flag comes from mobile.flags.
    """
    import tensorflow_datasets as tfds
    from absl import flags

    from proxyless_tf.cli import search

    space = SearchSpace.from_json(os.path.join(ROOT, "configs", "spaces", "proxyless_mobile.json"))
    d = space.to_dict()
    d["input_shape"] = [32, 32, 3]
    d["stages"] = [dict(st, depth=1) for st in d["stages"]]
    small = SearchSpace.from_dict(d)
    small.to_json(tmp_path / "mobile_d1.json")
    table = synthetic_table(small, 1000)
    table.save(tmp_path / "t.json")
    lo, hi = table.latency_range(small, 1000)
    monkeypatch.chdir(tmp_path)
    argv = search.resolve_flagfiles([
        "search", "--flagfile=mobile.flags", "--resolution=32", "--batch_size=2", "--valid_batch_size=2",
        "--valid_size=1000", "--epochs=2", "--warmup_epochs=1", "--steps_per_epoch=2", "--arch_every=1",
        "--bn_recalibration_steps=1", f"--latency_table={tmp_path}/t.json", f"--target_ms={(lo + hi) / 2}",
        f"--space={tmp_path}/mobile_d1.json", f"--out_dir={tmp_path}/run", "--verbose=0"])
    flags.FLAGS.unparse_flags()
    flags.FLAGS(argv)
    try:
        assert flags.FLAGS.dataset == "imagenet2012" and flags.FLAGS.latency_loss == "mul#log"
        with tfds.testing.mock_data(num_examples=1200):
            search.main(["search"])
    finally:
        flags.FLAGS.unparse_flags()
    res = json.load(open(tmp_path / "run" / "result.json"))
    assert len(res["ops"]) == small.num_layers == 6
    hist = json.load(open(tmp_path / "run" / "alpha_history.json"))
    assert [h["epoch"] for h in hist] == [1, 2] and len(hist[0]["probs"]) == 6
    assert (tmp_path / "run" / "summary.txt").exists() and (tmp_path / "run" / "arch.json").exists()
    assert (tmp_path / "run" / "checkpoints" / "last.weights.h5").exists()


def test_reinforce_mode_from_the_command_line(tmp_path):
    """--mode=reinforce --reinforce_w --reinforce_w_under --reinforce_samples (on a nested-sharing supernet): a Proxyless-R
    search end to end; its metrics reach the history."""
    space, _, sp, tp = write_micro(tmp_path)
    out = tmp_path / "run"
    proc = run_cli(["-m", "proxyless_tf.search", f"--space={sp}", f"--latency_table={tp}", "--target_frac=0.5",
                    "--mode=reinforce", "--reinforce_w=0.2", "--reinforce_samples=3", "--reinforce_w_under=0", "--weight_sharing=nested", "--max_train=64", "--valid_size=20", "--batch_size=16",
                    "--epochs=2", "--steps_per_epoch=2", "--bn_recalibration_steps=1", "--verbose=0",
                    f"--out_dir={out}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    hist = json.load(open(out / "alpha_history.json"))
    assert {"reward", "baseline", "valid_acc"} <= set(hist[-1]["metrics"])
    assert "mode reinforce, weights nested" in (out / "summary.txt").read_text()
    from proxyless_tf.search import config as search_config  # the run's config, read back as the ranking tool does

    cfg = search_config.read_config(out)
    assert (cfg.mode, cfg.weight_sharing, cfg.reinforce_w, cfg.reinforce_samples, cfg.max_train, cfg.space) == \
        ("reinforce", "nested", 0.2, 3, 64, str(sp))
    assert cfg.reinforce_w_under == 0.0
    with pytest.raises(ConfigError, match="config.json"):
        search_config.read_config(tmp_path)
    assert "reward acc*(T/lat)^0.2 over T, ^0 under, 3 arch(s) per update" in (out / "summary.txt").read_text()
    # run_search applies cpu_kernels.accelerate (oneDNN is on in the CLI, no GPU here): both
    # searchable layers' nested blocks get the slice depthwise, and BN layers the fused op
    # every plain BN (stem, first block, each nested candidate's, head) and depthwise layer of the
    # same supernet, counted here by type
    import keras

    from proxyless_tf.search.supernet import SuperNet

    layers = list(SuperNet(space, 10, None, mode="reinforce", weight_sharing="nested")._flatten_layers(include_self=False))
    want = {"depthwise": sum(type(l) is keras.layers.DepthwiseConv2D for l in layers),
            "batchnorm": sum(type(l) is keras.layers.BatchNormalization for l in layers), "nested": 2}
    assert want["batchnorm"] > 2 and want["depthwise"] >= 1
    assert json.load(open(out / "result.json"))["cpu_kernels"] == want
    assert f"cpu kernels depthwise {want['depthwise']}, batchnorm {want['batchnorm']}, nested 2" in proc.stdout


@pytest.mark.slow
def test_missing_table_is_built_on_the_fly_with_the_reference_clock(tmp_path):
    """--build_table --table_clock=ref: the search measures its own table (ratio clock) and uses it;
    --derive_measure then measures the derived network with that table's LiteRT settings."""
    _, _, sp, _ = write_micro(tmp_path)
    tp = tmp_path / "built" / "table.json"
    out = tmp_path / "run"
    proc = run_cli(["-m", "proxyless_tf.search", f"--space={sp}", f"--latency_table={tp}", "--build_table",
                    "--table_clock=ref", "--target_frac=0.5", "--latency_loss=add#abs", "--max_train=64", "--valid_size=20",
                    "--batch_size=16", "--epochs=2", "--warmup_epochs=1", "--steps_per_epoch=2",
                    "--bn_recalibration_steps=1", "--verbose=0", "--derive_measure", "--derive_tolerance=0.05",
                    f"--out_dir={out}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = json.load(open(tp))
    assert table["device"]["clock"] == "ref" and table["device"]["reference_ms"] > 0
    assert table["statistic"] == "median"
    result = json.load(open(out / "result.json"))
    assert result["latency_table"] == str(tp) and result["predicted_ms"] > 0
    # --derive_measure: each round measured a new real network; the result is the round nearest
    # the target, the arch written is that round's, and a round after one outside half the band
    # aimed the table where the rounds before pointed (secant when bracketed, else the ratio)
    from proxyless_tf.latency.measured_derivation import next_table_targets

    rounds, target = result["measured_rounds"], result["target_ms"]
    assert 1 <= len(rounds) <= 5 and all(r["measured_ms"] > 0 for r in rounds)
    assert len({tuple(r["ops"]) for r in rounds}) == len(rounds)
    best = min(rounds, key=lambda r: abs(r["measured_ms"] - target))
    assert result["measured_ms"] == best["measured_ms"] and result["ops"] == best["ops"]
    assert json.load(open(out / "arch.json"))["ops"] == best["ops"]
    for k, (before, after) in enumerate(zip(rounds, rounds[1:])):
        assert abs(before["measured_ms"] - target) > 0.5 * 0.05 * target
        points = [(r["predicted_ms"], r["measured_ms"]) for r in rounds[:k + 1]]
        aims = next_table_targets(points, before["predicted_ms"], before["measured_ms"], target)
        assert any(after["table_target_ms"] == pytest.approx(a) for a in aims)
    assert proc.stdout.count("derive_measure: measured") == len({tuple(r["ops"]) for r in rounds})
    assert f"measured        {result['measured_ms']:.4g} ms on litert" in (out / "summary.txt").read_text()


def test_derive_measure_refuses_a_table_it_cannot_measure_before_training(tmp_path):
    _, _, sp, tp = write_micro(tmp_path)  # a synthetic table: no device to measure
    args = ["-m", "proxyless_tf.search", f"--space={sp}", f"--latency_table={tp}", "--target_frac=0.5",
            "--derive_measure", f"--out_dir={tmp_path}/run"]
    assert_one_line_error(run_cli(args), "device.backend", "'synthetic'", "drop --derive_measure")
    assert_one_line_error(run_cli(args + ["--derive_tolerance=0"]), "--derive_measure", "--derive_tolerance > 0")
    assert_one_line_error(run_cli(args + ["--measured_target_ms=0"]), "--measured_target_ms", "must be positive")
    assert_one_line_error(run_cli(args[:-2] + ["--measured_target_ms=1", f"--out_dir={tmp_path}/run"]),
                          "--measured_target_ms", "pass --derive_measure too")
    assert not (tmp_path / "run").exists()


def test_help_lists_the_user_flags_and_helpfull_the_research_ones(tmp_path):
    """--help: the ~16 flags an ordinary user needs, by section; --helpfull: every flag, grouped by section."""
    import re

    short = run_cli(["-m", "proxyless_tf.search", "--help"])
    assert "Traceback" not in short.stderr and "error:" not in short.stderr, short.stderr[-2000:]  # absl exits 1
    listed = re.findall(r"^  --(?:\[no\])?(\w+)", short.stdout, re.M)
    assert 13 <= len(listed) <= 20, listed
    assert {"dataset", "space", "latency_table", "target_ms", "target_frac", "mode", "epochs", "out_dir"} <= set(listed)
    assert "sandwich" not in listed and "--sandwich" not in short.stdout
    assert "  latency      --latency_table --build_table --target_ms --target_frac --latency_loss" in short.stdout
    full = run_cli(["-m", "proxyless_tf.search", "--helpfull"])
    assert re.search(r"^  --sandwich: ", full.stdout, re.M), full.stderr[-2000:]
    assert "proxyless_tf.search [algorithm]:" in full.stdout and "proxyless_tf.search [derivation]:" in full.stdout
    # a research flag still works on the command line: its value reaches the config's check
    proc = run_cli(["-m", "proxyless_tf.search", "--mode=full", "--sandwich=largest", f"--out_dir={tmp_path}/run"])
    assert_one_line_error(proc, "--sandwich", "adds nothing to --mode=full")
    assert not (tmp_path / "run").exists()


def test_every_flag_default_is_the_config_default():
    """The flags are made from SearchConfig's fields: one default per option, the same in both."""
    from absl import flags

    from proxyless_tf.cli import search_flags
    from proxyless_tf.search import config as config_lib

    fields = config_lib.fields()
    assert len(fields) == 59 and len(search_flags.USER) == 16
    for f in fields:
        assert flags.FLAGS[f.name].default == f.default, f.name
    assert flags.FLAGS["reinforce_samples"].default == config_lib.default("reinforce_samples") == 10
