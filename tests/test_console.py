"""The quiet console: which lines are TensorFlow's noise, the fd-2 filter, --verbosity, progress lines."""

import os
import re
import subprocess
import sys

import keras
import numpy as np

from cli_helpers import ROOT, cli_env
from proxyless_tf import console
from proxyless_tf import messages

# Lines captured from TF 2.21 / ai_edge_litert on a CPU-only host (see console.py).
TF_LINES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    "I0000 00:00:1796654016.158020    9339 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors.\n",
    "I0000 00:00:1796654016.158390    9339 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will "
    "not be used.\n",
    "E0000 00:00:1796654019.972548    9339 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed "
    "call to cuInit: UNKNOWN ERROR (303)\n",
    "W0000 00:00:1796654405.896924   17078 tf_tfl_flatbuffer_helpers.cc:364] Ignored output_format.\n",
    "I1207 14:35:00.921954 140551926795136 lite.py:1484] Using new converter: If you encounter a problem please file "
    "a bug.\n",
    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n",
    "fully_quantize: 0, inference_type: 6, input_inference_type: INT8, output_inference_type: INT8\n",
]
OURS = ["error: x.json: --arch: missing (fix: pass --arch=RUN/arch.json)\n",
        "epoch 1/2  step 8/16  loss 2.3  accuracy 0.1\n",
        "E0000 00:00:1796654019.972548    9339 session.cc:52] a real error stays visible\n",
        "/x/keras/trainer.py:12: UserWarning: something a user should see\n"]
TF_LINE = re.compile(r"^[IWE]\d{4} |oneDNN custom operations|cudart_stub|absl::InitializeLog|XNNPACK delegate", re.M)


def test_noise_is_tensorflows_own_lines_and_nothing_of_ours():
    assert [console.is_noise(l) for l in TF_LINES] == [True] * 8
    assert [console.is_noise(l) for l in OURS] == [False] * 4


def test_native_quiet_drops_what_native_code_writes_to_fd2_and_keeps_the_rest(capfd, monkeypatch):
    monkeypatch.setattr(console, "_verbosity", None)
    with console.native_quiet():
        os.write(2, "".join(TF_LINES[:3] + OURS[:1] + TF_LINES[3:] + OURS[1:]).encode())
    assert capfd.readouterr().err == "".join(OURS)
    monkeypatch.setattr(console, "_verbosity", 0)  # --verbosity=0: everything passes
    with console.native_quiet():
        os.write(2, "".join(TF_LINES).encode())
    assert capfd.readouterr().err == "".join(TF_LINES)


def _import_tensorflow(**env):
    env = dict(cli_env(**env))
    env.pop("TF_CPP_MIN_LOG_LEVEL")  # as a user runs it: nothing set
    return subprocess.run([sys.executable, "-c", "import proxyless_tf, tensorflow as tf; "
                           "print(tf.constant(2) + 1)"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def test_importing_tensorflow_prints_nothing_unless_verbosity_asks():
    quiet = _import_tensorflow()
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert quiet.stderr == "" and quiet.stdout.strip() == "tf.Tensor(3, shape=(), dtype=int32)"
    loud = _import_tensorflow(**{console.ENV: "0"})  # what --verbosity=0 hands to child processes
    assert loud.returncode == 0, loud.stderr[-2000:]
    assert len(TF_LINE.findall(loud.stderr)) >= 2, loud.stderr[-2000:]  # the oneDNN banner, twice


def test_duration_metrics_and_commands_read_as_a_person_writes_them(tmp_path, monkeypatch):
    assert [messages.duration(s) for s in (0.4, 59.4, 61, 3599, 3725)] == \
        ["0 s", "59 s", "1 min 01 s", "59 min 59 s", "1 h 02 min"]
    assert messages.metrics_text({"val_accuracy": 0.8, "accuracy": 0.81254, "learning_rate": 0.1, "loss": 0.5}) == \
        "loss 0.5  accuracy 0.8125  val_accuracy 0.8"
    monkeypatch.chdir(tmp_path)
    assert messages.shown_path(tmp_path / "run" / "model.keras") == os.path.join("run", "model.keras")
    assert messages.shown_path("/elsewhere/m.keras") == "/elsewhere/m.keras"
    assert messages.command("python", "a b/m.keras", "--x=1") == "python 'a b/m.keras' --x=1"
    assert messages.tool_command("export_tflite.py", "m.keras") == \
        f"python {os.path.join(ROOT, 'tools', 'export_tflite.py')} m.keras"


def test_progress_lines_every_n_steps_and_at_each_epoch_end(capsys):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    x, y = np.zeros((12, 2), np.float32), np.zeros((12, 1), np.float32)
    model.fit(x, y, batch_size=2, epochs=2, verbose=0, callbacks=[messages.progress_lines(2, 6, 4)])
    lines = capsys.readouterr().out.splitlines()
    head = [" ".join(l.split("  ")[:2]) for l in lines]
    assert [re.sub(r"done in .*", "done", h) for h in head] == ["epoch 1/2 step 4/6", "epoch 1/2 done",
                                                                 "epoch 2/2 step 4/6", "epoch 2/2 done"]
    assert all("loss 0" in l for l in lines)
    # A resumed run that starts at epoch 1, step 3 of 6: Keras counts that epoch's batches from 0.
    model.fit(x[:6], y[:6], batch_size=2, initial_epoch=1, epochs=2, verbose=0,
              callbacks=[messages.progress_lines(2, 6, 4, start_epoch=1, start_step=3)])
    assert [re.sub(r"done in .*", "done", l.split("  ")[1]) for l in capsys.readouterr().out.splitlines()] == \
        ["step 4/6", "done"]
