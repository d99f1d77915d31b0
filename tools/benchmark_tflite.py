"""Measure a model's latency on one backend and compare it with a latency table's prediction.

    python tools/benchmark_tflite.py MODEL.tflite --backend=litert --threads=1
    python tools/benchmark_tflite.py MODEL.tflite --backend=adb --serial=SERIAL \
        --benchmark_binary=./benchmark_model --cpu_mask=f0 --threads=1
    python tools/benchmark_tflite.py MODEL.keras --backend=tf --batch_size=8 --device=/GPU:0
    ... --table=run/latency.json --arch=run/arch.json   # adds predicted ms and the error

Prints median / p5 / p95 / count in ms (and, with a table, predicted ms and the error in
percent of the measurement); --json adds one JSON line with the same numbers. litert and adb
take a .tflite (or a .keras, converted to float32 batch 1); tf takes a .keras.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from absl import flags  # noqa: E402

import latency_flags  # noqa: E402,F401  (defines --backend and the per-backend flags)
from proxyless_tf import cli  # noqa: E402
from proxyless_tf.errors import ConfigError  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("table", None, "LatencyTable JSON to predict with (needs --arch).")
flags.DEFINE_string("arch", None, "Architecture JSON of the model (with --table).")
flags.DEFINE_bool("json", False, "Also print the numbers as one JSON line (for scripts).")


def _measure(path, backend):
    from proxyless_tf.export import tflite as export
    from proxyless_tf.export import user_tflite

    if path.endswith(".keras"):
        return backend.measure(export.load_keras_model(path))
    if backend.name == "tf":
        raise ConfigError(path, "MODEL", "the tf backend times Keras models in the TF runtime",
                          "pass the .keras file, or use --backend=litert/adb for a .tflite")
    content = export.read_tflite(path)
    if backend.name == "adb":
        return backend.measure_tflite(content, path)
    # a file from anywhere: tensor sizes bounded before allocation, every input fed, one invoke checked
    interp = user_tflite.open_user_interpreter(content, path, num_threads=backend.threads)
    user_tflite.feed_inputs(interp, path)
    return backend.measure_interpreter(interp)


def main(argv):
    if len(argv) != 2:
        raise ConfigError("<args>", "MODEL", "expected exactly one model path",
                          "tools/benchmark_tflite.py MODEL.tflite --backend=litert")
    path = argv[1]
    if not os.path.isfile(path):
        raise ConfigError(path, "<file>", "model does not exist" if not os.path.exists(path) else
                          "is not a file", "pass the .tflite or .keras file")
    if bool(FLAGS.table) != bool(FLAGS.arch):
        raise ConfigError("<flags>", "--table/--arch", "a prediction needs both", "pass --table and --arch together")
    table = arch = None
    if FLAGS.table:  # load both before measuring, so a typo fails in a second, not after the run
        from proxyless_tf.latency.table import LatencyTable
        from proxyless_tf.space import Arch

        table, arch = LatencyTable.load(FLAGS.table), Arch.from_json(FLAGS.arch)
        table.check_space(arch.space)  # a table of another space names itself, not a missing block
        predicted = table.predict(arch)
    backend = latency_flags.make_backend_from_flags()
    st = _measure(path, backend)
    res = {"model": os.path.abspath(path), "backend": backend.name, "median_ms": st.median, "p5_ms": st.p5,
           "p95_ms": st.p95, "count": st.count}
    print(f"{os.path.basename(path)} on {backend.name}: median {st.median:.4f} ms "
          f"(p5 {st.p5:.4f}, p95 {st.p95:.4f}, {st.count} runs)")
    if table is not None:
        # the table's own statistic: a p5 table predicts the measurement's p5, not its median
        stat = table.statistic if getattr(st, table.statistic, None) is not None else "median"
        measured = getattr(st, stat)
        err = 100.0 * (predicted - measured) / measured
        res.update(predicted_ms=predicted, error_pct=err, compared_statistic=stat, table=os.path.abspath(FLAGS.table))
        print(f"predicted by {os.path.basename(FLAGS.table)}: {predicted:.4f} ms, error {err:+.1f}% of the "
              f"measured {stat}")
    else:
        print("next: to compare with what the search's latency table predicted, add "
              "--table=LATENCY_TABLE.json --arch=RUN/arch.json")
    if FLAGS.json:
        print(json.dumps(res))


if __name__ == "__main__":
    cli.run(main)
