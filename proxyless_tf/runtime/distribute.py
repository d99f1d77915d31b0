"""`--strategy=default|mirrored|multi_worker|tpu`: one place that builds a `tf.distribute` strategy.

Both entry points (`search`, `train`) take the same two flags and call `make_strategy`
before any model exists, because a strategy only governs variables created inside its
scope, and CPU logical devices can only be configured before TensorFlow touches a device.

- `default`: no strategy (TensorFlow's default one), one device.
- `mirrored`: `MirroredStrategy` over the GPUs, or, without GPUs or with `cpu_devices`,
  over N logical CPU devices carved from the one physical CPU (for tests and for trying
  the distributed path on a laptop; it is not faster: the devices share the same cores).
- `multi_worker`: `MultiWorkerMirroredStrategy` from `TF_CONFIG`; every worker runs the
  same command. A worker that never comes up would make TensorFlow wait for it without
  end, so the cluster must form within `timeout_s` (a watchdog ends the process with one
  line naming the workers that are not reachable; the process is killed, so its exit
  status is that of SIGKILL, not 2). A worker lost after the cluster formed ends the
  others with one line naming their resume checkpoint (`worker_loss_as_error`).
- `tpu`: `TPUStrategy` through `TPUClusterResolver`; without a TPU, one line.

The batch size every flag speaks of is the *global* batch: Keras splits each batch of the
dataset across the replicas, so a run on N devices sees the same batches as on one.
"""

import contextlib
import json
import os
import re
import sys

from proxyless_tf.errors import ConfigError

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
DEFAULT_TIMEOUT_S = 120


def split_cpu(n):
    """Split the physical CPU into `n` logical devices (must run before TF initialises devices)."""
    import tensorflow as tf

    if n is None or int(n) <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    want = [tf.config.LogicalDeviceConfiguration() for _ in range(int(n))]
    try:
        tf.config.set_logical_device_configuration(cpu, want)
    except RuntimeError:  # already initialised: fine if it already has that many
        if len(tf.config.list_logical_devices("CPU")) != int(n):
            raise ConfigError("--cpu_devices", "value", f"TensorFlow already initialised its devices, cannot "
                              f"split the CPU into {n}", "pass --cpu_devices before anything runs on TF") from None


def tf_config():
    """The parsed TF_CONFIG, or raise one line saying what is wrong with it.

    Every field is checked for its type here, before TensorFlow reads it (where a worker list
    given as a string, an index "0" or a port "x" end in a traceback from its C++ server, or in
    a watchdog that cannot name the workers): the cluster an object of job name -> non-empty
    list of "host:port" strings with a port from 1 to 65535, with a `worker` (or `chief`) job,
    and a task whose `type` is one of those jobs and whose `index` an integer within it."""
    raw = os.environ.get("TF_CONFIG")
    fix = 'use {"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": I}}'
    if not raw:
        raise ConfigError("TF_CONFIG", "<env>", "is not set; --strategy=multi_worker needs the cluster",
                          'set TF_CONFIG={"cluster": {"worker": ["host:port", ...]}, '
                          '"task": {"type": "worker", "index": I}} on every worker')
    if len(raw) > 1 << 20:
        raise ConfigError("TF_CONFIG", "<env>", f"is {len(raw)} characters, not a cluster description", fix)
    try:
        cfg = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise ConfigError("TF_CONFIG", "<env>", f"is not JSON ({type(e).__name__}: {str(e)[:80]})", fix) from None
    if not isinstance(cfg, dict):
        raise ConfigError("TF_CONFIG", "<top>", f"expected a JSON object, got {type(cfg).__name__}", fix)
    cluster, task = cfg.get("cluster"), cfg.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise ConfigError("TF_CONFIG", "cluster", f"expected an object of job lists, got {_kind(cluster)}", fix)
    for job, addresses in cluster.items():
        if not isinstance(addresses, list) or not addresses:
            raise ConfigError("TF_CONFIG", f"cluster.{job}", f"expected a non-empty list of \"host:port\" "
                              f"strings, got {_kind(addresses)}", fix)
        for i, a in enumerate(addresses):
            if not _address(a):
                raise ConfigError("TF_CONFIG", f"cluster.{job}[{i}]", f"expected \"host:port\" (port 1-65535), "
                                  f"got {_kind(a)}", fix)
    if "worker" not in cluster and "chief" not in cluster:
        raise ConfigError("TF_CONFIG", "cluster", f"has no worker or chief job (jobs: {', '.join(cluster)})", fix)
    if not isinstance(task, dict):
        raise ConfigError("TF_CONFIG", "task", f"expected an object with type and index, got {_kind(task)}", fix)
    kind, index = task.get("type"), task.get("index")
    if not isinstance(kind, str) or kind not in cluster:
        raise ConfigError("TF_CONFIG", "task.type", f"expected one of the cluster's jobs ({', '.join(cluster)}), "
                          f"got {_kind(kind)}", fix)
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(cluster[kind]):
        raise ConfigError("TF_CONFIG", "task.index", f"{_kind(index)} is not a {kind} of the "
                          f"{len(cluster[kind])} listed", f"use an integer index in 0..{len(cluster[kind]) - 1}")
    return cfg


def _kind(v):
    """A value as an error line shows it: short, with its JSON type."""
    text = json.dumps(v) if isinstance(v, (str, int, float, bool)) or v is None else type(v).__name__
    return text if len(text) <= 60 else text[:57] + "..."


def _address(a):
    if not isinstance(a, str) or ":" not in a or len(a) > 300:
        return False
    host, port = a.rsplit(":", 1)
    return bool(host.strip()) and port.isascii() and port.isdigit() and 1 <= int(port) <= 65535


# Runs in a separate small interpreter: TensorFlow holds the GIL while it waits for the
# cluster, so a thread of the stuck process could never run. Exits quietly when the parent
# closes the pipe (cluster formed) or dies; otherwise names the unreachable workers on the
# shared stderr and kills the parent (SIGKILL: the stuck process has a SIGTERM handler of
# TensorFlow's, which never gets to run either).
_WATCHDOG = r"""
import os, select, signal, socket, sys
pid, timeout, me, total = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], int(sys.argv[4])
peers = sys.argv[5:]
if select.select([sys.stdin], [], [], timeout)[0]:
    sys.exit(0)
def up(a):
    host, port = a.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1.0).close()
        return True
    except OSError:
        return False
dead = [a for a in peers if a != me and not up(a)]
who = "not reachable: " + ", ".join(dead) if dead else "every address answers, but not every worker joined"
sys.stderr.write("error: TF_CONFIG: cluster: the %d workers did not all join within %g s (%s) (fix: start every "
                 "worker of TF_CONFIG with the same command, or fix the addresses; --cluster_timeout sets the "
                 "wait)\n" % (total, timeout, who))
sys.stderr.flush()
os.kill(pid, signal.SIGKILL)
"""


class ClusterWatchdog:
    """Stops the process with one line if the multi-worker cluster has not formed in time.

    TensorFlow waits for every worker of TF_CONFIG indefinitely, inside C++ and holding
    the GIL: a typo in an address or a worker that died would hang the run, and neither
    a Python thread nor a signal handler of this process could step in. So `start()`
    launches a tiny watcher interpreter (no TensorFlow in it); the caller `stop()`s it once
    the first training step has gone through (every worker has then joined). On expiry it
    names the workers whose ports do not answer and kills this process.
    """

    def __init__(self, cfg, timeout_s):
        self.cfg = cfg
        self.timeout_s = float(timeout_s)
        self._proc = None

    def start(self):
        import subprocess

        if self.timeout_s <= 0:
            return self
        cluster, task = self.cfg["cluster"], self.cfg["task"]
        peers = [a for job in ("chief", "worker") for a in cluster.get(job, [])]
        me = cluster.get(task["type"], [""] * (int(task["index"]) + 1))[int(task["index"])]
        self._proc = subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(self.timeout_s), me,
                                       str(len(peers)), *peers], stdin=subprocess.PIPE)
        return self

    def stop(self):
        if self._proc is not None:
            self._proc.stdin.close()  # EOF: the watcher exits quietly
            self._proc.wait()
            self._proc = None


def make_strategy(name="default", cpu_devices=None, timeout_s=DEFAULT_TIMEOUT_S):
    """A `tf.distribute.Strategy` by name; `strategy.watchdog` is armed for `multi_worker`.

    Args:
        name: default, mirrored, multi_worker or tpu.
        cpu_devices: for `mirrored`, the number of logical CPU devices to split the CPU into
            (default: the GPUs when there are any, else 2 logical CPUs).
        timeout_s: for `multi_worker`, how long the cluster may take to form (0: no limit).
    """
    import tensorflow as tf

    if name not in STRATEGIES:
        raise ConfigError("--strategy", "value", f"unknown strategy {name!r}", f"use one of {STRATEGIES}")
    watchdog = None
    if name == "default":
        if cpu_devices and int(cpu_devices) > 1:
            raise ConfigError("--cpu_devices", "value", "needs --strategy=mirrored", "add --strategy=mirrored")
        strategy = tf.distribute.get_strategy()
    elif name == "mirrored":
        gpus = tf.config.list_physical_devices("GPU")
        if cpu_devices or not gpus:
            n = int(cpu_devices or 2)
            if n < 1:
                raise ConfigError("--cpu_devices", "value", f"{n}", "use 1 or more")
            split_cpu(n)
            devices = [d.name for d in tf.config.list_logical_devices("CPU")][:n]
            strategy = tf.distribute.MirroredStrategy(devices)
        else:
            strategy = tf.distribute.MirroredStrategy()
    elif name == "multi_worker":
        cfg = tf_config()
        watchdog = ClusterWatchdog(cfg, timeout_s).start()
        # The constructor starts this worker's server; collectives block until all have joined.
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        # Without a local TPU or TPU_NAME the resolver would ask the GCE metadata server and
        # wait on the network; say it at once instead.
        if not tf.config.list_physical_devices("TPU") and not os.environ.get("TPU_NAME"):
            raise ConfigError("--strategy", "tpu", "no TPU found (no local TPU device, TPU_NAME is not set)",
                              "run on a TPU VM or set TPU_NAME, or use --strategy=mirrored")
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=os.environ.get("TPU_NAME", ""))
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except Exception as e:  # ValueError / NotFoundError / RuntimeError depending on the machine
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            raise ConfigError("--strategy", "tpu", f"no TPU found ({first})",
                              "run on a TPU VM (or set TPU_NAME), or use --strategy=mirrored") from None
        strategy = tf.distribute.TPUStrategy(resolver)
    strategy.watchdog = watchdog
    return strategy


def is_chief(strategy):
    """True on the worker that writes the run directory (every non-multi-worker run)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "cluster_spec", None):
        return True
    spec = resolver.cluster_spec().as_dict()
    if not spec:
        return True
    kind, index = resolver.task_type, resolver.task_id
    if "chief" in spec:
        return kind == "chief"
    return kind == "worker" and int(index or 0) == 0


def worker_dir(out_dir, strategy):
    """`out_dir` on the chief; a side directory `out_dir/workers/<task>` on the other workers.

    Every worker of a multi-worker run executes the same callbacks; letting them write the
    same checkpoint file would race. The chief's files are the run's; the others are kept
    for comparison (and are identical when the run is in sync).
    """
    if is_chief(strategy):
        return out_dir
    r = strategy.cluster_resolver
    return os.path.join(out_dir, "workers", f"{r.task_type}{r.task_id}")


def is_multi_worker(strategy):
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


_LOST_HINTS = ("aborted by", "connection", "unreachable", "unavailable", "heartbeat", "peer", "socket closed")


def lost_worker_reason(message, default):
    """The line of a collective's error that says what happened, without TF's node names."""
    lines = [re.sub(r"\{\{[^}]*\}\}\s*", "", l).strip() for l in message.splitlines()]
    lines = [l for l in lines if l]
    for i, l in enumerate(lines):
        if any(h in l.lower() for h in _LOST_HINTS):
            l = l.split("aborted by: ", 1)[-1]
            if l.endswith(":") and i + 1 < len(lines):
                l = f"{l} {lines[i + 1]}"
            return l[:200]
    return default


@contextlib.contextmanager
def worker_loss_as_error(strategy, resume_state):
    """A worker lost mid-run becomes one line naming the checkpoint to resume from.

    Under MultiWorkerMirroredStrategy a killed or unreachable peer surfaces on the others as
    a gRPC error out of the next collective (UnavailableError, seconds after the kill),
    with a page of TensorFlow traceback. Every worker checkpoints into its own resume
    directory, so the fix is to start every worker again with the same command.
    """
    import tensorflow as tf

    if not is_multi_worker(strategy):
        yield
        return
    try:
        yield
    except (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError,
            tf.errors.DeadlineExceededError) as e:
        reason = lost_worker_reason(str(getattr(e, "message", e)), type(e).__name__)
        try:
            meta = resume_state.load()  # `resume.ResumeState`: the worker's own checkpoint
        except ConfigError:
            meta = None
        where = ("no resume checkpoint was written yet" if meta is None else
                 f"last resume checkpoint {resume_state.dir} (epoch {meta['epoch'] + 1}, step {meta['step']})")
        raise ConfigError("<cluster>", "TF_CONFIG", f"a worker was lost mid-run ({reason}); {where}",
                          "start every worker of TF_CONFIG again with the same command: each resumes "
                          "from its own checkpoint") from None


def for_strategy(ds, strategy):
    """Shard a multi-worker input by data, never by file.

    Every worker builds the same seeded pipeline; with DATA sharding each takes its part of
    every global batch. File sharding (TF's first guess for tfds inputs) would give each
    worker other files and break the index-based train/valid split of `data.search_data`.
    """
    import tensorflow as tf

    if not is_multi_worker(strategy):
        return ds
    opts = tf.data.Options()
    opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(opts)


def fix_multi_worker_fit(model, strategy):
    """Work around two Keras 3.15 bugs that break `fit` under MultiWorkerMirroredStrategy.

    With more than one worker, Keras 3.15 reduces across workers with `strategy.reduce`:
    1. before the first step, the whole first batch, to build compiled metrics from it;
       `strategy.reduce` takes one distributed value, not a nest, so every (x, y) batch
       fails ("Attempt to convert a value (PerReplica ...) to a Tensor");
    2. after every step, each log value with `axis=0`, which fails for the scalar losses
       and metrics every step returns ("Invalid reduction dimension 0 for input with 0
       dimensions").
    The fixes, on this model instance only: build from this worker's local slice of the
    batch (only shapes and dtypes are used, no collective is needed), and return scalar
    logs as shape-(1,) vectors, whose mean over axis 0 across workers is the scalar again.
    Nothing changes for any other strategy.
    """
    if not is_multi_worker(strategy):
        return model
    import keras
    import tensorflow as tf

    def local(v):
        return strategy.experimental_local_results(v)[0] if isinstance(v, tf.distribute.DistributedValues) else v

    def maybe_symbolic_build(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, it in iterator:
                data_batch = keras.tree.map_structure(local, next(it))
                break
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    def vector_logs(step):
        def wrapped(data):
            logs = step(data)
            return keras.tree.map_structure(lambda v: tf.reshape(v, [1]) if v.shape.rank == 0 else v, logs)

        return wrapped

    model._maybe_symbolic_build = maybe_symbolic_build
    model.train_step = vector_logs(model.train_step)
    model.test_step = vector_logs(model.test_step)
    return model


def define_flags(flags):
    """The flags both entry points share (`search`, `train`)."""
    flags.DEFINE_enum("strategy", "default", list(STRATEGIES),
                      "tf.distribute strategy: default (one device), mirrored (GPUs, or --cpu_devices logical "
                      "CPUs), multi_worker (TF_CONFIG), tpu. Batch sizes are global.")
    flags.DEFINE_integer("cpu_devices", None, "With --strategy=mirrored: split the CPU into this many logical "
                         "devices (default: the GPUs, or 2 CPUs when there is no GPU).")
    flags.DEFINE_integer("cluster_timeout", DEFAULT_TIMEOUT_S, "With --strategy=multi_worker: seconds the workers "
                         "of TF_CONFIG may take to join before the run stops with an error (0: wait forever).")


def cluster_joined_callback(watchdog):
    """A Keras callback that disarms the watchdog after the first step (the cluster has formed)."""
    import keras

    class ClusterJoined(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if watchdog is not None:
                watchdog.stop()

    return ClusterJoined()
