"""Smoke test of the performance suite (benchmarks/suite.py --quick): every item runs at a tiny size, on the
session's trained tinycnn, and writes its table, so `make bench` cannot rot. The numbers mean nothing here."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

# a few minutes on 2 cores: out of `make test` (`make test-slow` runs it; `make bench` runs the suite in full)
pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _suite() -> Any:
    sys.path.insert(0, str(BENCH))
    import suite

    return suite


def test_quick_suite_writes_every_item(trained_tinycnn: Any, tmp_path: Path) -> None:
    suite = _suite()
    out = tmp_path / "results.md"
    assert suite.main(["--quick", "--items", "1", "2", "3", "4", "6", "--out", str(out)]) == 0
    text = out.read_text()
    for needle in ("harness p50 / bare session.run p50", "null runtime p50", "ORT profiler model_run", "mirror Grad-CAM++", "surrogate Score-CAM",
                   "surrogate Eigen-CAM", "pipeline share of time in metrics + I/O", "export s per artifact, tinycnn onnx", "| # | measure |"):
        assert needle in text, needle


def test_scaling_measures_a_fresh_run(trained_tinycnn: Any, tmp_path: Path) -> None:
    """Item 5's measurement: one `edgecam run` in a fresh process, its wall time and its own peak RSS."""
    _suite()
    import explain_memory

    cfg = explain_memory.write_config(trained_tinycnn.model, tmp_path, explain_memory.TINY_CONFIG)
    assert "weights = " in cfg.read_text()
    run = explain_memory.measure(cfg, 2, tmp_path / "run")
    assert run.wall > 0 and run.cpu > 0 and 50 < run.peak_mb < 64_000
    assert (tmp_path / "run" / "results.parquet").is_file()


def test_classify_attributes_nested_stages() -> None:
    """The pipeline profiler charges a sample to the innermost edgecam frame's category."""
    _suite()
    import pipeline

    class Code:
        def __init__(self, path: str, name: str) -> None:
            self.co_filename, self.co_name, self.co_qualname = path, name, name

    class Frame:
        def __init__(self, path: str, name: str, back: Any = None) -> None:
            self.f_code, self.f_back = Code(path, name), back

    run = Frame("/x/edgecam/bench/sweep.py", "run")
    cams = Frame("/x/edgecam/explain/cams.py", "ScoreCam.__call__", run)
    device = Frame("/x/edgecam/bench/explain.py", "DeviceSession.masked", cams)
    assert pipeline.classify(Frame("/x/subprocess.py", "wait", device))[0] == "runtime"
    assert pipeline.classify(Frame("/x/numpy/core/fromnumeric.py", "sum", cams))[0] == "CAM"
    forward = Frame("/x/edgecam/models/__init__.py", "TinyCNN.forward", cams)  # a model's forward counts for its caller
    assert pipeline.classify(Frame("/x/torch/nn/modules/conv.py", "_conv_forward", forward))[0] == "CAM"
    write = Frame("/x/edgecam/bench/sweep.py", "_write_parquet", run)
    assert pipeline.classify(Frame("/x/pyarrow/parquet/core.py", "write_table", write))[0] == "I/O"
    assert pipeline.classify(Frame("/x/edgecam/explain/metrics.py", "cc", Frame("/x/edgecam/bench/explain.py", "_rows", run)))[0] == "metrics"
    assert pipeline.classify(None)[0] == "other"
