"""Export a trained .keras network to TFLite in every mode an app may want, and check each.

    python tools/export_tflite.py runs/train_fm/model.keras \
        --modes=float32,float16,dynamic,int8,int8_io,qat --out_dir=runs/train_fm/tflite

Modes: float32, float16 (fp16 weights), dynamic (int8 weights), int8 (full integer PTQ,
float I/O), int8_io (full integer PTQ, int8 I/O), qat (quantization-aware fine-tuning with
tensorflow-model-optimization in a child process, int8 with float I/O). Representative
and fine-tuning data come from the real training split; every export is then checked
against the Keras model on real test images (max |logit diff|, top-1 agreement,
accuracy) and gets a sidecar JSON for an Android app. Results also go to export_report.json;
the console gets a table, where the files are and the command that times a model on a phone.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402

from proxyless_tf import cli  # noqa: E402
from proxyless_tf.errors import ConfigError  # noqa: E402

ALL_MODES = ("float32", "float16", "dynamic", "int8", "int8_io", "qat")
FLAGS = flags.FLAGS
flags.DEFINE_list("modes", "float32,float16,dynamic,int8,int8_io", f"Any of {','.join(ALL_MODES)}.")
flags.DEFINE_string("out_dir", None, "Where the .tflite files go (default: MODEL_DIR/tflite).")
flags.DEFINE_string("arch", None, "Architecture JSON (QAT only; default: the 'arch' of result.json beside the model).")
flags.DEFINE_string("dataset", None, "Dataset for representative data and checks: a tfds name or an image folder "
                    "(default: the one in result.json beside the model, else fashion_mnist).")
flags.DEFINE_string("data_dir", None, "Dataset files directory (default: result.json's, beside the model).")
flags.DEFINE_string("manual_dir", None, "tfds manual download directory (ImageNet's tar files).")
flags.DEFINE_integer("num_test", 1000, "Test images for agreement and accuracy.")
flags.DEFINE_integer("num_representative", 500, "Training images calibrating full int8.")
flags.DEFINE_integer("qat_examples", 10000, "Training images for the QAT fine-tuning.")
flags.DEFINE_integer("qat_epochs", 1, "QAT fine-tuning epochs.")
flags.DEFINE_float("qat_lr", 1e-3, "QAT fine-tuning learning rate (SGD Nesterov).")
flags.DEFINE_bool("qat_freeze_bn", True, "Keep BN statistics fixed during the QAT fine-tuning.")
flags.DEFINE_integer("batch_size", 1, "Fixed batch of the exported models.")
flags.DEFINE_integer("seed", 0, "Seed for picking representative/QAT images.")
flags.DEFINE_bool("verbose", False, "Show the QAT child's log.")
flags.DEFINE_bool("json", False, "Also print the report's path as one JSON line (for scripts).")


def find_arch(model_path):
    from proxyless_tf.space import Arch
    from proxyless_tf.files import read_json_object

    path = FLAGS.arch
    if not path:
        res = os.path.join(os.path.dirname(os.path.abspath(model_path)), "result.json")
        if os.path.exists(res):
            path = read_json_object(res, "training result").get("arch")
            if path is not None and not isinstance(path, str):
                raise ConfigError(res, "arch", f"expected a path, got {type(path).__name__}", "pass --arch=RUN/arch.json")
    if not path:
        raise ConfigError("<flags>", "--arch", "QAT needs the architecture the model was built from",
                          "pass --arch=RUN/arch.json")
    return Arch.from_json(path)


MAX_BATCH = 4096         # a fixed batch beyond this is a typo, and LiteRT would allocate it
MAX_IMAGES = 1_000_000


def check_flags(model_path):
    """Every flag, the model path and --out_dir, before TensorFlow loads and before anything is written."""
    from proxyless_tf import files, readers

    bad = [m for m in FLAGS.modes if m not in ALL_MODES]
    if bad or not FLAGS.modes:
        raise ConfigError("<flags>", "--modes", f"unknown mode(s) {bad}" if bad else "is empty",
                          f"use any of {','.join(ALL_MODES)}")
    for name, hi in (("batch_size", MAX_BATCH), ("num_test", MAX_IMAGES), ("num_representative", MAX_IMAGES),
                     ("qat_examples", MAX_IMAGES), ("qat_epochs", 1000)):
        v = getattr(FLAGS, name)
        if v < 1:
            raise ConfigError("<flags>", f"--{name}", f"must be at least 1, got {v}", f"pass a positive --{name}")
        if v > hi:
            raise ConfigError("<flags>", f"--{name}", f"{v} is more than the {hi} allowed (a typo?)",
                              f"pass a smaller --{name}")
    if FLAGS.batch_size > FLAGS.num_test:
        raise ConfigError("<flags>", "--batch_size", f"{FLAGS.batch_size} is more than --num_test={FLAGS.num_test}",
                          "use a batch size of at most --num_test")
    if not 0 <= FLAGS.seed < 2 ** 31:
        raise ConfigError("<flags>", "--seed", f"{FLAGS.seed} is not in [0, 2^31)", "pass a non-negative --seed")
    if not (0 < FLAGS.qat_lr <= 10):  # also false for nan
        raise ConfigError("<flags>", "--qat_lr", f"{FLAGS.qat_lr} is not in (0, 10]", "pass a small positive --qat_lr")
    readers.check_regular(model_path, "model", fix="pass the .keras file saved by proxyless_tf.train")
    files.check_output_dir(out_dir_of(model_path))
    for name in ("data_dir", "manual_dir"):
        v = getattr(FLAGS, name)
        if v and os.path.exists(v) and not os.path.isdir(v):
            raise ConfigError(v, f"--{name}", "is a file, not a directory", "pass the directory of the dataset")


def out_dir_of(model_path):
    return FLAGS.out_dir or os.path.join(os.path.dirname(os.path.abspath(model_path)), "tflite")


def training_result(model_path):
    """result.json beside the model (what proxyless_tf.train wrote), or {} when there is none."""
    from proxyless_tf.files import read_json_object

    res = os.path.join(os.path.dirname(os.path.abspath(model_path)), "result.json")
    return read_json_object(res, "training result") if os.path.isfile(res) else {}


def data_flags(result):
    """(dataset, data_dir, manual_dir): the flags, else what the training run used, else Fashion-MNIST."""
    def pick(name, default=None):
        given = getattr(FLAGS, name)
        v = given if given is not None else result.get(name, default)
        if v is not None and not isinstance(v, str):
            raise ConfigError("result.json", name, f"expected a string, got {type(v).__name__}",
                              f"pass --{name}")
        return v
    return pick("dataset", "fashion_mnist"), pick("data_dir"), pick("manual_dir")


def main(argv):
    if len(argv) != 2:
        raise ConfigError("<args>", "MODEL", "expected exactly one .keras model path", "tools/export_tflite.py MODEL.keras")
    model_path = argv[1]
    check_flags(model_path)
    result = training_result(model_path)
    dataset, data_dir, manual_dir = data_flags(result)
    style = result.get("eval_style") if result.get("eval_style") in ("small", "imagenet") else "small"

    from proxyless_tf.data import damaged
    from proxyless_tf.data.sources import open_source  # TensorFlow loads only once the flags are known to be good
    from proxyless_tf.export import data as export_data
    from proxyless_tf.export import report as export_report
    from proxyless_tf.export import tflite as export
    from proxyless_tf.files import write_bytes_atomic, write_json_atomic

    model = export.load_keras_model(model_path)
    source = open_source(dataset, data_dir=data_dir, manual_dir=manual_dir)
    data = export_data.prepare(model, source, model_path, FLAGS.num_test, FLAGS.batch_size, style)
    arch = None
    if "qat" in FLAGS.modes:
        arch = find_arch(model_path)
        export_data.check_qat_size(FLAGS.qat_examples, data, source.num_train)
    n = len(data.x_test)
    keras_logits = model.predict(data.x_test, batch_size=256, verbose=0)
    out_dir = out_dir_of(model_path)
    os.makedirs(out_dir, exist_ok=True)  # every check passed: only now does anything get written
    stem = os.path.splitext(os.path.basename(model_path))[0]
    report = {"model": os.path.abspath(model_path), "n_test": n, "dataset": dataset,
              "input": "raw pixels 0..255" if data.raw_pixels else "normalised", "modes": {}}
    print(f"{'mode':8s} {'size KB':>8s} {'max|dlogit|':>12s} {'top1 agree':>10s} {'keras acc':>9s} "
          f"{'tflite acc':>10s} {'drop pts':>8s} {'time s':>7s}")
    for i, mode in enumerate(FLAGS.modes):
        t0 = time.time()
        if mode == "qat":
            from proxyless_tf.export import qat

            x, y = export_data.training_images(source, data, FLAGS.qat_examples, FLAGS.seed + i)
            content = qat.qat_tflite(model, arch, x, y, epochs=FLAGS.qat_epochs, lr=FLAGS.qat_lr,
                                     batch=FLAGS.batch_size, freeze_bn=FLAGS.qat_freeze_bn, seed=FLAGS.seed,
                                     verbose=FLAGS.verbose,
                                     normalization=(data.mean, data.std) if data.raw_pixels else None)
        else:
            rep = None
            if mode in ("int8", "int8_io"):
                rep, _ = export_data.training_images(source, data, FLAGS.num_representative, FLAGS.seed + i)
            content = export.convert(model, "int8" if mode == "int8_io" else mode, FLAGS.batch_size,
                                     representative=rep, int8_io=mode == "int8_io")
        fname = f"{stem}_{mode}.tflite"
        path = os.path.join(out_dir, fname)
        write_bytes_atomic(path, content)  # a killed export never leaves a truncated .tflite for an app
        checks, io = export_report.check_export(content, keras_logits, data.x_test, data.y_test, path)
        checks["seconds"] = round(time.time() - t0, 1)
        write_json_atomic(os.path.join(out_dir, f"{stem}_{mode}.json"),
                          export_report.sidecar(fname, mode, io, data.mean, data.std, data.class_names, checks,
                                                dataset, raw_pixels=data.raw_pixels))
        report["modes"][mode] = dict(checks, file=path)
        print(f"{mode:8s} {checks['size_bytes'] / 1024:8.1f} {checks['max_abs_logit_diff']:12.3g} "
              f"{checks['top1_agreement']:10.4f} {checks['keras_accuracy']:9.4f} {checks['tflite_accuracy']:10.4f} "
              f"{checks['accuracy_drop_points']:8.2f} {checks['seconds']:7.1f}", flush=True)
    damaged.report(source)  # test or calibration files skipped as undecodable: one note line
    report_path = os.path.join(out_dir, "export_report.json")
    write_json_atomic(report_path, report)
    print(summary(report, out_dir, report_path))
    if FLAGS.json:
        print(json.dumps({"report": report_path}))


def summary(report, out_dir, report_path):
    """The closing lines: where the models went, and how to time one on a phone (the pipeline's last step)."""
    from proxyless_tf import messages

    modes = report["modes"]
    first = modes.get("float32") or next(iter(modes.values()))
    model = messages.shown_path(first["file"])
    return "\n".join([
        f"wrote {len(modes)} TFLite model(s) ({', '.join(modes)}), each with the .json an Android app reads, "
        f"to {messages.shown_path(out_dir)}",
        f"  report: {messages.shown_path(report_path)}",
        "next: time it on an Android phone (adb and TFLite's benchmark_model), or on this machine with LiteRT:",
        "  " + messages.tool_command("benchmark_tflite.py", model, "--backend=adb",
                                    "--benchmark_binary=./benchmark_model"),
        "  " + messages.tool_command("benchmark_tflite.py", model, "--backend=litert"),
    ])


if __name__ == "__main__":
    cli.run(main)
