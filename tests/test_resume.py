"""Kill and resume for real: SIGKILL a search at a mid-run checkpoint, rerun the same command,
and get the uninterrupted run's arch.json and α (--deterministic); a diverging α stops the run."""

import json
import subprocess

import h5py
import numpy as np
import pytest

from conftest import ROOT, assert_one_line_error, cli_env, run_cli
from resume_helpers import python_cmd, run_killed_then_resumed, write_fake_fashion
from test_search_cli import write_micro


def final_alpha(run_dir):
    """α of every searchable layer in the run's last good checkpoint (raw logits, not rounded)."""
    with h5py.File(run_dir / "checkpoints" / "last.weights.h5", "r") as f:
        names = sorted(k for k in f["layers"] if k.startswith("mixed_op"))
        return [np.asarray(f["layers"][k]["vars"]["0"]) for k in names]


def search_cmd(sp, tp, data_dir, out, *extra):
    return python_cmd("-m", "proxyless_tf.search", f"--space={sp}", f"--latency_table={tp}", "--target_frac=0.5",
                      "--latency_loss=add#linear", f"--data_dir={data_dir}", "--valid_size=40", "--batch_size=8",
                      "--epochs=3", "--steps_per_epoch=5", "--checkpoint_every=2", "--arch_lr=0.05",
                      "--bn_recalibration_steps=2", "--deterministic", "--verbose=0", f"--out_dir={out}", *extra)


@pytest.mark.slow
def test_killed_search_resumes_to_the_uninterrupted_result(tmp_path):
    _, _, sp, tp = write_micro(tmp_path)
    data_dir = write_fake_fashion(tmp_path)
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    # the uninterrupted run in parallel with the one that gets killed (2 cores; tracing dominates)
    reference = subprocess.Popen(search_cmd(sp, tp, data_dir, ref), env=cli_env(), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
    left, done = run_killed_then_resumed(search_cmd(sp, tp, data_dir, cut), str(cut / "resume" / "state.json"),
                                         ready=lambda m: m["step"] > 0, log=str(tmp_path / "killed.log"))
    _, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err[-3000:]
    assert done.returncode == 0, done.stderr[-3000:]
    assert left["epoch"] < 3 and not (left["epoch"], left["step"]) == (0, 0)  # killed mid-run
    assert "search: resuming" in done.stdout, done.stdout[-2000:]
    assert not (cut / "resume").exists() and not (ref / "resume").exists()  # cleared after a finished run

    assert json.loads((cut / "arch.json").read_text()) == json.loads((ref / "arch.json").read_text())
    for a, b in zip(final_alpha(cut), final_alpha(ref)):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
    h_cut, h_ref = (json.loads((d / "alpha_history.json").read_text()) for d in (cut, ref))
    assert [h["epoch"] for h in h_cut] == [h["epoch"] for h in h_ref] == [1, 2, 3]
    for hc, hr in zip(h_cut, h_ref):
        assert hc["argmax"] == hr["argmax"]
        for pc, pr in zip(hc["probs"], hr["probs"]):
            np.testing.assert_allclose([pc[k] for k in sorted(pc)], [pr[k] for k in sorted(pr)], atol=1e-6)
        for k in hr["metrics"]:  # the resumed epoch's averages too (metric state is checkpointed)
            np.testing.assert_allclose(hc["metrics"][k], hr["metrics"][k], rtol=1e-6, atol=1e-7, err_msg=k)
    r_cut, r_ref = (json.loads((d / "result.json").read_text()) for d in (cut, ref))
    assert r_cut["valid_acc"] == r_ref["valid_acc"] and r_cut["ops"] == r_ref["ops"]


def test_resume_refuses_a_changed_command(tmp_path):
    from proxyless_tf.runtime.resume import ResumeState

    state = ResumeState(str(tmp_path / "resume"), {"epochs": 3, "arch_lr": 0.05})
    (tmp_path / "resume").mkdir()
    (tmp_path / "resume" / "state.json").write_text(json.dumps({"config": {"epochs": 4, "arch_lr": 0.05}}))
    try:
        state.load()
    except Exception as e:  # noqa: BLE001 - the type and the text are what is checked
        assert type(e).__name__ == "ConfigError" and "differs in epochs" in str(e) and "delete" in str(e)
    else:
        raise AssertionError("a changed command was resumed")


def test_resume_refuses_a_damaged_checkpoint_before_touching_the_model(tmp_path):
    """state.json that is not an object, a field of the wrong type, a truncated .weights.h5: one
    ConfigError naming the file and the field, from `load` (before any restore or write)."""
    import keras

    from proxyless_tf.errors import ConfigError
    from proxyless_tf.runtime.resume import ResumeState

    cfg = {"epochs": 3}
    d = tmp_path / "resume"
    state = ResumeState(str(d), cfg)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    state.save(model, 1, 5)
    assert state.load()["step"] == 5  # the intact checkpoint loads
    meta = json.loads((d / "state.json").read_text())

    def refused(*needles):
        with pytest.raises(ConfigError) as e:
            state.load()
        for n in needles:
            assert n in str(e.value), (n, str(e.value))

    weights = d / meta["weights"]
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    refused(meta["weights"], "damaged", "delete")
    weights.write_bytes(b"")
    refused(meta["weights"], "not an HDF5")
    weights.write_bytes(good)
    (d / "state.json").write_text("[1, 2]")
    refused("state.json", "<top>", "expected a JSON object, got list", "delete")
    (d / "state.json").write_text(json.dumps(dict(meta, step="5")))
    refused("state.json", "step", "non-negative integer")
    (d / "state.json").write_text(json.dumps(dict(meta, weights="../../etc/passwd")))
    refused("state.json", "weights", "not a file name inside")


@pytest.mark.slow
def test_diverging_alpha_stops_with_one_line_and_keeps_the_last_good_checkpoint(tmp_path):
    _, _, sp, tp = write_micro(tmp_path)
    data_dir = write_fake_fashion(tmp_path)
    out = tmp_path / "run"
    proc = run_cli(["-m", "proxyless_tf.search", f"--space={sp}", f"--latency_table={tp}", "--target_frac=0.5",
                    "--latency_loss=add#linear", f"--data_dir={data_dir}", "--valid_size=40", "--batch_size=8",
                    "--epochs=3", "--warmup_epochs=1", "--steps_per_epoch=2", "--arch_lr=1000", "--verbose=0",
                    f"--out_dir={out}"], cwd=ROOT)
    line = assert_one_line_error(proc, "alpha", "diverged", "epoch 2 step 1", "bound 50", "--arch_lr",
                                 "last good checkpoint kept at", "(epoch 1)")
    assert not (out / "arch.json").exists()
    alphas = final_alpha(out)  # the warm-up epoch's: α untouched
    assert all(np.all(a == 0) for a in alphas), (line, alphas)
    state = json.loads((out / "resume" / "state.json").read_text())
    assert (state["epoch"], state["step"]) == (1, 0)  # the resume state is the last good one too


@pytest.mark.slow
def test_killed_retraining_resumes_to_the_uninterrupted_weights(tmp_path):
    from train_helpers import write_tiny_arch

    arch = write_tiny_arch(tmp_path)
    data_dir = write_fake_fashion(tmp_path)

    def cmd(out):
        return python_cmd("-m", "proxyless_tf.train", f"--arch={arch}", f"--data_dir={data_dir}", "--epochs=3",
                          "--steps_per_epoch=5", "--batch_size=16", "--checkpoint_every=2", "--val_examples=40",
                          "--deterministic", f"--out_dir={out}")

    ref, cut = tmp_path / "ref", tmp_path / "cut"
    reference = subprocess.Popen(cmd(ref), env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 text=True)
    left, done = run_killed_then_resumed(cmd(cut), str(cut / "resume" / "state.json"), ready=lambda m: m["step"] > 0,
                                         log=str(tmp_path / "killed.log"))
    _, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err[-3000:]
    assert done.returncode == 0, done.stderr[-3000:]
    assert left["epoch"] < 3 and "train: resuming" in done.stdout, done.stdout[-2000:]
    assert not (cut / "resume").exists()
    from proxyless_tf.export.tflite import load_keras_model  # registers Normalize, the model's first layer

    w_cut, w_ref = (load_keras_model(d / "model.keras").get_weights() for d in (cut, ref))
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(w_cut, w_ref)) <= 1e-6
    r_cut, r_ref = (json.loads((d / "result.json").read_text()) for d in (cut, ref))
    assert r_cut["test_accuracy"] == r_ref["test_accuracy"]
    assert abs(r_cut["test_loss"] - r_ref["test_loss"]) <= 1e-6
    log_cut, log_ref = ((d / "train_log.csv").read_text().splitlines() for d in (cut, ref))
    assert len(log_cut) == len(log_ref) == 4  # header + 3 epochs, no duplicate row from the killed run
