"""research/tools/experiment_specialization.py without its two 27-minute searches: the verdict rule, the
per-layer comparison and the markdown it writes, from the results of the committed run.

The tool defines absl flags (out_dir, seed, ...) that the search module also defines, so it is
imported in a subprocess, like a user runs it; the subprocess prints JSON the test checks.
"""

import json
import os
import textwrap

from conftest import ROOT, run_cli
from research.experiments import HAND_WRITTEN

PRELUDE = textwrap.dedent("""
    import importlib.util, json, os, sys
    spec = importlib.util.spec_from_file_location("spec_tool", os.path.join({root!r}, "research", "tools",
                                                  "experiment_specialization.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.FLAGS(["tool"] + {argv!r})
""")


def run_tool_code(code, argv=()):
    proc = run_cli(["-c", PRELUDE.format(root=ROOT, argv=list(argv)) + textwrap.dedent(code)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_verdicts_follow_the_rule_in_every_branch():
    # pred[table][arch]; targets 10 ms on both tables, tolerance 10 % (limit 11 ms), margin 1 point
    out = run_tool_code("""
        targets = {"pixel1": 10.0, "litert1": 10.0}
        cases = {
            # pixel1: own arch over the limit; litert1: own fits, the other does not
            "misses_and_excludes": ({"pixel1": {"pixel1": 11.5, "litert1": 9.0},
                                     "litert1": {"pixel1": 12.0, "litert1": 10.9}}, {"pixel1": .80, "litert1": .80}),
            # both fit on both tables: accuracy beyond the margin decides (pixel1 +2 points)
            "accuracy_decides": ({"pixel1": {"pixel1": 9.0, "litert1": 8.0},
                                  "litert1": {"pixel1": 9.0, "litert1": 8.0}}, {"pixel1": .82, "litert1": .80}),
            # both fit, accuracy within the margin: the faster own arch wins, the slower loses
            "speed_decides": ({"pixel1": {"pixel1": 9.0, "litert1": 9.5},
                               "litert1": {"pixel1": 9.0, "litert1": 9.5}}, {"pixel1": .800, "litert1": .805}),
        }
        print(json.dumps({k: tool.verdicts(p, targets, acc, 0.1, 1.0) for k, (p, acc) in cases.items()}))
    """)
    v = out["misses_and_excludes"]
    assert not v["pixel1"]["holds"] and "misses the target (11.50 > 11.00 ms)" in v["pixel1"]["why"]
    assert v["litert1"]["holds"] and "the other arch 12.00 ms exceeds" in v["litert1"]["why"]
    v = out["accuracy_decides"]
    assert v["pixel1"]["holds"] and "more accurate by 2.00 points" in v["pixel1"]["why"]
    assert not v["litert1"]["holds"] and "the other arch is more accurate by 2.00 points" in v["litert1"]["why"]
    v = out["speed_decides"]
    assert v["pixel1"]["holds"] and "(9.00 vs 9.50 ms)" in v["pixel1"]["why"]
    assert not v["litert1"]["holds"] and "not faster (9.50 vs 9.00 ms)" in v["litert1"]["why"]
    assert v["pixel1"]["limit_ms"] == 11.0


def test_layer_diff_counts_how_each_layer_differs():
    out = run_tool_code(f"""
        from proxyless_tf import space as space_lib
        sp = space_lib.SearchSpace.from_json(os.path.join({ROOT!r}, "configs", "spaces", "proxyless_mobile.json"))
        a = ["mb_k3_e3"] * sp.num_layers
        b = list(a)
        b[0] = "mb_k7_e3"    # kernel
        b[1] = "mb_k5_e6"    # kernel and expansion
        b[2] = "zero"        # zero vs block (layer 2 is a residual layer of stage 0)
        b[-1] = "mb_k3_e6"   # expansion
        print(json.dumps(tool.layer_diff(sp, a, b)))
    """)
    assert out["num_differ"] == 4
    assert out["kinds"] == {"kernel": 2, "expansion": 2, "zero vs block": 1}
    assert [r["how"] for r in out["layers"][:3]] == [["kernel"], ["kernel", "expansion"], ["zero vs block"]]
    s0 = out["stages"]["0"]
    assert s0["differ"] == 3 and s0["zero"] == [0, 1] and s0["kernel_sum"] == [12, 7 + 5 + 3]
    assert s0["blocks"] == [4, 3] and s0["expand_sum"] == [12, 3 + 6 + 3]


def test_markdown_regenerates_the_committed_section_from_its_results_json():
    """research/RESULTS.md's `## Specialization [ceiling]` was written by the tool from
    research/specialization_ceiling.json; everything above the hand-written reading (its marker line) must come back."""
    out = run_tool_code(f"""
        res = json.load(open(os.path.join({ROOT!r}, "research", "specialization_ceiling.json")))
        print(json.dumps({{"md": tool.markdown(res), "heading": tool._heading()}}))
    """, ["--results_tag=ceiling", "--plot=research/specialization_ceiling.png"])
    doc = open(os.path.join(ROOT, "research", "RESULTS.md"), encoding="utf-8").read()
    assert out["heading"] == "## Specialization [ceiling]"
    start = doc.index(out["heading"] + "\n")
    end = doc.find("\n## ", start + 1)
    section = doc[start:end if end > 0 else None]
    generated = section.split(HAND_WRITTEN)[0].strip()
    assert out["md"].strip() == generated
    assert "- pixel1: **holds**" in generated and "- litert1: **holds**" in generated
