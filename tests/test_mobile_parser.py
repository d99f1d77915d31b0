"""benchmark_model output parsing: every form in use, from real output text.

Samples are benchmark_model output posted in public issues (tensorflow/tensorflow#62775:
`INFO: `-prefixed lines; google-research/google-research#802: plain lines;
tensorflow/tensorflow#49158: the summary line; tensorflow/tensorflow#42507 and #53138:
op-profiling tables), trimmed to the lines that matter, plus the newer percentile form.
"""

import pytest

from mobile import benchmark_output as bo

INFO_PREFIXED = """\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Num threads: [1]
INFO: Graph: [1x_LSTM_64_float32.tflite]
INFO: Enable op profiling: [1]
INFO: #threads used for CPU inference: [1]
INFO: Loaded model 1x_LSTM_64_float32.tflite
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
INFO: The input model file size (MB): 0.330964
INFO: Initialized session in 0.63ms.
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=132 first=3678 curr=3790 min=3270 max=5473 avg=3751.66 std=334

INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=261 first=3937 curr=3959 min=3190 max=6333 avg=3790.92 std=358

INFO: Inference timings in us: Init: 630, First inference: 3678, Warmup (avg): 3751.66, Inference (avg): 3790.92
"""

PLAIN = """\
STARTING!
Min num runs: [1000]
Num threads: [1]
Graph: [/data/local/tmp/model.tflite]
Loaded model /data/local/tmp/model.tflite
The input model file size (MB): 1.41812
Initialized session in 17.851ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=478 first=2104 curr=1017 min=1012 max=2104 avg=1041.15 std=63

Running benchmark for at least 1000 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=1000 first=1040 curr=1018 min=1012 max=1190 avg=1039.66 std=22

Inference timings in us: Init: 17851, First inference: 2104, Warmup (avg): 1041.15, Inference (avg): 1039.66
"""

PERCENTILES = """\
INFO: Running benchmark for at least 50 iterations and at least 0 seconds but terminate if exceeding 150 seconds.
INFO: count=50 first=13104 curr=12877 min=12710 max=13402 avg=12915.3 std=140 p5=12741 median=12893 p95=13215

INFO: Inference timings in us: Init: 52311, First inference: 15233, Warmup (avg): 13511.2, Inference (avg): 12915.3
"""

OLD_AVERAGE = """\
Loaded model /data/local/tmp/mobilenet_v1_1.0_224.tflite
resolved reporter
Initialized session in 45.361ms
Running benchmark for 1 iterations
count=1 curr=183112

Running benchmark for 50 iterations
count=50 first=172441 curr=171985 min=170771 max=173887 avg=172131 std=717

Average inference timings in us: Warmup: 183112, Init: 45361, Inference: 172131
"""

OP_PROFILE_WITH_START = (
    "Profiling Info for Benchmark Initialization:\n"
    "============================== Run Order ==============================\n"
    "\t             [node type]\t          [start]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]\n"
    "\t         AllocateTensors\t            0.000\t    0.019\t    0.019\t100.000%\t100.000%\t     0.000\t        1\tAllocateTensors/0\n"
    "\n"
    "Operator-wise Profiling Info for Regular Benchmark Runs:\n"
    "============================== Run Order ==============================\n"
    "\t             [node type]\t          [start]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]\n"
    "\t                 CONV_2D\t            0.000\t    5.468\t    5.252\t 15.820%\t 15.820%\t     0.000\t        1\t[conv2d/Relu]:0\n"
    "\t       DEPTHWISE_CONV_2D\t            5.253\t   10.204\t    9.988\t 30.084%\t 45.904%\t     0.000\t        1\t[depthwise/Relu6]:1\n"
    "\t                 CONV_2D\t           15.242\t   18.102\t   17.960\t 54.096%\t100.000%\t     0.000\t        1\t[Identity]:2\n"
    "\n"
    "============================== Summary by node type ==============================\n"
    "\t             [Node type]\t  [count]\t  [avg ms]\t    [avg %]\t    [cdf %]\t  [mem KB]\t[times called]\n"
    "\t                 CONV_2D\t        2\t    23.212\t    69.916%\t    69.916%\t     0.000\t        2\n"
    "\t       DEPTHWISE_CONV_2D\t        1\t     9.988\t    30.084%\t   100.000%\t     0.000\t        1\n"
    "\n"
    "Timings (microseconds): count=50 first=33774 curr=33172 min=32641 max=34005 avg=33209.4 std=450\n"
)

OP_PROFILE_NO_START = (
    "INFO: Operator-wise Profiling Info for Regular Benchmark Runs:\n"
    "INFO: ============================== Run Order ==============================\n"
    "INFO: \t             [node type]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]\n"
    "INFO: \t TfLiteXNNPackDelegate\t    0.861\t    0.842\t 96.000%\t 96.000%\t     0.000\t        1\t[StatefulPartitionedCall:0]:12\n"
    "INFO: \t                 MEAN\t    0.036\t    0.035\t  4.000%\t100.000%\t     0.000\t        1\t[pool/Mean]:13\n"
)


def test_info_prefixed_lines():
    out = bo.parse(INFO_PREFIXED)
    assert [s.count for s in out.run_stats] == [132, 261]
    assert out.summary == {"Init": 630, "First inference": 3678, "Warmup (avg)": 3751.66,
                           "Inference (avg)": 3790.92}
    med, p5, p95, n = bo.latency_ms(out)
    # No percentiles printed: median := avg, p5/p95 := avg -/+ 1.645 std (inside [min, max]).
    assert (med, n) == (pytest.approx(3.79092), 261)
    assert p5 == pytest.approx((3790.92 - 1.6448536 * 358) / 1e3)
    assert p95 == pytest.approx((3790.92 + 1.6448536 * 358) / 1e3)


def test_plain_lines_clip_to_min_max():
    out = bo.parse(PLAIN)
    assert out.timed.values["max"] == 1190 and out.summary["Init"] == 17851
    med, p5, p95, n = bo.latency_ms(out)
    assert (med, n) == (pytest.approx(1.03966), 1000)
    assert p5 == pytest.approx(1.012)  # avg - 1.645 std = 1003.5 us < min 1012 -> min
    assert p95 == pytest.approx((1039.66 + 1.6448536 * 22) / 1e3)


def test_percentile_form_is_taken_as_printed():
    out = bo.parse(PERCENTILES)
    assert bo.latency_ms(out) == (pytest.approx(12.893), pytest.approx(12.741), pytest.approx(13.215), 50)


def test_older_average_summary_form():
    out = bo.parse(OLD_AVERAGE)
    assert out.summary == {"Warmup (avg)": 183112, "Init": 45361, "Inference (avg)": 172131}
    assert out.run_stats[0].values == {"count": 1, "curr": 183112}
    assert bo.latency_ms(out)[0] == pytest.approx(172.131)
    # Summary alone (a build that prints no count= line) still gives the average.
    only = bo.parse(OLD_AVERAGE.splitlines()[-1])
    assert bo.latency_ms(only) == (pytest.approx(172.131),) * 3 + (0,)


def test_op_profile_table_with_start_column():
    out = bo.parse(OP_PROFILE_WITH_START)
    regular = [t for t in out.op_tables if t["section"].startswith("Operator-wise") and t["title"] == "Run Order"]
    assert len(regular) == 1
    rows = regular[0]["rows"]
    assert regular[0]["columns"][:3] == ["node type", "start", "first"]
    assert [r["node type"] for r in rows] == ["CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D"]
    assert sum(r["avg ms"] for r in rows) == pytest.approx(33.2)
    assert rows[1]["name"] == "[depthwise/Relu6]:1" and rows[1]["%"] == pytest.approx(30.084)
    summary = [t for t in out.op_tables if t["title"] == "Summary by node type"][0]
    assert {r["node type"]: r["count"] for r in summary["rows"]} == {"CONV_2D": 2, "DEPTHWISE_CONV_2D": 1}
    # The profiler's "Timings (microseconds): count=..." line counts as the timed runs' stats.
    assert out.timed.count == 50 and bo.latency_ms(out)[0] == pytest.approx(33.2094)


def test_op_profile_table_without_start_column():
    out = bo.parse(OP_PROFILE_NO_START)
    (t,) = out.op_tables
    assert "start" not in t["columns"] and t["columns"][1] == "first"
    assert [(r["node type"], r["avg ms"]) for r in t["rows"]] == [("TfLiteXNNPackDelegate", 0.842), ("MEAN", 0.035)]


def test_failed_run_has_errors_and_no_latency():
    out = bo.parse("INFO: Loaded model /data/local/tmp/x.tflite\nERROR: Failed to allocate tensors!\n"
                   "ERROR: Benchmarking failed.\n")
    assert bo.latency_ms(out) is None
    assert out.errors[-1] == "Benchmarking failed."
