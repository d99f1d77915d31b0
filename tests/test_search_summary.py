"""The search summary says whether α decided the network: numbers checked by hand on a built α."""

import math
import types

import pytest

from proxyless_tf.search import summary
from proxyless_tf.search.config import SearchConfig


def test_alpha_decision_on_a_hand_built_alpha():
    probs = [{"a": 0.5, "b": 0.25, "c": 0.25},  # H = 0.5 ln 2 + 2 * 0.25 ln 4 = 1.5 ln 2; max ln 3
             {"x": 0.5, "y": 0.5}]  # H = ln 2 = its max
    d = summary.alpha_decision(probs, ["a", "y"])
    assert d["chosen_p"] == [0.5, 0.5]
    assert d["entropy"] == pytest.approx([1.5 * math.log(2), math.log(2)])
    assert d["max_entropy"] == pytest.approx([math.log(3), math.log(2)])
    assert d["mean_entropy"] == pytest.approx(1.25 * math.log(2)) == pytest.approx(0.8664, abs=1e-4)
    assert d["mean_max_entropy"] == pytest.approx((math.log(3) + math.log(2)) / 2) == pytest.approx(0.8959, abs=1e-4)
    assert d["entropy_frac"] == pytest.approx(0.9671, abs=1e-4)
    lines = summary.decision_lines(d, changes=0, num_layers=2)
    assert lines[0].startswith("alpha           mean entropy 0.866 of a possible 0.896 (97%); "
                               "p(chosen op) per layer: 0.50 0.50")
    assert lines[1].strip() == ("alpha did not decide this network: it stayed near uniform (entropy above 90% of its "
                                "maximum), so its argmax ops are barely preferred to the others.")
    # probabilities as the α history rounds them (not summing to 1) are renormalised
    assert summary.alpha_decision([{"a": 0.3, "b": 0.1}], ["b"])["chosen_p"] == pytest.approx([0.25])


def test_a_decided_alpha_and_a_derivation_that_rewrote_it():
    probs = [{"a": 0.9, "b": 0.05, "c": 0.05}] * 3  # H = -(0.9 ln 0.9 + 0.1 ln 0.05) = 0.3944 of ln 3 = 1.0986
    d = summary.alpha_decision(probs, ["a", "a", "b"])
    assert d["chosen_p"] == pytest.approx([0.9, 0.9, 0.05])
    assert d["mean_entropy"] == pytest.approx(0.3944, abs=1e-4) and d["entropy_frac"] == pytest.approx(0.359, abs=1e-3)
    assert summary.decision_lines(d, changes=1, num_layers=3)[1].strip() == \
        "alpha decided this network (the derivation changed 1 of 3 layers)"
    rewritten = summary.decision_lines(d, changes=2, num_layers=3)[1]
    assert rewritten.strip() == ("alpha did not decide this network: the latency derivation changed 2 of its 3 argmax "
                                 "layers, so the network is mostly the derivation's choice.")
    assert "near uniform" not in rewritten


def test_the_threshold_against_seven_candidates():
    """Seven candidates: a maximum of ln 7 = 1.946. The quickstart's α ended at 1.87, 96 % of it:
    undecided. One op at 0.4 and six at 0.1 has H = -(0.4 ln 0.4 + 0.6 ln 0.1) = 1.748, 89.8 %: decided."""
    assert 1.87 / math.log(7) > summary.UNDECIDED_ENTROPY
    d = summary.alpha_decision([dict(zip("abcdefg", [0.4] + [0.1] * 6))], ["a"])
    assert d["mean_max_entropy"] == pytest.approx(1.9459, abs=1e-4)
    assert d["mean_entropy"] == pytest.approx(1.7481, abs=1e-4) and d["entropy_frac"] == pytest.approx(0.898, abs=1e-3)
    assert "alpha decided" in summary.decision_lines(d, changes=0, num_layers=1)[1]


def test_the_summary_ends_with_the_next_command_and_what_the_experiments_found():
    cfg = SearchConfig(space="s.json", out_dir="runs/q", dataset="cifar10", data_dir="/d", target_frac=0.5)
    space = types.SimpleNamespace(name="micro", num_layers=2, num_architectures=lambda: 49, input_shape=(28, 28, 1))
    table = type("T", (), {"path": "t.json", "device": {"backend": "litert"}, "__len__": lambda self: 12})()
    result = {"target_ms": 2.0, "range_ms": [1.0, 3.0], "predicted_ms": 2.1, "argmax_predicted_ms": 2.8,
              "derive_changed_layers": 2, "valid_acc": 0.5, "wall_s": 60.0, "ops": ["a", "y"],
              "alpha": summary.alpha_decision([{"a": 0.5, "b": 0.5}, {"x": 0.5, "y": 0.5}], ["a", "y"])}
    lines = summary.summary_text(cfg, space, table, result, [], 1, "runs/q").splitlines()
    assert lines[-2] == "next: python -m proxyless_tf.train --arch=runs/q/arch.json --dataset=cifar10 --data_dir=/d"
    assert lines[-1].startswith("note: at 2-core budgets the search did not beat random networks")
    assert "derived arch    predicted 2.1 ms (+5.0% vs target" in "\n".join(lines)
    assert any("entropy 0.693 of a possible 0.693 (100%)" in l for l in lines)
    assert any("near uniform" in l and "; and the latency derivation changed 2 of its 2" in l for l in lines)
    assert len(lines) <= 14


@pytest.mark.parametrize("name", ["arrays", "tf.data"])
def test_data_from_python_gets_the_python_retraining_call(name):
    """No command line can name arrays or a tf.data.Dataset: `--dataset=arrays` would be refused."""
    cfg = types.SimpleNamespace(dataset=name, data_dir=None)
    line = summary.next_command(cfg, "runs/q")
    assert line.startswith("python: proxyless_tf.training.recipe.train(") and "--dataset" not in line
    assert "'runs/q/arch.json'" in line
