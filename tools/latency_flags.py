"""Backend flags shared by the latency tools; turns them into `make_backend` arguments.

Only the flags that belong to the chosen backend are passed on, so `--backend=litert`
ignores the adb flags' defaults instead of failing on them.
"""

from absl import flags

BACKEND = flags.DEFINE_enum("backend", "litert", ["litert", "adb", "tf"], "where to measure")
THREADS = flags.DEFINE_integer("threads", 1, "interpreter threads (litert, adb)")
WARMUP = flags.DEFINE_integer("warmup_runs", None, "untimed runs before timing (backend default if unset)")
NUM_RUNS = flags.DEFINE_integer("num_runs", None, "timed runs per measurement (backend default if unset)")
ROUNDS = flags.DEFINE_integer("rounds", None, "litert: split the timed runs into this many rounds")
CLOCK = flags.DEFINE_enum("clock", None, ["cpu", "wall", "ref"],
                          "litert: time CPU time of the invoking thread (default with 1 thread), wall time, or "
                          "wall time relative to a reference network interleaved run by run (most repeatable)")
MAX_BUSY = flags.DEFINE_float("max_busy", None, "litert: repeat a measurement when other processes used "
                              "more than this many CPUs during it")
RETRIES = flags.DEFINE_integer("retries", None, "litert: how often to repeat a disturbed measurement")
SERIAL = flags.DEFINE_string("serial", None, "adb: device serial")
BENCH_BIN = flags.DEFINE_string("benchmark_binary", None, "adb: path of benchmark_model on the device")
CPU_MASK = flags.DEFINE_string("cpu_mask", None, "adb: taskset mask, e.g. f0 for the big cores")
DELEGATE = flags.DEFINE_string("delegate", None, "adb: benchmark_model delegate (none, xnnpack, gpu, ...)")
BATCH = flags.DEFINE_integer("batch_size", None, "tf: batch size")
DEVICE = flags.DEFINE_string("device", None, "tf: TF device string, e.g. /CPU:0 or /GPU:0")

PER_BACKEND = {
    "litert": {"threads": THREADS, "warmup_runs": WARMUP, "num_runs": NUM_RUNS, "rounds": ROUNDS,
               "clock": CLOCK, "max_busy": MAX_BUSY, "retries": RETRIES},
    "adb": {"serial": SERIAL, "benchmark_binary": BENCH_BIN, "threads": THREADS, "warmup_runs": WARMUP,
            "num_runs": NUM_RUNS, "cpu_mask": CPU_MASK, "delegate": DELEGATE},
    "tf": {"batch_size": BATCH, "device": DEVICE, "warmup_runs": WARMUP, "num_runs": NUM_RUNS},
}


# Upper bounds of the numeric flags (the backends check the lower ones): a timing of 10**9 runs
# allocates its sample array before the first run, 10**5 threads ask the OS for them.
BOUNDS = {"threads": 256, "warmup_runs": 1 << 20, "num_runs": 1 << 20, "rounds": 1 << 20, "retries": 100,
          "batch_size": 1 << 16}


def backend_kwargs(name=None):
    """make_backend kwargs from the flags of backend `name` (default: --backend)."""
    from proxyless_tf.errors import ConfigError

    name = name or BACKEND.value
    kwargs = {k: f.value for k, f in PER_BACKEND[name].items() if f.value is not None}
    for k, v in kwargs.items():
        if k in BOUNDS and v > BOUNDS[k]:
            raise ConfigError("<flags>", f"--{k}", f"{v} is more than the {BOUNDS[k]} allowed",
                              f"pass a --{k} of at most {BOUNDS[k]}")
    if kwargs.get("max_busy") is not None and not 0 <= kwargs["max_busy"] < 1e6:
        raise ConfigError("<flags>", "--max_busy", f"must be a number of CPUs >= 0, got {kwargs['max_busy']}",
                          "pass e.g. --max_busy=0.3")
    return kwargs


def make_backend_from_flags(name=None):
    from proxyless_tf.latency.backends import make_backend

    name = name or BACKEND.value
    return make_backend(name, **backend_kwargs(name))
