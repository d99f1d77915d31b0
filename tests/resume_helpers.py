"""Kill a CLI run for real (SIGKILL at a mid-run checkpoint) and restart it: shared by the resume tests."""

import gzip
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

from conftest import cli_env


def write_idx(path, arr):
    arr = np.asarray(arr, np.uint8)
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.tobytes())


def write_fake_fashion(directory, n=240, n_test=40, seed=0):
    """IDX files that `data.find_fashion_dir` accepts: 28x28 images whose brightness says the class."""
    rng = np.random.default_rng(seed)
    for prefix, count in (("train", n), ("t10k", n_test)):
        labels = np.arange(count) % 10
        images = rng.integers(0, 60, (count, 28, 28)) + labels[:, None, None] * 19
        write_idx(os.path.join(directory, f"{prefix}-images-idx3-ubyte.gz"), images)
        write_idx(os.path.join(directory, f"{prefix}-labels-idx1-ubyte.gz"), labels)
    return str(directory)


def read_state(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def run_killed_then_resumed(cmd, state_path, ready, timeout=240, log=None):
    """Start `cmd`, SIGKILL it once the resume state satisfies `ready(meta)`, rerun it to the end.

    Returns (the state the kill left, the rerun's CompletedProcess).
    """
    out = open(log, "w") if log else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, env=cli_env(), stdout=out, stderr=subprocess.STDOUT)
    deadline = time.time() + timeout
    try:
        while True:
            meta = read_state(state_path)
            if meta is not None and ready(meta):
                proc.send_signal(signal.SIGKILL)
                break
            assert proc.poll() is None, "the run ended before a mid-run checkpoint could be killed"
            assert time.time() < deadline, "no mid-run checkpoint was written"
            time.sleep(0.01)
    finally:
        proc.kill()
        proc.wait()
        if log:
            out.close()
    left = read_state(state_path)
    assert left is not None, "the kill left no resume state"
    done = subprocess.run(cmd, env=cli_env(), capture_output=True, text=True, timeout=timeout)
    return left, done


def python_cmd(*args):
    return [sys.executable, *args]
