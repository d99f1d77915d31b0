"""SearchSpace / Arch: layout facts of the paper's space, JSON round trips, validation."""

import json
import os

import pytest
from proxyless_tf import files as files_lib

from proxyless_tf import space as space_lib
from proxyless_tf.errors import ConfigError

from conftest import ROOT

MOBILE = os.path.join(ROOT, "configs", "spaces", "proxyless_mobile.json")
FASHION = os.path.join(ROOT, "configs", "spaces", "fashion_mnist.json")


def test_mobile_space_has_21_searchable_layers_and_zero_where_the_paper_allows():
    space = space_lib.SearchSpace.from_json(MOBILE)
    assert space.num_layers == 21
    # zero is a candidate exactly where stride is 1 and in == out: layers 2-4 of stages 1-5.
    with_zero = [l.index for l in space.layers if space_lib.ZERO in l.candidates]
    assert with_zero == [1, 2, 3, 5, 6, 7, 9, 10, 11, 13, 14, 15, 17, 18, 19]
    assert all(len(l.candidates) == 7 for l in space.layers if l.index in with_zero)
    assert all(len(l.candidates) == 6 for l in space.layers if l.index not in with_zero)
    assert space.num_architectures() == 6 ** 6 * 7 ** 15
    # resolutions: 224 -> stem 112 -> 56, 28, 14, 14, 7, 7
    assert space.stem_out_hw == (112, 112)
    assert [space.layers[i].in_hw[0] for i in (0, 4, 8, 12, 16, 20)] == [112, 56, 28, 14, 14, 7]
    assert space.final_hw == (7, 7) and space.final_channels == 320


def test_op_grammar():
    assert space_lib.parse_op("mb_k5_e3") == space_lib.OpSpec("mb_k5_e3", 5, 3.0)
    assert space_lib.parse_op("zero").is_zero
    assert space_lib.op_name(7, 6.0) == "mb_k7_e6"
    assert space_lib.expanded_channels(24, 3) == 72
    assert space_lib.expanded_channels(40, 6) == 240
    for bad in ("mb_k4_e3", "conv3x3", "mb_k3", "", "ZERO", "mb_k3_e0"):
        with pytest.raises(ConfigError):
            space_lib.parse_op(bad)


def test_space_and_arch_json_round_trip(tmp_path):
    space = space_lib.SearchSpace.from_json(FASHION)
    p = tmp_path / "space.json"
    space.to_json(p)
    again = space_lib.SearchSpace.from_json(p)
    assert again == space and again.fingerprint() == space.fingerprint()
    arch = space.sample(seed=3)
    arch.to_json(tmp_path / "arch.json")
    assert space_lib.Arch.from_json(tmp_path / "arch.json") == arch


def test_sampling_is_seeded_and_covers_every_candidate():
    space = space_lib.SearchSpace.from_json(FASHION)
    assert space.sample(seed=7).ops == space.sample(seed=7).ops
    archs = [space.sample(seed=s) for s in range(200)]
    assert len({tuple(a.ops) for a in archs}) == 200
    for i, layer in enumerate(space.layers):
        assert {a.ops[i] for a in archs} == set(layer.candidates)


def _bad_space(tmp_path, mutate):
    d = json.load(open(MOBILE))
    mutate(d)
    p = tmp_path / "bad_space.json"
    p.write_text(json.dumps(d))
    return p


@pytest.mark.parametrize("mutate,field", [
    (lambda d: d["candidates"].append("mb_k4_e3"), "candidates[6]"),
    (lambda d: d["stages"][2].update(stride=3), "stages[2].stride"),
    (lambda d: d["stages"][0].update(width=-8), "stages[0].width"),
    (lambda d: d["stages"][0].update(width=10 ** 9), "stages[0].width"),
    (lambda d: d.update(input_shape=[224, 224]), "input_shape"),
    (lambda d: d.update(input_shape=[100000, 224, 3]), "input_shape[0]"),
    (lambda d: d["stem"].pop("stride"), "stem.stride"),
    (lambda d: d["stages"][1].update(depth="4"), "stages[1].depth"),
    (lambda d: d["candidates"].append("zero"), "candidates[6]"),
])
def test_bad_space_names_file_and_field(tmp_path, mutate, field):
    p = _bad_space(tmp_path, mutate)
    with pytest.raises(ConfigError) as e:
        space_lib.SearchSpace.from_json(p)
    assert e.value.field == field
    assert str(p) in str(e.value) and "fix:" in str(e.value)


@pytest.mark.parametrize("content,needle", [
    (b'{"name": "x", "input_shape": [224, 2', "malformed or truncated JSON"),
    (b"\xff\xfe{\x00}", "not UTF-8"),
    (b"", "is empty"),
    (b"[1, 2]", "expected a JSON object"),
])
def test_unreadable_space_file(tmp_path, content, needle):
    p = tmp_path / "s.json"
    p.write_bytes(content)
    with pytest.raises(ConfigError, match=needle):
        space_lib.SearchSpace.from_json(p)


def test_arch_rejects_zero_where_shapes_differ_and_wrong_length():
    space = space_lib.SearchSpace.from_json(MOBILE)
    ops = space.sample(seed=0).ops
    bad = list(ops)
    bad[0] = "zero"  # first layer of a stage strides by 2
    with pytest.raises(ConfigError) as e:
        space_lib.Arch(space, bad)
    assert e.value.field == "ops[0]"
    with pytest.raises(ConfigError, match="20 op names for 21"):
        space_lib.Arch(space, ops[:-1])


def test_atomic_write_leaves_the_old_file_when_serialisation_fails(tmp_path):
    p = tmp_path / "arch.json"
    p.write_text('{"good": true}')
    with pytest.raises(TypeError):
        files_lib.write_json_atomic(p, {"bad": object()})
    assert json.loads(p.read_text()) == {"good": True}
    assert os.listdir(tmp_path) == ["arch.json"]
