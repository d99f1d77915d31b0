"""tools/soak_search.py in miniature: the micro space, a kill in epoch 2, the resume, the table and JSON."""

import json

from conftest import run_cli
from resume_helpers import write_fake_fashion
from test_search_cli import write_micro


def test_soak_kills_resumes_and_reports(tmp_path):
    _, _, sp, tp = write_micro(tmp_path)
    data_dir = write_fake_fashion(tmp_path)
    out = tmp_path / "soak.json"
    proc = run_cli(["tools/soak_search.py", "--minutes=0", "--epochs=3", "--steps_per_epoch=60",
                    "--checkpoint_every=10", f"--latency_table={tp}", "--interval=0.1", "--max_ratio=100",
                    f"--out_dir={tmp_path}/run", f"--out={out}",
                    f"--search_arg=--space={sp}", f"--search_arg=--data_dir={data_dir}", "--search_arg=--valid_size=40",
                    "--search_arg=--max_train=200", "--search_arg=--batch_size=8",
                    "--search_arg=--bn_recalibration_steps=2", "--search_arg=--latency_loss=add#linear"],
                   timeout=300)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    r = json.loads(out.read_text())
    assert r["kill"] and r["resume_point"] == r["kill"]["checkpoint"]
    assert r["resume_point"]["epoch"] >= 1 and r["resume_point"]["step"] > 0  # mid-epoch, after epoch 1
    first, resumed = r["processes"]["first"], r["processes"]["resumed"]
    assert first["epochs"][0]["epoch"] == 1 and resumed["epochs"][-1]["epoch"] == 3
    assert resumed["returncode"] == 0 and r["ratio"] > 0 and r["checkpoints_seen"] >= 2
    assert "ratio last / first" in proc.stdout
