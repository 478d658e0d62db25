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


def test_pipeline_shares_come_from_the_stage_tags() -> None:
    """Item 4's time shares are the manifest's exclusive stage-tag seconds, grouped into its categories."""
    _suite()
    import pipeline

    share = pipeline.shares({"device": 5.0, "cam": 2.0, "metrics": 1.0, "io": 0.5, "setup": 1.0, "other": 0.25, "untagged": 0.25})
    assert share == pytest.approx({"runtime": 0.5, "CAM": 0.2, "metrics": 0.1, "I/O": 0.05, "setup": 0.1, "other": 0.05})
    assert pipeline.shares({"device": 1.0, "something-new": 1.0})["other"] == pytest.approx(0.5)
