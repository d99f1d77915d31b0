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
flags.DEFINE_string("dataset", "fashion_mnist", "Dataset for representative data and checks.")
flags.DEFINE_string("data_dir", None, "Dataset files directory.")
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


def main(argv):
    if len(argv) != 2:
        raise ConfigError("<args>", "MODEL", "expected exactly one .keras model path", "tools/export_tflite.py MODEL.keras")
    model_path = argv[1]
    bad = [m for m in FLAGS.modes if m not in ALL_MODES]
    if bad:
        raise ConfigError("<flags>", "--modes", f"unknown mode(s) {bad}", f"use any of {','.join(ALL_MODES)}")
    for name in ("batch_size", "num_test", "num_representative", "qat_examples"):
        if getattr(FLAGS, name) < 1:
            raise ConfigError("<flags>", f"--{name}", f"must be at least 1, got {getattr(FLAGS, name)}",
                              f"pass a positive --{name}")
    import numpy as np  # TensorFlow loads only once the flags are known to be good

    from proxyless_tf.export import tflite as export

    from proxyless_tf.export import report as export_report

    from proxyless_tf.training import recipe as training
    from proxyless_tf.files import write_bytes_atomic, write_json_atomic

    model = export.load_keras_model(model_path)
    splits = training.load_dataset(FLAGS.dataset, FLAGS.data_dir)
    if tuple(model.input_shape[1:]) != tuple(splits.x_test.shape[1:]):
        raise ConfigError(model_path, "input_shape", f"{model.input_shape[1:]} does not match {FLAGS.dataset} "
                          f"images {splits.x_test.shape[1:]}", "pass the dataset the model was trained on")
    n = min(FLAGS.num_test, len(splits.x_test))
    n -= n % FLAGS.batch_size
    x_test, y_test = splits.x_test[:n], splits.y_test[:n]
    rng = np.random.default_rng(FLAGS.seed)
    keras_logits = model.predict(x_test, batch_size=256, verbose=0)
    out_dir = FLAGS.out_dir or os.path.join(os.path.dirname(os.path.abspath(model_path)), "tflite")
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.splitext(os.path.basename(model_path))[0]
    report = {"model": os.path.abspath(model_path), "n_test": n, "modes": {}}
    print(f"{'mode':8s} {'size KB':>8s} {'max|dlogit|':>12s} {'top1 agree':>10s} {'keras acc':>9s} "
          f"{'tflite acc':>10s} {'drop pts':>8s} {'time s':>7s}")
    for mode in FLAGS.modes:
        t0 = time.time()
        if mode == "qat":
            from proxyless_tf.export import qat

            idx = rng.choice(len(splits.x_train), min(FLAGS.qat_examples, len(splits.x_train)), replace=False)
            content = qat.qat_tflite(model, find_arch(model_path), splits.x_train[idx], splits.y_train[idx],
                                     epochs=FLAGS.qat_epochs, lr=FLAGS.qat_lr, batch=FLAGS.batch_size,
                                     freeze_bn=FLAGS.qat_freeze_bn,
                                     seed=FLAGS.seed, verbose=FLAGS.verbose)
        else:
            idx = rng.choice(len(splits.x_train), min(FLAGS.num_representative, len(splits.x_train)), replace=False)
            content = export.convert(model, "int8" if mode == "int8_io" else mode, FLAGS.batch_size,
                                     representative=splits.x_train[idx], int8_io=mode == "int8_io")
        fname = f"{stem}_{mode}.tflite"
        path = os.path.join(out_dir, fname)
        write_bytes_atomic(path, content)  # a killed export never leaves a truncated .tflite for an app
        checks, io = export_report.check_export(content, keras_logits, x_test, y_test, path)
        checks["seconds"] = round(time.time() - t0, 1)
        write_json_atomic(os.path.join(out_dir, f"{stem}_{mode}.json"),
                          export_report.sidecar(fname, mode, io, splits.mean, splits.std, splits.labels, checks,
                                                FLAGS.dataset))
        report["modes"][mode] = dict(checks, file=path)
        print(f"{mode:8s} {checks['size_bytes'] / 1024:8.1f} {checks['max_abs_logit_diff']:12.3g} "
              f"{checks['top1_agreement']:10.4f} {checks['keras_accuracy']:9.4f} {checks['tflite_accuracy']:10.4f} "
              f"{checks['accuracy_drop_points']:8.2f} {checks['seconds']:7.1f}", flush=True)
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
