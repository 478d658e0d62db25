"""Parsing LiteRT / TF Lite `benchmark_model` output: real outputs from several versions, failures, argv.

Every sample below is copied verbatim from the public source named above it (whitespace included); where a
source shows only part of a run, only that part is here, and pieces are joined without edits.
"""

from __future__ import annotations

import math

import pytest

from edgecam.devices.benchmark_model import (
    BenchmarkModelResult,
    benchmark_argv,
    parse_benchmark_output,
    parse_run_stats,
    to_latency_columns,
)

# TF Lite v2.4.0 on a Xiaomi Mi11 (Android), yolov5s fp32 on the CPU, `--num_threads=4`.
# Source: github.com/lp6m/yolov5s_android, benchmark/README.md ("FP32 model / None(CPU)").
TF24_ANDROID = """\
count=50 first=249042 curr=250889 min=247067 max=254474 avg=249684 std=1442
Inference timings in us: Init: 16242, First inference: 360262, Warmup (avg): 304586, Inference (avg): 249684
Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
Peak memory footprint (MB): init=4.92969 overall=138.809
"""

# Same source, int8 model on the CPU (a fractional average).
TF24_ANDROID_INT8 = """\
count=50 first=94518 curr=95117 min=93066 max=99490 avg=95788.3 std=1284
Inference timings in us: Init: 1779, First inference: 152949, Warmup (avg): 110690, Inference (avg): 95788.3
Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
Peak memory footprint (MB): init=5.15625 overall=36.9883
"""

# Same source, a failed run: "NNAPI qti-default (Not working)".
TF24_NNAPI_FAILURE = """\
STARTING!
Log parameter values verbosely: [0]
Num threads: [4]
Graph: [/data/local/tmp/yolov5s_int8_640.tflite]
#threads used for CPU inference: [4]
Use NNAPI: [1]
NNAPI execution preference: [sustained_speed]
NNAPI accelerator name: [qti-default]
NNAPI accelerators available: [qti-default,qti-dsp,qti-gpu,nnapi-reference]
Loaded model /data/local/tmp/yolov5s_int8_640.tflite
INFO: Initialized TensorFlow Lite runtime.
INFO: Created TensorFlow Lite delegate for NNAPI.
ERROR: NN API returned error ANEURALNETWORKS_OP_FAILED at line 3779 while completing NNAPI compilation.

ERROR: Node number 248 (TfLiteNnapiDelegate) failed to prepare.

ERROR: Restored original execution plan after delegate application failure.
Failed to apply NNAPI delegate.
Benchmarking failed.
"""

# TF Lite (README references v2.8.0) under QEMU riscv64, mobilenet_v1 with `--enable_op_profiling=true`: a one-run
# warm-up printed as `count=1 curr=...`, scientific notation, and op-profiler `Timings (microseconds): count=...`
# lines after the summary. Source: github.com/NobuoTsukamoto/meta-tensorflow-lite, doc/tensorflow-lite-benchmark.md
# (commit 0f6dac40). Two pieces of the same output; the operator tables between them are left out.
TF28_RISCV = """\
STARTING!
Log parameter values verbosely: [0]
Num threads: [4]
Graph: [./mobilenet_v1_1.0_224.tflite]
Enable op profiling: [1]
#threads used for CPU inference: [4]
Loaded model ./mobilenet_v1_1.0_224.tflite
The input model file size (MB): 16.9008
Initialized session in 17.187ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=1 curr=3512391

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=50 first=2990275 curr=2913402 min=2727568 max=3189954 avg=2.95034e+06 std=109798

Inference timings in us: Init: 17187, First inference: 3512391, Warmup (avg): 3.51239e+06, Inference (avg): 2.95034e+06
Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
Memory footprint delta from the start of the tool (MB): init=4.21094 overall=46.0859
Profiling Info for Benchmark Initialization:
============================== Run Order ==============================
\t             [node type]\t          [start]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t         AllocateTensors\t            0.000\t    1.356\t    1.356\t100.000%\t100.000%\t     0.000\t        1\tAllocateTensors/0

============================== Top by Computation Time ==============================
\t             [node type]\t          [start]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t         AllocateTensors\t            0.000\t    1.356\t    1.356\t100.000%\t100.000%\t     0.000\t        1\tAllocateTensors/0

Number of nodes executed: 1
============================== Summary by node type ==============================
\t             [Node type]\t  [count]\t  [avg ms]\t    [avg %]\t    [cdf %]\t  [mem KB]\t[times called]
\t         AllocateTensors\t        1\t     1.356\t   100.000%\t   100.000%\t     0.000\t        1

Timings (microseconds): count=1 curr=1356
Memory (bytes): count=0
1 nodes observed
""" + """\
Number of nodes executed: 31
============================== Summary by node type ==============================
\t             [Node type]\t  [count]\t  [avg ms]\t    [avg %]\t    [cdf %]\t  [mem KB]\t[times called]
\t                 CONV_2D\t       15\t  2651.853\t    89.897%\t    89.897%\t     0.000\t       15
\t       DEPTHWISE_CONV_2D\t       13\t   296.919\t    10.065%\t    99.962%\t     0.000\t       13
\t         AVERAGE_POOL_2D\t        1\t     0.869\t     0.029%\t    99.992%\t     0.000\t        1
\t                 SOFTMAX\t        1\t     0.232\t     0.008%\t    99.999%\t     0.000\t        1
\t                 SQUEEZE\t        1\t     0.016\t     0.001%\t   100.000%\t     0.000\t        1

Timings (microseconds): count=50 first=2989660 curr=2912978 min=2727203 max=3189476 avg=2.9499e+06 std=109770
Memory (bytes): count=0
31 nodes observed
"""

# TF Lite v2.20.0 (TI Processor SDK, AM62x), ssd_mobilenet_v2 on 4 CPU threads without XNNPACK: `INFO: ` prefixes
# and the `p5= median= p95=` percentiles. Source: github.com/TexasInstruments/processor-sdk-doc,
# source/linux/Foundational_Components/Machine_Learning/tflite.rst (console block, reST indentation kept).
TF220_TI_CPU = """\
   root@am62xx-evm:~# /opt/tensorflow-lite/tools/benchmark_model --graph=/usr/share/oob-demo-assets/models/ssd_mobilenet_v2_coco.tflite --num_threads=4 --use_xnnpack=false
   INFO: STARTING!
   INFO: Log parameter values verbosely: [0]
   INFO: Graph: [/usr/share/oob-demo-assets/models/ssd_mobilenet_v2_coco.tflite]
   INFO: Signature to run: []
   INFO: Use xnnpack: [0]
   INFO: Loaded model /usr/share/oob-demo-assets/models/ssd_mobilenet_v2_coco.tflite
   INFO: The input model file size (MB): 67.3128
   INFO: Initialized session in 5.579ms.
   INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
   INFO: count=1 curr=1357602 p5=1357602 median=1357602 p95=1357602

   INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
   INFO: count=50 first=1249964 curr=1240143 min=1238588 max=1252566 avg=1.24027e+06 std=2565 p5=1238753 median=1239807 p95=1247415

   INFO: Inference timings in us: Init: 5579, First inference: 1357602, Warmup (avg): 1.3576e+06, Inference (avg): 1.24027e+06
   INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
   INFO: Memory footprint delta from the start of the tool (MB): init=6.36328 overall=109.832
"""

# Same source, the XNNPACK run.
TF220_TI_XNNPACK = """\
   root@am62xx-evm:~# /opt/tensorflow-lite/tools/benchmark_model --graph=/usr/share/oob-demo-assets/models/ssd_mobilenet_v2_coco.tflite --num_threads=4 --use_xnnpack=true
   INFO: STARTING!
   INFO: Log parameter values verbosely: [0]
   INFO: Graph: [/usr/share/oob-demo-assets/models/ssd_mobilenet_v2_coco.tflite]
   INFO: Signature to run: []
   INFO: Use xnnpack: [1]
   INFO: Loaded model /usr/share/oob-demo-assets/models/ssd_mobilenet_v2_coco.tflite
   INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
   INFO: XNNPACK delegate created.
   INFO: Explicitly applied XNNPACK delegate, and the model graph will be partially executed by the delegate w/ 1 delegate kernels.
   INFO: The input model file size (MB): 67.3128
   INFO: Initialized session in 614.333ms.
   INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
   INFO: count=1 curr=905463 p5=905463 median=905463 p95=905463
   INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
   INFO: count=50 first=900416 curr=898333 min=898007 max=906121 avg=899641 std=1549 p5=898333 median=899281 p95=904305
   INFO: Inference timings in us: Init: 614333, First inference: 905463, Warmup (avg): 905463, Inference (avg): 899641
   INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
   INFO: Memory footprint delta from the start of the tool (MB): init=146.363 overall=150.141
"""

# ChromeOS tast.mlbenchmark.TFLite, `benchmark_model --min_secs=60 --report_peak_memory_footprint=true` on the CPU:
# the periodic peak-memory line. Source: github.com/olvaffe/olv-notes, cros/tast.md ("selected test outputs",
# each line as quoted there, in order).
TAST_CPU_PEAK = """\
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
VERBOSE: Replacing 58 out of 58 node(s) with delegate (TfLiteXNNPackDelegate) node, yielding 1 partitions for the whole graph.
INFO: Initialized session in 3.337ms.
INFO: count=9 first=81913 curr=55502 min=55502 max=81913 avg=58984.7 std=8115
INFO: count=1061 first=56576 curr=56299 min=54669 max=60236 avg=56265.8 std=982
INFO: Inference timings in us: Init: 3337, First inference: 81913, Warmup (avg): 58984.7, Inference (avg): 56265.8
INFO: Overall peak memory footprint (MB) via periodic monitoring: 93.2383
"""

# LiteRT 2.1.5 CompiledModel benchmark_model (`--use_gpu=1 --num_runs=10`), its "BENCHMARK RESULTS" block.
# Source: https://github.com/mlcommons/mobile_app_open/issues/1134 (comment of 2026-07-28; the log above the
# block was elided there as "...").
LITERT_COMPILED_MODEL = """\
========== BENCHMARK RESULTS ==========
INFO: [benchmark_litert_model.h:92] Signature name:       prefill_1024
INFO: [benchmark_litert_model.h:94] Model initialization: 23744.73 ms
INFO: [benchmark_litert_model.h:96] Warmup (first):       7441.04 ms
INFO: [benchmark_litert_model.h:98] Warmup (avg):         7441.04 ms (1 runs)
INFO: [benchmark_litert_model.h:100] Inference (avg):      7430.20 ms (10 runs)
INFO: [benchmark_litert_model.h:104] Inference (min):      7416.40 ms
INFO: [benchmark_litert_model.h:106] Inference (max):      7448.86 ms
INFO: [benchmark_litert_model.h:108] Inference (std):      9.92
INFO: [benchmark_litert_model.h:115] Throughput:           27.46 MB/s
INFO: [benchmark_litert_model.h:124] 
Memory Usage:
INFO: [benchmark_litert_model.h:126] Init footprint:       6391.74 MB
INFO: [benchmark_litert_model.h:128] Overall footprint:    6391.74 MB
INFO: [benchmark_litert_model.h:135] Peak memory usage not available. (peak_mem_mb <= 0)
"""

# TF 1.x (contrib) README, op profiling on: the only `count=` line before the summary is the profiler's.
# Source: github.com/tensorflow/tensorflow, tensorflow/contrib/lite/tools/benchmark/README.md (commit 2382255c),
# the end of its sample output.
TF1_CONTRIB_PROFILED = """\
Number of nodes executed: 31
============================== Summary by node type ==============================
\t             [Node type]\t  [count]\t  [avg ms]\t    [avg %]\t    [cdf %]\t  [mem KB]\t[times called]
\t                 CONV_2D\t       15\t     1.406\t    89.270%\t    89.270%\t     0.000\t        0
\t       DEPTHWISE_CONV_2D\t       13\t     0.169\t    10.730%\t   100.000%\t     0.000\t        0
\t                 SOFTMAX\t        1\t     0.000\t     0.000%\t   100.000%\t     0.000\t        0
\t                 RESHAPE\t        1\t     0.000\t     0.000%\t   100.000%\t     0.000\t        0
\t         AVERAGE_POOL_2D\t        1\t     0.000\t     0.000%\t   100.000%\t     0.000\t        0

Timings (microseconds): count=50 first=79449 curr=81350 min=77385 max=88213 avg=79732 std=1929
Memory (bytes): count=0
31 nodes observed


Average inference timings in us: Warmup: 83235, Init: 38467, no stats: 79760.9
"""

# The same sample as the LiteRT README still shows it, with "Inference:" for "no stats:".
# Source: github.com/google-ai-edge/LiteRT, tflite/tools/benchmark/README.md ("Profiling model operators").
TF1_LITERT_README_LINE = "Average inference timings in us: Warmup: 83235, Init: 38467, Inference: 79760.9\n"


def test_tf24_android_output() -> None:
    r = parse_benchmark_output(TF24_ANDROID)
    assert r.format == "tflite"
    assert r.init_ms == pytest.approx(16.242)
    assert r.first_ms == pytest.approx(360.262)
    assert r.warmup_avg_ms == pytest.approx(304.586)
    assert r.inference_avg_ms == pytest.approx(249.684)
    assert r.inference_count == 50
    assert r.inference_min_ms == pytest.approx(247.067)
    assert r.inference_max_ms == pytest.approx(254.474)
    assert r.inference_std_ms == pytest.approx(1.442)
    assert r.inference_median_ms is None and r.inference_p5_ms is None  # this build prints no percentiles
    assert r.warmup_count is None  # the excerpt holds the timed-run line only
    assert (r.memory_init_mb, r.memory_overall_mb, r.peak_memory_mb) == (4.92969, 138.809, None)


def test_tf24_android_int8_fractional_average() -> None:
    r = parse_benchmark_output(TF24_ANDROID_INT8)
    assert r.inference_avg_ms == pytest.approx(95.7883)
    assert r.inference_std_ms == pytest.approx(1.284)
    assert r.init_ms == pytest.approx(1.779)
    assert r.memory_overall_mb == pytest.approx(36.9883)


def test_profiled_riscv_output_uses_the_timed_runs_not_the_profiler() -> None:
    r = parse_benchmark_output(TF28_RISCV)
    assert r.init_ms == pytest.approx(17.187)
    assert r.first_ms == pytest.approx(3512.391)
    assert r.warmup_avg_ms == pytest.approx(3512.39)
    assert r.inference_avg_ms == pytest.approx(2950.34)
    assert r.inference_count == 50 and r.warmup_count == 1
    assert r.inference_min_ms == pytest.approx(2727.568)  # not the profiler's 2727.203
    assert r.inference_max_ms == pytest.approx(3189.954)
    assert r.inference_std_ms == pytest.approx(109.798)
    assert (r.memory_init_mb, r.memory_overall_mb) == (4.21094, 46.0859)
    assert r.model_size_mb == pytest.approx(16.9008)


@pytest.mark.parametrize(
    "text, avg, median, p5, p95, std, init, mem",
    [
        (TF220_TI_CPU, 1240.27, 1239.807, 1238.753, 1247.415, 2.565, 5.579, (6.36328, 109.832)),
        (TF220_TI_XNNPACK, 899.641, 899.281, 898.333, 904.305, 1.549, 614.333, (146.363, 150.141)),
    ],
    ids=["cpu", "xnnpack"],
)
def test_tf220_output_with_percentiles(text: str, avg: float, median: float, p5: float, p95: float, std: float, init: float, mem: tuple) -> None:
    r = parse_benchmark_output(text)
    assert r.format == "tflite"
    assert r.inference_avg_ms == pytest.approx(avg)
    assert r.inference_median_ms == pytest.approx(median)
    assert r.inference_p5_ms == pytest.approx(p5)
    assert r.inference_p95_ms == pytest.approx(p95)
    assert r.inference_std_ms == pytest.approx(std)
    assert r.inference_count == 50 and r.warmup_count == 1
    assert r.init_ms == pytest.approx(init)
    assert (r.memory_init_mb, r.memory_overall_mb) == mem
    assert r.model_size_mb == pytest.approx(67.3128)


def test_tf220_warmup_line_with_one_run_is_read_as_all_same() -> None:
    stats = parse_run_stats("   INFO: count=1 curr=1357602 p5=1357602 median=1357602 p95=1357602")
    assert stats is not None
    assert stats.count == 1 and stats.min == stats.max == stats.avg == 1357602 and stats.std == 0
    assert parse_run_stats("Timings (microseconds): count=50 first=79449 curr=81350 min=77385 max=88213 avg=79732 std=1929") is None
    assert parse_run_stats("Memory (bytes): count=0") is None


def test_periodic_peak_memory_line() -> None:
    r = parse_benchmark_output(TAST_CPU_PEAK)
    assert r.peak_memory_mb == pytest.approx(93.2383)
    assert r.inference_count == 1061 and r.warmup_count == 9
    assert r.inference_avg_ms == pytest.approx(56.2658)
    assert r.inference_std_ms == pytest.approx(0.982)
    assert r.init_ms == pytest.approx(3.337) and r.first_ms == pytest.approx(81.913)
    assert r.memory_init_mb is None and r.memory_overall_mb is None
    cols = to_latency_columns(r)
    assert cols["peak_memory_bytes"] == round(93.2383 * 2**20)


def test_litert_compiled_model_results_block() -> None:
    r = parse_benchmark_output(LITERT_COMPILED_MODEL)
    assert r.format == "litert"
    assert r.init_ms == pytest.approx(23744.73)
    assert r.first_ms == pytest.approx(7441.04)
    assert r.warmup_avg_ms == pytest.approx(7441.04) and r.warmup_count == 1
    assert r.inference_avg_ms == pytest.approx(7430.20)
    assert r.inference_count == 10
    assert (r.inference_min_ms, r.inference_max_ms, r.inference_std_ms) == (7416.40, 7448.86, 9.92)
    assert (r.memory_init_mb, r.memory_overall_mb) == (6391.74, 6391.74)
    assert r.peak_memory_mb is None  # "Peak memory usage not available"


def test_tf1_summary_ignores_the_profiler_count_line() -> None:
    r = parse_benchmark_output(TF1_CONTRIB_PROFILED)
    assert r.format == "tflite-v1"
    assert r.inference_avg_ms == pytest.approx(79.7609)
    assert r.init_ms == pytest.approx(38.467)
    assert r.warmup_avg_ms == pytest.approx(83.235)
    assert r.first_ms is None
    assert r.inference_count is None and r.inference_std_ms is None and r.inference_min_ms is None
    assert parse_benchmark_output(TF1_LITERT_README_LINE).inference_avg_ms == pytest.approx(79.7609)


def test_count_line_that_does_not_match_the_summary_is_not_used() -> None:
    # The TF 2.20 output with its timed-run line removed: the warm-up line before the summary must not be
    # mistaken for the timed runs.
    text = "\n".join(ln for ln in TF220_TI_CPU.splitlines() if "count=50" not in ln)
    r = parse_benchmark_output(text)
    assert r.inference_avg_ms == pytest.approx(1240.27)
    assert r.inference_count is None and r.inference_std_ms is None and r.inference_median_ms is None


def test_failed_run_raises_with_the_last_lines() -> None:
    with pytest.raises(ValueError) as info:
        parse_benchmark_output(TF24_NNAPI_FAILURE)
    message = str(info.value)
    assert "no inference timings" in message
    assert "Failed to apply NNAPI delegate." in message and "Benchmarking failed." in message
    assert "STARTING!" not in message  # only the tail is quoted


def test_empty_output_raises() -> None:
    with pytest.raises(ValueError, match=r"no inference timings[\s\S]*\(no output\)"):
        parse_benchmark_output("")


def test_latency_columns_from_a_percentile_build() -> None:
    cols = to_latency_columns(parse_benchmark_output(TF220_TI_CPU))
    assert cols["mean_ms"] == pytest.approx(1240.27)
    assert cols["std_ms"] == pytest.approx(2.565 * math.sqrt(50 / 49))  # population -> sample std
    assert cols["min_ms"] == pytest.approx(1238.588) and cols["max_ms"] == pytest.approx(1252.566)
    assert cols["p50_ms"] == pytest.approx(1239.807)
    assert cols["n"] == 50
    assert cols["init_ms"] == pytest.approx(5.579) and cols["first_ms"] == pytest.approx(1357.602)
    assert cols["peak_memory_bytes"] is None
    assert "p90_ms" not in cols and "p99_ms" not in cols


def test_latency_columns_mark_what_an_old_build_lacks() -> None:
    cols = to_latency_columns(parse_benchmark_output(TF1_CONTRIB_PROFILED))
    assert cols["mean_ms"] == pytest.approx(79.7609)
    assert all(math.isnan(cols[k]) for k in ("std_ms", "min_ms", "max_ms", "p50_ms", "first_ms"))
    assert cols["n"] is None and cols["peak_memory_bytes"] is None
    assert math.isnan(to_latency_columns(parse_benchmark_output(TF24_ANDROID))["p50_ms"])


def test_result_is_frozen() -> None:
    r = parse_benchmark_output(TF24_ANDROID)
    assert isinstance(r, BenchmarkModelResult)
    with pytest.raises(AttributeError):
        r.init_ms = 0.0  # type: ignore[misc]


def test_benchmark_argv_uses_the_tool_flag_names() -> None:
    argv = benchmark_argv("/data/local/tmp/benchmark_model", "/data/local/tmp/my model.tflite", 4, 50, 5)
    assert argv == [
        "/data/local/tmp/benchmark_model",
        "--graph=/data/local/tmp/my model.tflite",  # one element: quoting is the transport's job
        "--num_threads=4",
        "--num_runs=50",
        "--warmup_runs=5",
        "--use_xnnpack=true",
    ]
    assert benchmark_argv("bm", "m.tflite", 1, 10, 0, use_xnnpack=False)[-1] == "--use_xnnpack=false"
    no_flag = benchmark_argv("bm", "m.tflite", None, 10, 1, use_xnnpack=None, extra=("--use_gpu=true",))
    assert no_flag == ["bm", "--graph=m.tflite", "--num_runs=10", "--warmup_runs=1", "--use_gpu=true"]


@pytest.mark.parametrize("threads, runs, warmup", [(0, 10, 1), (2, 0, 1), (2, 10, -1)])
def test_benchmark_argv_rejects_bad_counts(threads: int, runs: int, warmup: int) -> None:
    with pytest.raises(ValueError):
        benchmark_argv("bm", "m.tflite", threads, runs, warmup)
