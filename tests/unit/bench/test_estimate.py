"""The work estimate printed before the explain stage: device forwards and bytes per method, from the
variant's declared feature shape and the timing pass's p50."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecam.bench.estimate import format_estimate, work_estimate
from edgecam.bench.variant import Variant
from edgecam.config import ConfigError, ExplainSpec


def _variant(samples: list[float]) -> Variant:
    v = Variant("effnet", "onnx", "int8", "onnxruntime", Path("."), {"output_shapes": {"features": ["batch", 1280, 7, 7]}})
    v.result = {"samples_s": samples, "batch_size": 1}
    return v


def test_scorecam_costs_a_forward_per_channel_and_ships_only_the_small_maps() -> None:
    ex = ExplainSpec(methods=("gradcampp", "scorecam"), faithfulness_images=10, faithfulness_steps=16)
    rows = {r["stage"]: r for r in work_estimate([_variant([0.01, 0.02, 0.03])], ex, 100, (3, 224, 224))}
    assert set(rows) == {"outputs", "scorecam", "faithfulness"}  # Grad-CAM++ needs no extra forwards
    assert rows["scorecam"]["device_forwards"] == 100 * 1280
    assert rows["scorecam"]["bytes_pushed"] == 100 * (3 * 224 * 224 * 4 + 1280 * 7 * 7 * 4)  # never 1280 x 224 x 224
    assert rows["scorecam"]["seconds_at_p50"] == pytest.approx(100 * 1280 * 0.02)
    assert rows["faithfulness"]["device_forwards"] == 2 * 10 * 17
    capped = {r["stage"]: r for r in work_estimate([_variant([0.02])], ExplainSpec(methods=("scorecam",), method_options={"scorecam_top_k": 64}), 100, (3, 224, 224))}
    assert capped["scorecam"]["device_forwards"] == 100 * 64
    text = format_estimate(list(rows.values()))
    assert "effnet-onnx-int8-onnxruntime" in text and "scorecam 128,000" in text


def test_a_failed_variant_has_no_estimate_and_a_bad_cap_is_refused() -> None:
    v = _variant([])
    v.error = "JobFailed: boom"
    assert work_estimate([v], ExplainSpec(), 10, (3, 64, 64)) == []
    with pytest.raises(ConfigError, match="explain.scorecam_top_k"):
        ExplainSpec(method_options={"scorecam_top_k": -1})
