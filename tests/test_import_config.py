"""The official net configs import to exactly our committed published architectures."""

import json
import os

import pytest

from conftest import ROOT, assert_one_line_error, run_cli

NAMES = ["proxyless_mobile", "proxyless_gpu", "proxyless_cpu", "proxyless_mobile_14"]


def test_all_four_official_configs_import_to_configs_archs(tmp_path, shared_data):
    import importlib.util

    spec = importlib.util.spec_from_file_location("importer", os.path.join(ROOT, "tools", "import_proxyless_config.py"))
    importer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(importer)
    for name in NAMES:
        src = os.path.join(shared_data, f"{name}.config")
        arch = importer.convert(json.load(open(src)), src, name)
        committed = json.load(open(os.path.join(ROOT, "configs", "archs", f"{name}.json")))
        assert arch.to_dict() == committed, name
        # the per-layer choices agree with the official block list, zero layers included
        blocks = json.load(open(src))["blocks"][1:]
        official = ["zero" if b["mobile_inverted_conv"]["name"] == "ZeroLayer" else
                    f"mb_k{b['mobile_inverted_conv']['kernel_size']}_e{b['mobile_inverted_conv']['expand_ratio']}"
                    for b in blocks]
        assert arch.ops == official


def test_importer_cli_writes_the_same_file(tmp_path, shared_data):
    out = tmp_path / "m.json"
    proc = run_cli(["tools/import_proxyless_config.py", os.path.join(shared_data, "proxyless_gpu.config"),
                    f"--out={out}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.load(open(out)) == json.load(open(os.path.join(ROOT, "configs", "archs", "proxyless_gpu.json")))


@pytest.mark.parametrize("content,needle", [
    ('{"first_conv": {}, "blocks": []', "malformed or truncated JSON"),
    ('{"blocks": []}', "first_conv"),
])
def test_importer_bad_input_is_one_line_and_writes_nothing(tmp_path, content, needle):
    bad = tmp_path / "bad.config"
    bad.write_text(content)
    out = tmp_path / "out.json"
    proc = run_cli(["tools/import_proxyless_config.py", str(bad), f"--out={out}"])
    assert_one_line_error(proc, str(bad), needle)
    assert not out.exists()


def test_count_macs_tool_prints_published_numbers():
    proc = run_cli(["tools/count_macs.py"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {l.split()[0]: l.split() for l in proc.stdout.splitlines()[1:]}
    for name, mmacs in {"proxyless_mobile": 320.4, "proxyless_gpu": 465.3, "proxyless_cpu": 439.2,
                        "proxyless_mobile_14": 580.9}.items():
        assert abs(float(rows[name][1]) - mmacs) / mmacs < 0.01
