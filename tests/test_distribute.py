"""tf.distribute: the search (plain and sandwich) on 2 mirrored CPUs equals one device; 2 workers
agree; bad clusters fail fast.

Every distributed run is a subprocess (logical CPUs and multi-worker servers need a fresh
TensorFlow). They are all started at once by a module fixture, so their start-up and
tracing overlap; each test then waits for its own.
"""

import json
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from conftest import ROOT, cli_env
from search_helpers import MICRO, synthetic_table
from train_helpers import write_tiny_arch

from proxyless_tf.runtime import distribute
from proxyless_tf.errors import ConfigError
from proxyless_tf.space import SearchSpace

DEAD_TIMEOUT_S = 8


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tf_config(ports, index):
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


class Proc:
    """A started subprocess whose output goes to files (no pipe to fill up while we wait)."""

    def __init__(self, tmp, name, args, **env):
        self.out, self.err = tmp / f"{name}.out", tmp / f"{name}.err"
        self.t0 = time.time()
        with open(self.out, "w") as o, open(self.err, "w") as e:
            self.p = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=cli_env(**env), stdout=o, stderr=e,
                                      text=True)

    def wait(self, timeout=300):
        try:
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            raise
        self.seconds = os.path.getmtime(self.err) - self.t0  # its last output, ~ when it ended
        self.returncode, self.stdout, self.stderr = self.p.returncode, self.out.read_text(), self.err.read_text()
        return self


def search_args(tmp):
    """A multi-worker search of the micro space in TMP (epochs and steps added by the caller)."""
    return ["-m", "proxyless_tf.search", f"--space={tmp}/micro.json", f"--latency_table={tmp}/table.json",
            "--target_frac=0.5", "--latency_loss=add#linear", "--valid_size=20", "--batch_size=16",
            "--warmup_epochs=1", "--bn_recalibration_steps=1", "--verbose=0", "--strategy=multi_worker"]


def killed_run_args(tmp):
    """Long enough that worker 1 can be killed after the first resume checkpoint."""
    return search_args(tmp) + ["--epochs=2", "--steps_per_epoch=150", "--max_train=2400", "--checkpoint_every=10",
                               "--cluster_timeout=240", f"--out_dir={tmp}/killed"]


def kill_after_checkpoint(procs, state, limit_s=600):
    """SIGKILL worker 1 of the `kill` pair once `state` (its first resume checkpoint) is written;
    records on the thread what it saw, for the test to assert."""
    t0 = time.time()
    while not state.exists():
        if procs["kill0"].p.poll() is not None or time.time() - t0 > limit_s:
            threading.current_thread().outcome = "no checkpoint while worker 0 ran"
            return
        time.sleep(0.2)
    procs["kill1"].p.kill()
    threading.current_thread().outcome = "killed"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    space = SearchSpace.from_dict(dict(MICRO, input_shape=[28, 28, 1]))
    space.to_json(tmp / "micro.json")
    synthetic_table(space, 10).save(tmp / "table.json")
    from proxyless_tf.latency import backends, builder

    # the worker pair derives with --derive_measure, so its table is a real LiteRT one
    builder.build_table(space, backends.make_backend("litert", threads=1, clock="ref", warmup_runs=5, num_runs=20),
                        str(tmp / "litert.json"), 10, progress=False)
    search = search_args(tmp) + ["--max_train=64", "--epochs=2", "--steps_per_epoch=2"]
    measured_pair = [f"--latency_table={tmp}/litert.json", "--derive_measure", "--derive_tolerance=0.5"]
    ports = [free_port(), free_port()]
    dead = [free_port(), free_port()]  # nothing ever listens on dead[1]
    killed = [free_port(), free_port()]
    # a longer pair whose worker 1 the test kills mid-run (then both are started again)
    long = killed_run_args(tmp)
    procs = {
        "compare": Proc(tmp, "compare", [os.path.join(ROOT, "tests", "dist_compare.py")]),
        **{f"worker{i}": Proc(tmp, f"worker{i}", search + measured_pair + ["--cluster_timeout=240",
                                                                                    f"--out_dir={tmp}/mw"],
                              TF_CONFIG=tf_config(ports, i)) for i in range(2)},
        **{f"kill{i}": Proc(tmp, f"kill{i}", long, TF_CONFIG=tf_config(killed, i)) for i in range(2)},
        "dead": Proc(tmp, "dead", search + [f"--cluster_timeout={DEAD_TIMEOUT_S}", f"--out_dir={tmp}/dead"],
                     TF_CONFIG=tf_config(dead, 0)),
        "train": Proc(tmp, "train", ["-m", "proxyless_tf.train", "--flagfile=configs/train_fashion_mnist.flags",
                                     f"--arch={write_tiny_arch(str(tmp))}", "--epochs=1", "--train_examples=512",
                                     "--batch_size=64", "--steps_per_epoch=3", "--strategy=mirrored",
                                     "--cpu_devices=2", f"--out_dir={tmp}/train"]),
    }
    # worker 1 of the long pair is killed as soon as its first resume checkpoint exists, whatever
    # test runs then (waiting for that test would let a fast pair finish first)
    killer = threading.Thread(target=kill_after_checkpoint, args=(procs, tmp / "killed" / "resume" / "state.json"),
                              daemon=True)
    killer.start()
    yield tmp, procs, killer
    print("\nsubprocess seconds:", {k: round(getattr(pr, "seconds", -1), 1) for k, pr in procs.items()})
    for pr in procs.values():
        if pr.p.poll() is None:
            pr.p.kill()


@pytest.mark.slow
def test_search_on_two_mirrored_cpus_matches_one_device(runs):
    _, procs, _ = runs
    pr = procs["compare"].wait()
    assert pr.returncode == 0, pr.stderr[-3000:]
    r = json.loads(pr.stdout.strip().splitlines()[-1])
    assert r["replicas"] == 2
    # Same global batch (8), same seeds; each batch is two copies of one half, so both runs
    # compute the same numbers and differ only in float32 summation order (~1e-7 relative;
    # observed ≤ 4e-7). 1e-5 is far below the α step of Adam at lr 0.1 (≈ 0.1 per step).
    np.testing.assert_allclose(np.concatenate(r["alpha_two"]), np.concatenate(r["alpha_one"]), atol=1e-5)
    assert max(abs(v) for a in r["alpha_one"] for v in a) > 0.01  # α did move (3 arch steps)
    assert r["weight_gap"] < 1e-5 and r["slot_gap"] < 1e-5
    assert r["replica_gap"] == 0.0  # both replicas hold bit-identical copies of every variable
    assert r["iterations"] == [6, 6, 3, 3]  # 6 weight steps; 3 arch steps after the warm-up epoch
    for key, one in r["history_one"].items():
        np.testing.assert_allclose(r["history_two"][key], one, rtol=1e-5, atol=1e-6, err_msg=key)
    # the global batch was split, not copied: the last epoch's 3 steps x 8 images counted once
    assert r["accuracy_total_count"][1] == 24.0
    # the weight step's invariant on the distributed path: at most one candidate per layer moved
    assert all(len(m) <= 1 for m in r["moved_in_first_weight_step"]), r["moved_in_first_weight_step"]
    assert sum(len(m) for m in r["moved_in_first_weight_step"]) >= 1
    # the sandwich's distributed step trains the same fixed paths with the same loss
    sw = r["sandwich"]
    np.testing.assert_allclose(np.concatenate(sw["alpha_two"]), np.concatenate(sw["alpha_one"]), atol=1e-5)
    assert sw["weight_gap"] < 1e-5 and sw["slot_gap"] < 1e-5 and sw["replica_gap"] == 0.0
    assert sw["iterations"] == [6, 6, 3, 3]
    assert sw["gap_to_no_sandwich"] > 1e-3  # the fixed paths did change the weights
    for key, one in sw["history_one"].items():
        np.testing.assert_allclose(sw["history_two"][key], one, rtol=1e-5, atol=1e-6, err_msg=key)
    # full_v2 and Proxyless-R: the same α, weights and slots on two replicas as on one device
    for mode, m in r["modes"].items():
        np.testing.assert_allclose(np.concatenate(m["alpha_two"]), np.concatenate(m["alpha_one"]), atol=1e-5,
                                   err_msg=mode)
        assert max(abs(v) for a in m["alpha_one"] for v in a) > 0.01, mode  # α moved
        assert m["weight_gap"] < 1e-5 and m["slot_gap"] < 1e-5 and m["replica_gap"] == 0.0, mode
        assert m["iterations"] == [6, 6, 3, 3], mode
        for key, one in m["history_one"].items():
            np.testing.assert_allclose(m["history_two"][key], one, rtol=1e-5, atol=1e-6, err_msg=f"{mode} {key}")
    rl = r["modes"]["reinforce"]
    assert rl["reward_steps"] == [3, 3] and rl["baseline"][0] > 0  # the baseline moved on every copy
    np.testing.assert_allclose(rl["baseline"][1], rl["baseline"][0], rtol=1e-6)
    # slices that score differently: the rewards come from the summed counts on both copies
    assert rl["count_reduction"]["reward_steps"] == [1, 1]
    np.testing.assert_allclose(rl["count_reduction"]["baselines"], [0.625, 0.625], rtol=1e-6)


@pytest.mark.slow
def test_two_worker_processes_finish_with_identical_alpha(runs):
    tmp, procs, _ = runs
    w = [procs[f"worker{i}"].wait() for i in range(2)]
    for pr in w:
        assert pr.returncode == 0, pr.stderr[-3000:]
    assert "on 2 replica(s)" in w[0].stdout
    chief, other = tmp / "mw", tmp / "mw" / "workers" / "worker1"
    h0 = json.loads((chief / "alpha_history.json").read_text())
    h1 = json.loads((other / "alpha_history.json").read_text())
    assert h0 == h1  # α probabilities (6 decimals), argmax ops and every epoch metric
    assert h0[-1]["probs"] != h0[0]["probs"]  # the second epoch's arch steps moved α
    r0, r1 = (json.loads((d / "result.json").read_text()) for d in (chief, other))
    # (valid_acc may differ: batch-norm moving statistics are per replica, and the final
    # evaluation re-estimates them on only one batch here)
    assert r0["argmax_ops"] == r1["argmax_ops"]
    # --derive_measure: only the chief measured (a second process timing interpreters on the
    # same host would disturb it); the other worker derived from the table alone
    assert r0["measured_ms"] > 0 and 1 <= len(r0["measured_rounds"]) <= 5 and "measured_ms" not in r1
    assert "derive_measure: measured" in w[0].stdout and "derive_measure" not in w[1].stdout
    assert (chief / "checkpoints" / "last.weights.h5").exists()


@pytest.mark.slow
def test_dead_worker_fails_with_one_line_in_bounded_time(runs):
    _, procs, _ = runs
    pr = procs["dead"].wait(timeout=DEAD_TIMEOUT_S + 120)
    assert pr.returncode != 0
    lines = [l for l in pr.stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 1, pr.stderr[-3000:]
    assert "did not all join within 8 s" in lines[0] and "not reachable: 127.0.0.1:" in lines[0]
    assert "Traceback" not in pr.stderr


@pytest.mark.slow
def test_worker_killed_mid_run_stops_with_one_line_and_both_resume(runs):
    """SIGKILL worker 1 after the first resume checkpoint: worker 0 ends with one line naming the
    checkpoint; the same command on both workers continues from it and finishes in sync."""
    tmp, procs, killer = runs
    killer.join(timeout=660)
    assert getattr(killer, "outcome", None) == "killed", (getattr(killer, "outcome", None),
                                                          procs["kill0"].err.read_text()[-3000:])
    pr = procs["kill0"].wait(timeout=300)
    assert pr.returncode == 2, (pr.returncode, pr.stderr[-3000:])
    lines = [l for l in pr.stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in pr.stderr, pr.stderr[-3000:]
    assert "a worker was lost mid-run" in lines[0] and f"last resume checkpoint {tmp}/killed/resume" in lines[0]
    assert "start every worker of TF_CONFIG again" in lines[0]
    ports = [free_port(), free_port()]  # the same command; the cluster may come back on other ports
    again = [Proc(tmp, f"again{i}", killed_run_args(tmp), TF_CONFIG=tf_config(ports, i)) for i in range(2)]
    for p in again:
        p.wait(timeout=600)
        assert p.returncode == 0, p.stderr[-3000:]
        assert "search: resuming" in p.stdout
    h0 = json.loads((tmp / "killed" / "alpha_history.json").read_text())
    h1 = json.loads((tmp / "killed" / "workers" / "worker1" / "alpha_history.json").read_text())
    assert len(h0) == 2 and h0 == h1


@pytest.mark.slow
def test_retraining_on_two_mirrored_cpus(runs):
    tmp, procs, _ = runs
    pr = procs["train"].wait()
    assert pr.returncode == 0, pr.stderr[-3000:]
    res = json.loads((tmp / "train" / "result.json").read_text())
    assert res["epochs"] == 1 and 0.0 <= res["test_accuracy"] <= 1.0 and np.isfinite(res["test_loss"])
    assert (tmp / "train" / "model.keras").exists()


def test_strategy_errors_are_one_line(monkeypatch):
    monkeypatch.delenv("TPU_NAME", raising=False)
    with pytest.raises(ConfigError, match="no TPU found"):
        distribute.make_strategy("tpu")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="TF_CONFIG.*not set"):
        distribute.make_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}')
    with pytest.raises(ConfigError, match="index"):
        distribute.make_strategy("multi_worker")
    with pytest.raises(ConfigError, match="needs --strategy=mirrored"):
        distribute.make_strategy("default", cpu_devices=2)
