"""`AdbBackend`: latency measured on an Android phone with TFLite's `benchmark_model`.

The model is converted with the same `to_tflite` (float32, batch 1) as the host backend,
pushed with the user's `benchmark_model` binary to /data/local/tmp, and run pinned to
chosen cores (`taskset MASK`) with a fixed thread count, warm-up runs and `--min_secs=0`
so that exactly `num_runs` timed runs are made. The text it prints is parsed
(mobile/benchmark_output.py) into median / p5 / p95 / count in milliseconds.
"""

import hashlib
import os
import re
import tempfile

from proxyless_tf.errors import ConfigError
from proxyless_tf.latency.backends import Backend, _now
from proxyless_tf.latency.table import LatencyStats

from mobile import benchmark_output
from mobile.adb import DEVICE_DIR, Adb

WORK_DIR = f"{DEVICE_DIR}/proxyless_tf"
DELEGATE_FLAGS = {"none": [], "xnnpack": ["--use_xnnpack=true"], "gpu": ["--use_gpu=true"],
                  "nnapi": ["--use_nnapi=true"], "hexagon": ["--use_hexagon=true"]}
HOWTO = "see mobile/README.md for getting benchmark_model"


class AdbBackend(Backend):
    """benchmark_model on a phone through adb.

    Args:
        serial: device serial (`adb devices`); None when exactly one phone is attached.
        benchmark_binary: the user's benchmark_model, a local file (pushed to the phone) or a
            path already on the phone (/data/...).
        threads: `--num_threads`.
        warmup_runs: `--warmup_runs` (with `--warmup_min_secs=0`).
        num_runs: `--num_runs` (with `--min_secs=0`, so exactly this many timed runs).
        cpu_mask: hex mask for `taskset`, e.g. 'f0' for the big cores of a 4+4 SoC; None: unpinned.
        delegate: none, xnnpack, gpu, nnapi or hexagon.
        adb: the adb executable (default: from PATH).
    """

    name = "adb"

    def __init__(self, serial=None, benchmark_binary=None, threads=1, warmup_runs=20, num_runs=100,
                 cpu_mask=None, delegate="none", adb=None):
        if threads < 1 or warmup_runs < 0 or num_runs < 1:
            raise ConfigError("<flags>", "backend", f"bad adb settings threads={threads} "
                              f"warmup_runs={warmup_runs} num_runs={num_runs}",
                              "use threads>=1, warmup_runs>=0, num_runs>=1")
        if delegate not in DELEGATE_FLAGS:
            raise ConfigError("<flags>", "delegate", f"unknown delegate {delegate!r}",
                              f"use one of {', '.join(DELEGATE_FLAGS)}")
        if cpu_mask is not None and not re.fullmatch(r"(0x)?[0-9a-fA-F]+", str(cpu_mask)):
            raise ConfigError("<flags>", "cpu_mask", f"{cpu_mask!r} is not a hex CPU mask",
                              "write e.g. f0 (CPUs 4-7) or 0x80 (CPU 7)")
        if not benchmark_binary:
            raise ConfigError("<flags>", "benchmark_binary", "no benchmark_model given",
                              f"pass --benchmark_binary=PATH ({HOWTO})")
        self.threads, self.warmup_runs, self.num_runs = int(threads), int(warmup_runs), int(num_runs)
        self.cpu_mask = str(cpu_mask) if cpu_mask is not None else None
        self.delegate = delegate
        self.benchmark_binary = str(benchmark_binary)
        self.adb = Adb(serial, adb=adb)
        self.serial = self.adb.serial
        self._remote_binary = None
        self._pushed = set()
        self._props = None
        self.last_output = None

    # ---- set-up ----------------------------------------------------------------------------
    def _binary(self):
        if self._remote_binary:
            return self._remote_binary
        local = self.benchmark_binary
        if os.path.isfile(local):
            self.adb.shell(["mkdir", "-p", WORK_DIR])
            remote = f"{WORK_DIR}/benchmark_model"
            self.adb.push(local, remote)
            self.adb.shell(["chmod", "755", remote])
        elif local.startswith("/data/") or local.startswith("/system/") or local.startswith("/vendor/"):
            if not self.adb.file_exists(local):
                raise ConfigError(f"adb:{self.serial}", "benchmark_binary", f"{local} is not on the device",
                                  f"push benchmark_model there or pass a local file ({HOWTO})")
            remote = local
        else:
            raise ConfigError(local, "benchmark_binary", "benchmark_model does not exist", HOWTO)
        self._remote_binary = remote
        return remote

    def _push_model(self, content):
        digest = hashlib.sha256(content).hexdigest()[:16]
        remote = f"{WORK_DIR}/m_{digest}.tflite"
        if remote not in self._pushed:
            with tempfile.TemporaryDirectory(prefix="proxyless_adb_") as d:
                path = os.path.join(d, "model.tflite")
                with open(path, "wb") as f:
                    f.write(content)
                self.adb.shell(["mkdir", "-p", WORK_DIR])
                self.adb.push(path, remote)
            self._pushed.add(remote)
        return remote

    def command(self, remote_model):
        """The device command line (as a list; Adb.shell quotes each word)."""
        argv = ["taskset", self.cpu_mask] if self.cpu_mask else []
        argv += [self._binary(), f"--graph={remote_model}", f"--num_threads={self.threads}",
                 f"--warmup_runs={self.warmup_runs}", "--warmup_min_secs=0",
                 f"--num_runs={self.num_runs}", "--min_secs=0"]
        return argv + DELEGATE_FLAGS[self.delegate]

    # ---- Backend interface -------------------------------------------------------------------
    def describe(self):
        if self._props is None:
            props = {}
            for key, prop in (("model", "ro.product.model"), ("manufacturer", "ro.product.manufacturer"),
                              ("android", "ro.build.version.release"), ("soc", "ro.soc.model"),
                              ("board", "ro.board.platform"), ("abi", "ro.product.cpu.abi")):
                props[key] = self.adb.getprop(prop) or None
            self._props = props
        return dict({"backend": self.name, "runtime": "TFLite benchmark_model, float32, batch 1",
                     "serial": self.serial, "benchmark_binary": os.path.basename(self.benchmark_binary),
                     "threads": self.threads, "warmup_runs": self.warmup_runs, "num_runs": self.num_runs,
                     "cpu_mask": self.cpu_mask, "delegate": self.delegate, "date": _now()}, **self._props)

    def measure_tflite(self, content, source="<tflite>"):
        """Stats (ms) of a TFLite flatbuffer on the phone."""
        from proxyless_tf.export.tflite import check_flatbuffer

        check_flatbuffer(content, source)
        remote = self._push_model(content)
        code, text = self.adb.shell(self.command(remote))
        self.last_output = text
        out = benchmark_output.parse(text)
        stats = benchmark_output.latency_ms(out)
        if code != 0 or stats is None:
            why = (out.errors[-1] if out.errors else (text.strip().splitlines() or ["no output"])[-1])[:300]
            raise ConfigError(f"adb:{self.serial}", "benchmark_model", f"run failed (exit {code}): {why}",
                              "check the device is still attached and the binary runs there; "
                              "finished table entries are kept")
        med, p5, p95, count = stats
        return LatencyStats(float(med), float(p5), float(p95), int(count))

    def measure(self, keras_model):
        from proxyless_tf.export import tflite as export

        content = export.to_tflite(keras_model, batch_size=1)
        return self.measure_tflite(content)
