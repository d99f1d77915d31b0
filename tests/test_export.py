"""TFLite export: float parity with Keras on real images, quantized sanity, QAT, the CLIs."""

import json
import re

import numpy as np
import pytest

from conftest import assert_one_line_error, run_cli
from proxyless_tf.export import tflite as export
from proxyless_tf.training import recipe as training
from proxyless_tf.training.config import TrainConfig
from proxyless_tf.errors import ConfigError
from proxyless_tf.latency import keys as keys_lib
from proxyless_tf.latency.table import LatencyStats, LatencyTable
from proxyless_tf.space import Arch
from train_helpers import write_tiny_arch

# TensorFlow's own logging (absl/TF C++ and Python records, the TFLite runtime and converter).
TF_LINE = re.compile(r"^[IWE]\d{4} |oneDNN custom operations|cudart_stub|absl::InitializeLog|XNNPACK delegate", re.M)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny Fashion-MNIST net trained for a few seconds, saved as a user's run would be.

    Like every retrained model it starts with `Normalize`: it (and its exports) take raw pixels."""
    from proxyless_tf.data.sources import open_source

    d = tmp_path_factory.mktemp("tiny_run")
    arch_path = write_tiny_arch(d)
    source = open_source("fashion_mnist")
    cfg = TrainConfig(epochs=2, batch_size=64, lr=0.2, warmup_epochs=0.2, train_examples=1024)
    res = training.train(Arch.from_json(arch_path), source, cfg, str(d / "run"), progress="none")
    json_res = dict(res, arch=arch_path)
    (d / "run" / "result.json").write_text(json.dumps(json_res))
    model = export.load_keras_model(res["model_path"])
    xt, yt = source.test_arrays()
    x = xt[:200].astype(np.float32)  # raw pixels 0..255
    return {"dir": d, "arch": arch_path, "model_path": res["model_path"], "model": model,
            "x": x, "y": yt[:200], "rep": source.train_arrays()[0][:64].astype(np.float32),
            "logits": model.predict(x, verbose=0), "float32": export.convert(model, "float32")}


def test_float32_tflite_matches_keras_on_real_test_images(trained):
    tfl = export.predict_tflite(export.open_interpreter(trained["float32"]), trained["x"])
    res = export.agreement(trained["logits"], tfl, trained["y"])
    assert res["max_abs_logit_diff"] <= 1e-4 and res["top1_agreement"] == 1.0
    assert res["keras_accuracy"] > 0.25  # it did learn something: 10 classes


@pytest.mark.parametrize("mode,int8_io,min_agree", [("float16", False, 0.99), ("dynamic", False, 0.95),
                                                    ("int8", False, 0.9)])  # int8 I/O: the CLI test
def test_quantized_exports_agree_roughly(trained, mode, int8_io, min_agree):
    content = export.convert(trained["model"], mode, representative=trained["rep"], int8_io=int8_io)
    interp = export.open_interpreter(content)
    res = export.agreement(trained["logits"], export.predict_tflite(interp, trained["x"]), trained["y"])
    assert res["top1_agreement"] >= min_agree, res
    io = export.io_description(interp)
    want = "int8" if int8_io else "float32"
    assert io["input"]["dtype"] == io["output"]["dtype"] == want
    assert (io["input"]["quantization"] is not None) == int8_io
    assert len(content) < len(trained["float32"])


def test_int8_needs_representative_data(trained):
    with pytest.raises(ConfigError, match="representative"):
        export.convert(trained["model"], "int8")


@pytest.mark.slow
def test_export_cli_float_int8_qat_with_sidecars(trained):
    out = trained["dir"] / "tflite"
    proc = run_cli(["tools/export_tflite.py", trained["model_path"], "--modes=int8_io,qat",
                    "--num_test=200", "--num_representative=64", "--qat_examples=256", "--qat_lr=1e-5", f"--out_dir={out}"],
                   TF_CPP_MIN_LOG_LEVEL="2")  # what `import proxyless_tf` sets by default
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    # The console: no TensorFlow/TFLite/converter log line; the table (header + 2 rows), where the files are
    # and the next command (time it on a phone, or here): 8 lines.
    assert not TF_LINE.search(proc.stdout + proc.stderr) and proc.stderr == "", proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 8 and [l.split()[0] for l in lines[1:3]] == ["int8_io", "qat"], proc.stdout
    assert lines[3].startswith("wrote 2 TFLite model(s) (int8_io, qat)") and lines[3].endswith(f"to {out}")
    assert lines[4] == f"  report: {out / 'export_report.json'}"
    tfl = out / "model_int8_io.tflite"
    assert lines[6] == f"  python tools/benchmark_tflite.py {tfl} --backend=adb --benchmark_binary=./benchmark_model"
    assert lines[7] == f"  python tools/benchmark_tflite.py {tfl} --backend=litert"
    rep = json.loads((out / "export_report.json").read_text())["modes"]
    assert rep["int8_io"]["top1_agreement"] >= 0.9, rep["int8_io"]
    # QAT ran (arch found via result.json), with a tiny lr so the half-trained net barely moves.
    assert rep["qat"]["top1_agreement"] >= 0.7, rep["qat"]
    assert rep["qat"]["tflite_accuracy"] >= rep["qat"]["keras_accuracy"] - 0.1, rep["qat"]
    side = json.loads((out / "model_int8_io.json").read_text())
    assert side["input"]["shape"] == [1, 28, 28, 1] and side["input"]["dtype"] == "int8"
    assert side["normalisation"]["mean"] == [0.286] and side["labels"][9] == "Ankle boot"
    assert side["checks"]["n"] == 200
    # The model normalises: the app feeds raw pixels, which int8 input holds as pixel - 128 (scale 1).
    assert side["input"]["pixels"] == "raw 0..255" and side["normalisation"]["in_model"] is True
    q = side["input"]["quantization"]
    assert q["scale"] == pytest.approx(1.0, rel=0.02) and q["zero_point"] == -128
    assert json.loads((out / "model_qat.json").read_text())["input"]["pixels"] == "raw 0..255"


def test_export_cli_takes_an_old_model_without_normalize(trained, tmp_path):
    """A .keras saved before models carried `Normalize` (normalised input): still exported, fed
    normalised test images, and its sidecar says so."""
    import keras

    from proxyless_tf.models.nets import build_model

    keras.utils.set_random_seed(0)
    old = build_model(Arch.from_json(trained["arch"]), 10)
    path = tmp_path / "old.keras"
    old.save(path)
    out = tmp_path / "tflite"
    proc = run_cli(["tools/export_tflite.py", str(path), "--modes=float32,int8", "--num_test=64",
                    "--num_representative=32", f"--out_dir={out}"], TF_CPP_MIN_LOG_LEVEL="2")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rep = json.loads((out / "export_report.json").read_text())
    assert rep["input"] == "normalised" and rep["n_test"] == 64
    assert rep["modes"]["float32"]["max_abs_logit_diff"] <= 1e-4 and rep["modes"]["float32"]["top1_agreement"] == 1
    side = json.loads((out / "old_float32.json").read_text())
    assert side["input"]["pixels"] == "normalised" and side["normalisation"]["in_model"] is False
    assert side["normalisation"]["mean"] == [0.286] and "pixel / 255 - mean" in side["normalisation"]["formula"]


def _hand_table(trained, tmp_path):
    """The float32 export as m.tflite, and a table that prices every block of its space at 0.5 ms."""
    tfl = tmp_path / "m.tflite"
    tfl.write_bytes(trained["float32"])
    arch = Arch.from_json(trained["arch"])
    keys = keys_lib.required_keys(arch.space, 10)
    table = LatencyTable({"backend": "hand"}, {k: LatencyStats(0.5, 0.4, 0.6, 3) for k in keys}, 10,
                         arch.space.name, arch.space.fingerprint())
    table.save(tmp_path / "t.json")
    return tfl, arch, table


def test_benchmark_cli_measures_and_compares_with_the_prediction(trained, tmp_path):
    tfl, arch, _ = _hand_table(trained, tmp_path)
    proc = run_cli(["tools/benchmark_tflite.py", str(tfl), "--backend=litert", "--num_runs=20", "--warmup_runs=2",
                    f"--table={tmp_path / 't.json'}", f"--arch={trained['arch']}", "--json"], TF_CPP_MIN_LOG_LEVEL="2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not TF_LINE.search(proc.stdout + proc.stderr) and len(proc.stdout.splitlines()) == 3, proc.stdout
    assert proc.stdout.startswith("m.tflite on litert: median ") and "predicted by t.json: " in proc.stdout
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["count"] == 20 and res["predicted_ms"] == pytest.approx(0.5 * len(keys_lib.arch_keys(arch, 10)))
    assert res["error_pct"] == pytest.approx(100 * (res["predicted_ms"] - res["median_ms"]) / res["median_ms"])
    assert res["compared_statistic"] == "median"  # the hand table says nothing: median


@pytest.mark.slow
def test_benchmark_cli_compares_a_p5_table_with_the_p5_and_rejects_a_corrupt_model(trained, tmp_path):
    tfl, arch, table = _hand_table(trained, tmp_path)
    table.statistic = "p5"  # a p5 table (the default of new host tables) is compared with the p5
    table.save(tmp_path / "t5.json")
    proc = run_cli(["tools/benchmark_tflite.py", str(tfl), "--backend=litert", "--num_runs=20", "--warmup_runs=2",
                    f"--table={tmp_path / 't5.json'}", f"--arch={trained['arch']}", "--json"], TF_CPP_MIN_LOG_LEVEL="2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["compared_statistic"] == "p5" and "of the measured p5" in proc.stdout
    assert res["error_pct"] == pytest.approx(100 * (res["predicted_ms"] - res["p5_ms"]) / res["p5_ms"])

    bad = tmp_path / "corrupt.tflite"
    bad.write_bytes(tfl.read_bytes()[:3000])
    before = (tmp_path / "t.json").read_text()
    proc = run_cli(["tools/benchmark_tflite.py", str(bad), "--backend=litert", f"--table={tmp_path / 't.json'}",
                    f"--arch={trained['arch']}"])
    assert_one_line_error(proc, "corrupt.tflite", "LiteRT cannot load it")
    assert (tmp_path / "t.json").read_text() == before
