"""Time of one `model.fit` training step of a network, per CPU kernel setting, in one run.

    python tools/bench_train_step.py [--arch=configs/archs/fashion_mnist_example.json --batch=128]

Each setting runs in its own process (TF reads `TF_ENABLE_ONEDNN_OPTS` once, when it loads),
on the same network, weights and random batch:

  eigen            oneDNN off, plain Keras layers (TensorFlow's default on AVX2 CPUs;
                   `cpu_kernels.accelerate` does nothing there)
  onednn           oneDNN on, plain layers
  onednn+kernels   oneDNN on, `cpu_kernels.accelerate` (what `proxyless_tf.train` does)

and prints the median milliseconds per step of each and its speed-up over `eigen`.
"""

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402

from proxyless_tf import cli  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("arch", "fashion_mnist_example.json", "Architecture JSON (a name resolves in configs/archs).")
flags.DEFINE_integer("batch", 128, "Batch size.")
flags.DEFINE_integer("steps", 15, "Timed steps per setting (after 3 warm-up steps).")
flags.DEFINE_list("settings", ["eigen", "onednn", "onednn+kernels"], "Which settings to run.")
flags.DEFINE_string("_child", None, "Internal: run one setting in this process and print its JSON.")

SETTINGS = ("eigen", "onednn", "onednn+kernels")


def time_steps(arch_path, batch, steps, kernels):
    """Median ms of `train_on_batch` over `steps` steps (SGD Nesterov, the retraining's loss)."""
    import keras
    import numpy as np

    from proxyless_tf.layers import cpu_kernels
    from proxyless_tf.models.nets import build_model
    from proxyless_tf.space import Arch

    keras.utils.set_random_seed(0)
    model = build_model(Arch.from_json(arch_path), 10, dropout=0.1)
    if kernels:
        cpu_kernels.accelerate(model)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1))
    rng = np.random.default_rng(0)
    shape = model.input_shape[1:]
    x = rng.standard_normal((batch, *shape)).astype("float32")
    y = np.eye(10, dtype="float32")[rng.integers(0, 10, batch)]
    for _ in range(3):
        model.train_on_batch(x, y)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        model.train_on_batch(x, y)
        times.append((time.perf_counter() - t) * 1000)
    return float(np.median(times))


def run_setting(setting, arch_path):
    from proxyless_tf.errors import ConfigError

    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="1" if setting.startswith("onednn") else "0",
               TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), f"--_child={setting}", f"--arch={arch_path}",
                           f"--batch={FLAGS.batch}", f"--steps={FLAGS.steps}"],
                          env=env, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        if tail.startswith("error: "):  # the child's own one-line error (a bad --arch, ...), passed on as it is
            print(tail, file=sys.stderr)
            raise SystemExit(2)
        raise ConfigError(f"<setting {setting}>", "child process", f"exited with {proc.returncode}: {tail}",
                          f"rerun with --settings={setting} alone and read its full stderr")
    return json.loads(lines[-1])["ms"]


def main(argv):
    from proxyless_tf.errors import ConfigError
    from proxyless_tf.space import Arch

    arch_path = cli.resolve_path(FLAGS.arch, "archs")
    Arch.from_json(arch_path)  # a bad file fails here, in one line, before any timing
    if FLAGS._child:
        print(json.dumps({"ms": time_steps(arch_path, FLAGS.batch, FLAGS.steps, FLAGS._child.endswith("+kernels"))}))
        return
    for name in ("batch", "steps"):
        if getattr(FLAGS, name) < 1:
            raise ConfigError("<flags>", f"--{name}", f"must be at least 1, got {getattr(FLAGS, name)}",
                              f"pass a positive --{name}")
    unknown = [s for s in FLAGS.settings if s not in SETTINGS]
    if unknown:
        raise ConfigError("<flags>", "--settings", f"unknown setting(s) {unknown}", f"use some of {list(SETTINGS)}")
    print(f"arch {arch_path}, batch {FLAGS.batch}, median of {FLAGS.steps} steps, {os.cpu_count()} CPUs")
    results = {}
    for setting in FLAGS.settings:
        results[setting] = run_setting(setting, arch_path)
        base = results.get("eigen")
        ratio = f"  x{base / results[setting]:.2f} vs eigen" if base else ""
        print(f"  {setting:16s} {results[setting]:8.1f} ms/step{ratio}", flush=True)


if __name__ == "__main__":
    cli.run(main)
