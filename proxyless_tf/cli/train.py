"""`python -m proxyless_tf.train --arch=RUN/arch.json`: retrain a found network from scratch.

Thin entry point: it reads flags (or a flag file such as configs/train_fashion_mnist.flags)
and hands a `TrainConfig` to `proxyless_tf.training.recipe`, where the recipe lives. The run
directory gets model.keras, best.keras, train_log.csv and result.json; while it runs,
resume/ holds the checkpoint that the same command, run again after a kill, continues from.
"""

import dataclasses
import json
import os
import sys
import time

from absl import flags

from proxyless_tf import cli, files, messages

from proxyless_tf.runtime import distribute
from proxyless_tf.errors import ConfigError
from proxyless_tf.training.config import AUGMENTS

MAX_CLASSES = 100_000  # ImageNet-21k has 21,841; a classifier this wide is a typo

FLAGS = flags.FLAGS
flags.DEFINE_string("arch", None, "Architecture JSON (e.g. RUN/arch.json from the search; a bare name "
                    "resolves in configs/archs).")
flags.DEFINE_string("dataset", "fashion_mnist", "A tfds name (fashion_mnist, cifar10, imagenet2012, ...) or an image "
                    "folder DIR/<class>/*.jpg (then, without --flagfile, the recipe is configs/train_folder.flags).")
flags.DEFINE_string("data_dir", None, "Where the dataset files are (default: the dataset's usual place).")
flags.DEFINE_string("manual_dir", None, "tfds manual download directory (ImageNet's tar files).")
flags.DEFINE_integer("num_classes", None, "Expected number of classes (default: the dataset's); a mismatch is an "
                     "error, never a silent resize of the classifier.")
flags.DEFINE_string("out_dir", None, "Run directory (default: runs/train_<arch file name>).")
flags.DEFINE_integer("epochs", 15, "Training epochs.")
flags.DEFINE_integer("batch_size", 128, "Batch size (global, across replicas).")
flags.DEFINE_float("lr", 0.1, "Peak learning rate (SGD Nesterov) at this batch size, reached after the warm-up.")
flags.DEFINE_float("warmup_epochs", 1.0, "Linear warm-up length in epochs.")
flags.DEFINE_float("weight_decay", 4e-5, "Weight decay on kernels (not BN, not biases).")
flags.DEFINE_float("label_smoothing", 0.1, "Label smoothing.")
flags.DEFINE_float("dropout", 0.1, "Dropout before the classifier.")
flags.DEFINE_enum("augment", "crop_flip", list(AUGMENTS), "Training augmentation: crop_flip (pad, random crop, "
                  "flip: small images), inception (random-resized crop 8-100 %, flip: ImageNet) or none.")
flags.DEFINE_integer("pad", 2, "Padding (pixels) before the random crop of crop_flip.")
flags.DEFINE_integer("shuffle_buffer", 2000, "Streamed datasets (tfds, large folders): images in the shuffle buffer.")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_integer("steps_per_epoch", None, "Limit steps per epoch (smoke runs).")
flags.DEFINE_integer("train_examples", None, "Use only the first N training examples (smoke runs).")
flags.DEFINE_integer("val_examples", 0, "Hold out the last N training examples to pick best.keras by.")
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

FOLDER_RECIPE = "train_folder.flags"  # the recipe of an image folder when no --flagfile names one
_FOLDER_DEFAULT = False  # entry() put FOLDER_RECIPE in front of the command line


def main(argv):
    if len(argv) > 1:
        raise ConfigError("<command line>", "arguments", f"unexpected arguments {argv[1:]}",
                          "pass options as --flag=value")
    from proxyless_tf.space import Arch

    if not FLAGS.arch:
        raise ConfigError("<flags>", "--arch", "missing", "pass --arch=RUN/arch.json")
    FLAGS.arch = cli.resolve_path(FLAGS.arch, "archs")  # a bare name: configs/archs/NAME
    arch = Arch.from_json(FLAGS.arch)  # before TensorFlow loads: a bad file fails in a fraction of a second
    cfg = make_config()
    check_flags(cfg)
    out_dir = FLAGS.out_dir or os.path.join("runs", "train_" + os.path.splitext(os.path.basename(FLAGS.arch))[0])
    files.check_output_dir(out_dir)
    check_dataset_flags()
    strategy = distribute.make_strategy(FLAGS.strategy, FLAGS.cpu_devices, FLAGS.cluster_timeout)  # before any TF op
    from proxyless_tf.training import inputs as inputs_lib
    from proxyless_tf.training import recipe as training

    inputs = inputs_lib.prepare(arch, FLAGS.dataset, cfg, num_classes=FLAGS.num_classes, arch_source=FLAGS.arch,
                                data_dir=FLAGS.data_dir, manual_dir=FLAGS.manual_dir, flags=True)
    progress = FLAGS.progress
    if progress == "auto":
        progress = "bar" if sys.stdout.isatty() else "lines"
    recipe = f" (recipe {FOLDER_RECIPE}: the default for an image folder)" if _FOLDER_DEFAULT else ""
    print(f"retraining {messages.shown_path(FLAGS.arch)} on {FLAGS.dataset}: {FLAGS.epochs} epochs of "
          f"{inputs.steps} steps x {FLAGS.batch_size} images, into {messages.shown_path(out_dir)}{recipe}", flush=True)
    t0 = time.time()
    result = training.train(arch, inputs, cfg, out_dir, progress=progress, log_every=FLAGS.log_every,
                            strategy=strategy)
    result.update(arch=os.path.abspath(FLAGS.arch), dataset=_abs(FLAGS.dataset), data_dir=_abs(FLAGS.data_dir),
                  manual_dir=_abs(FLAGS.manual_dir), wall_s=round(time.time() - t0, 1),
                  config=dataclasses.asdict(cfg))
    result_path = os.path.join(distribute.worker_dir(out_dir, strategy), "result.json")
    files.write_json_atomic(result_path, result)
    print(summary(result, result_path, result["num_test"], FLAGS.val_examples > 0))
    if FLAGS.json:
        print(json.dumps({k: result[k] for k in ("test_accuracy", "test_loss", "model_path", "epochs", "wall_s")}))


def _abs(path):
    """A folder as an absolute path in result.json: the export reads it from another directory."""
    return os.path.abspath(path) if path and os.path.isdir(path) else path


def make_config():
    from proxyless_tf.training.config import TrainConfig

    return TrainConfig(
        epochs=FLAGS.epochs, batch_size=FLAGS.batch_size, lr=FLAGS.lr, warmup_epochs=FLAGS.warmup_epochs,
        weight_decay=FLAGS.weight_decay, label_smoothing=FLAGS.label_smoothing, dropout=FLAGS.dropout,
        augment=FLAGS.augment, pad=FLAGS.pad, seed=FLAGS.seed, steps_per_epoch=FLAGS.steps_per_epoch,
        train_examples=FLAGS.train_examples, val_examples=FLAGS.val_examples, shuffle_buffer=FLAGS.shuffle_buffer,
        deterministic=FLAGS.deterministic, checkpoint_every=FLAGS.checkpoint_every, cpu_kernels=FLAGS.cpu_kernels)


def summary(result, result_path, num_test, has_val):
    """What a user reads at the end: the accuracy, where the files are, and the command to run next."""
    model = messages.shown_path(result["model_path"])
    if result["test_accuracy"] is None:
        tested = "no test split to evaluate on"
    else:
        tested = (f"test accuracy {100 * result['test_accuracy']:.2f} % (loss {result['test_loss']:.4f}, "
                  f"{num_test} test images)")
    data_flags = [f"--{k}={result[k]}" for k in ("dataset", "data_dir", "manual_dir")
                  if result.get(k) and not (k == "dataset" and result[k] == "fashion_mnist")]
    return "\n".join([
        f"retrained {os.path.basename(result['arch'])}: {tested}, {result['epochs']} "
        f"epoch{'s' if result['epochs'] != 1 else ''} in "
        f"{messages.duration(result['wall_s'])}",
        f"  model:  {model}  (the epoch of best {'validation' if has_val else 'training'} accuracy: best.keras)",
        f"  result: {messages.shown_path(result_path)}  (per-epoch log: train_log.csv)",
        "next: convert it to TFLite (float32, float16, dynamic, int8) and check it on test images:",
        "  " + messages.tool_command("export_tflite.py", model, *data_flags),
    ])


def check_flags(cfg):
    """Every number in its range (TrainConfig.check, as flags), before any file or TensorFlow."""
    cfg.check("<flags>", prefix="--")
    if FLAGS.log_every < 0:
        raise ConfigError("<flags>", "--log_every", f"must be 0 or more, got {FLAGS.log_every}",
                          "pass --log_every=N (0: one line per epoch)")
    if FLAGS.num_classes is not None and not 2 <= FLAGS.num_classes <= MAX_CLASSES:
        raise ConfigError("<flags>", "--num_classes", f"{FLAGS.num_classes} is not in [2, {MAX_CLASSES}]",
                          "leave it out to take the dataset's number of classes")


def check_dataset_flags():
    """--data_dir / --manual_dir, when given, must be directories; Fashion-MNIST's must hold its files."""
    from proxyless_tf.data import idx as data

    if not FLAGS.dataset:
        raise ConfigError("<flags>", "--dataset", "is empty", "pass a tfds name or an image folder")
    if not os.path.isdir(FLAGS.dataset):
        data.check_data_dir(FLAGS.data_dir, FLAGS.dataset)
    if FLAGS.manual_dir and not os.path.isdir(FLAGS.manual_dir):
        raise ConfigError(FLAGS.manual_dir, "--manual_dir", "is not a directory", "pass the directory of the tar files")


def with_folder_recipe(argv):
    """argv with --flagfile=train_folder.flags first when --dataset is a folder and no recipe is named.

    First, so every flag on the command line still overrides the recipe's value."""
    if any(a.startswith(("--flagfile=", "-flagfile=")) for a in argv[1:]):
        return argv, False
    datasets = [a.split("=", 1)[1] for a in argv[1:] if a.startswith(("--dataset=", "-dataset="))]
    if datasets and os.path.isdir(os.path.expanduser(datasets[-1])):
        return [argv[0], f"--flagfile={FOLDER_RECIPE}"] + list(argv[1:]), True
    return argv, False


def entry():
    global _FOLDER_DEFAULT
    argv, _FOLDER_DEFAULT = with_folder_recipe(sys.argv)
    cli.run(main, argv)


if __name__ == "__main__":
    entry()
