"""`python -m proxyless_tf.train --arch=RUN/arch.json`: retrain a found network from scratch.

Thin entry point: it reads flags (or a flag file such as configs/train_fashion_mnist.flags)
and hands a `TrainConfig` to `proxyless_tf.training.recipe`, where the recipe lives. The run
directory gets model.keras, best.keras, train_log.csv and result.json; while it runs,
resume/ holds the checkpoint that the same command, run again after a kill, continues from.
"""

import json
import os
import sys
import time

from absl import flags

from proxyless_tf import cli, messages

from proxyless_tf.runtime import distribute
from proxyless_tf.errors import ConfigError

FLAGS = flags.FLAGS
flags.DEFINE_string("arch", None, "Architecture JSON (e.g. RUN/arch.json from the search; a bare name "
                    "resolves in configs/archs).")
flags.DEFINE_string("dataset", "fashion_mnist", "Dataset name.")
flags.DEFINE_string("data_dir", None, "Where the dataset files are (default: the dataset's usual place).")
flags.DEFINE_string("out_dir", None, "Run directory (default: runs/train_<arch file name>).")
flags.DEFINE_integer("epochs", 15, "Training epochs.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_float("lr", 0.1, "Peak learning rate (SGD Nesterov), reached after the warm-up.")
flags.DEFINE_float("warmup_epochs", 1.0, "Linear warm-up length in epochs.")
flags.DEFINE_float("weight_decay", 4e-5, "Weight decay on kernels (not BN, not biases).")
flags.DEFINE_float("label_smoothing", 0.1, "Label smoothing.")
flags.DEFINE_float("dropout", 0.1, "Dropout before the classifier.")
flags.DEFINE_enum("augment", "crop_flip", ["crop_flip", "none"], "Training augmentation.")
flags.DEFINE_integer("pad", 2, "Padding (pixels) before the random crop.")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_integer("steps_per_epoch", None, "Limit steps per epoch (smoke runs).")
flags.DEFINE_integer("train_examples", None, "Use only the first N training examples (smoke runs).")
flags.DEFINE_integer("val_examples", 0, "Hold out N training examples to pick best.keras by.")
distribute.define_flags(flags)
flags.DEFINE_boolean("deterministic", False, "TF op determinism and every seed: a killed and resumed run ends "
                     "with the weights of an uninterrupted one.")
flags.DEFINE_integer("checkpoint_every", 100, "Resume checkpoint every this many steps (and at every epoch end); "
                     "a killed run rerun with the same flags continues from it. 0: epoch ends only.")
flags.DEFINE_enum("progress", "auto", ["auto", "bar", "lines", "none"],
                  "Training progress: a bar (auto: when the output is a terminal), a line every --log_every steps "
                  "and one per epoch (auto: otherwise), or none.")
flags.DEFINE_integer("log_every", 100, "With --progress=lines: a line every this many steps (0: one per epoch).")
flags.DEFINE_boolean("json", False, "Also print the result as one JSON line (it is always in RUN/result.json).")
flags.DEFINE_boolean("cpu_kernels", True, "On a CPU-only host, faster kernels for the slow layers of a training "
                     "step (fused batch norm, small-map depthwise gradients; proxyless_tf/layers/cpu_kernels.py).")


def main(argv):
    if len(argv) > 1:
        raise ConfigError("<command line>", "arguments", f"unexpected arguments {argv[1:]}",
                          "pass options as --flag=value")
    from proxyless_tf.space import Arch

    if not FLAGS.arch:
        raise ConfigError("<flags>", "--arch", "missing", "pass --arch=RUN/arch.json")
    FLAGS.arch = cli.resolve_path(FLAGS.arch, "archs")  # a bare name: configs/archs/NAME
    arch = Arch.from_json(FLAGS.arch)  # before TensorFlow loads: a bad file fails in a fraction of a second
    check_flags()
    from proxyless_tf.data import idx as data

    data.check_data_dir(FLAGS.data_dir, FLAGS.dataset)
    strategy = distribute.make_strategy(FLAGS.strategy, FLAGS.cpu_devices, FLAGS.cluster_timeout)  # before any TF op
    from proxyless_tf.training import recipe as training

    want = training.DATASET_INPUT_SHAPES.get(FLAGS.dataset)
    if want and tuple(arch.space.input_shape) != want:  # before loading 60,000 images
        raise ConfigError(FLAGS.arch, "space.input_shape",
                          f"{arch.space.input_shape} does not match {FLAGS.dataset} images {want}",
                          "use an architecture searched for this dataset")
    splits = training.load_dataset(FLAGS.dataset, FLAGS.data_dir, FLAGS.train_examples)
    cfg = training.TrainConfig(
        epochs=FLAGS.epochs, batch_size=FLAGS.batch_size, lr=FLAGS.lr, warmup_epochs=FLAGS.warmup_epochs,
        weight_decay=FLAGS.weight_decay, label_smoothing=FLAGS.label_smoothing, dropout=FLAGS.dropout,
        augment=FLAGS.augment, pad=FLAGS.pad, seed=FLAGS.seed, steps_per_epoch=FLAGS.steps_per_epoch,
        val_examples=FLAGS.val_examples, deterministic=FLAGS.deterministic, checkpoint_every=FLAGS.checkpoint_every,
        cpu_kernels=FLAGS.cpu_kernels)
    out_dir = FLAGS.out_dir or os.path.join("runs", "train_" + os.path.splitext(os.path.basename(FLAGS.arch))[0])
    progress = FLAGS.progress
    if progress == "auto":
        progress = "bar" if sys.stdout.isatty() else "lines"
    steps = FLAGS.steps_per_epoch or (len(splits.x_train) - FLAGS.val_examples) // FLAGS.batch_size
    print(f"retraining {messages.shown_path(FLAGS.arch)} on {FLAGS.dataset}: {FLAGS.epochs} epochs of {steps} steps "
          f"x {FLAGS.batch_size} images, into {messages.shown_path(out_dir)}", flush=True)
    t0 = time.time()
    result = training.train(arch, splits, cfg, out_dir, progress=progress, log_every=FLAGS.log_every,
                            strategy=strategy)
    result.update(arch=os.path.abspath(FLAGS.arch), dataset=FLAGS.dataset, wall_s=round(time.time() - t0, 1),
                  config=vars(cfg) if not hasattr(cfg, "__dataclass_fields__") else cfg.__dict__)
    from proxyless_tf.files import write_json_atomic
    result_path = os.path.join(distribute.worker_dir(out_dir, strategy), "result.json")
    write_json_atomic(result_path, result)
    print(summary(result, result_path, len(splits.x_test), FLAGS.val_examples > 0))
    if FLAGS.json:
        print(json.dumps({k: result[k] for k in ("test_accuracy", "test_loss", "model_path", "epochs", "wall_s")}))


def summary(result, result_path, num_test, has_val):
    """What a user reads at the end: the accuracy, where the files are, and the command to run next."""
    model = messages.shown_path(result["model_path"])
    return "\n".join([
        f"retrained {os.path.basename(result['arch'])}: test accuracy {100 * result['test_accuracy']:.2f} % "
        f"(loss {result['test_loss']:.4f}, {num_test} test images), {result['epochs']} "
        f"epoch{'s' if result['epochs'] != 1 else ''} in "
        f"{messages.duration(result['wall_s'])}",
        f"  model:  {model}  (the epoch of best {'validation' if has_val else 'training'} accuracy: best.keras)",
        f"  result: {messages.shown_path(result_path)}  (per-epoch log: train_log.csv)",
        "next: convert it to TFLite (float32, float16, dynamic, int8) and check it on test images:",
        "  " + messages.tool_command("export_tflite.py", model),
    ])


def check_flags():
    """Numbers that would otherwise fail deep inside fit (a zero batch divides by zero)."""
    import math

    for name in ("epochs", "batch_size"):
        if getattr(FLAGS, name) < 1:
            raise ConfigError("<flags>", f"--{name}", f"must be at least 1, got {getattr(FLAGS, name)}",
                              f"pass a positive --{name}")
    if FLAGS.log_every < 0:
        raise ConfigError("<flags>", "--log_every", f"must be 0 or more, got {FLAGS.log_every}",
                          "pass --log_every=N (0: one line per epoch)")
    for name in ("steps_per_epoch", "train_examples"):
        v = getattr(FLAGS, name)
        if v is not None and v < 1:
            raise ConfigError("<flags>", f"--{name}", f"must be at least 1, got {v}", f"pass a positive --{name}")
    for name, lo, hi in (("lr", 0, 100), ("warmup_epochs", 0, 1e6), ("weight_decay", 0, 1),
                         ("label_smoothing", 0, 1), ("dropout", 0, 0.999), ("pad", 0, 64), ("val_examples", 0, 1e9)):
        v = getattr(FLAGS, name)
        if not math.isfinite(v) or not lo <= v <= hi:
            raise ConfigError("<flags>", f"--{name}", f"{v} is not in [{lo}, {hi:g}]", f"pass a valid --{name}")


def entry():
    cli.run(main)


if __name__ == "__main__":
    entry()
