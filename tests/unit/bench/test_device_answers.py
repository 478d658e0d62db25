"""What a broken or hostile device answers is checked before the host uses it: timing and memory results,
session outputs (shape, dtype, row count) and probe facts; a bad answer fails its job, never the run."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from edgecam.bench.measure import check_memory, check_timing
from edgecam.devices.base import checked_facts
from edgecam.devices.errors import JobFailed
from edgecam.devices.session import DeviceSession


@pytest.mark.parametrize("result", [
    {"samples_s": "fast"}, {"samples_s": [0.1, 0.2]}, {"samples_s": [0.1, math.nan, 0.1]}, {"samples_s": [0.1, 1e300, 0.1]},
    {"samples_s": [0.1, -1.0, 0.1]}, {"samples_s": [0.1, True, 0.1]}, {"samples_s": [0.1] * 3, "init_s": "<b>"}, [], None,
])
def test_unusable_timing_answers_fail_the_job(result: Any) -> None:
    with pytest.raises(JobFailed, match="timing answer is unusable"):
        check_timing(result, 3)


def test_a_good_timing_and_memory_answer_pass() -> None:
    check_timing({"samples_s": [0.001, 0.002, 0.0015], "init_s": 0.1, "first_s": 0.01}, 3)
    check_memory({"peak_rss_bytes": 123456, "rss_before_load_bytes": None, "note": "x"})
    for bad in ({"peak_rss_bytes": -1}, {"peak_rss_bytes": 2**60}, {"peak_rss_bytes": 1.5}, "x"):
        with pytest.raises(JobFailed):
            check_memory(bad)


class _Answers:
    """A persistent session that answers what it is told to (a hostile board's agent)."""

    def __init__(self, answers: list[dict[str, Any]]) -> None:
        self.answers = answers

    def forward(self, x: np.ndarray, outputs: Any) -> dict[str, Any]:
        return self.answers.pop(0)


@pytest.mark.parametrize(("second", "match"), [
    ({"logits": np.zeros((2, 11), np.float32)}, r"logits of shape \(11,\) per input, expected \(10,\)"),
    ({"logits": np.zeros((3, 10), np.float32)}, r"3 rows of logits for 2 inputs"),
    ({"logits": np.array([["a"] * 10] * 2)}, r"logits as ndarray <U1, expected a numeric array"),
    ({"logits": "<script>"}, r"logits as str"),
    ({"features": np.zeros((2, 10))}, r"answered \['features'\], expected \['logits'\]"),
])
def test_session_answers_of_another_shape_or_type_fail_the_job(second: dict[str, Any], match: str) -> None:
    s = DeviceSession(None, "art", {})
    s._session = _Answers([{"logits": np.zeros((2, 10), np.float32)}, second])  # type: ignore[assignment]
    x = np.zeros((2, 3, 4, 4), np.float32)
    assert s.forward(x)["logits"].shape == (2, 10)
    with pytest.raises(JobFailed, match=match):
        s.forward(x)


def test_nan_answers_pass_the_session_to_be_flagged_in_the_rows() -> None:
    s = DeviceSession(None, "art", {})
    s._session = _Answers([{"logits": np.full((2, 10), np.nan, np.float32)}])  # type: ignore[assignment]
    assert np.isnan(s.forward(np.zeros((2, 3, 4, 4), np.float32))["logits"]).all()  # rows say output_finite = False


def test_probe_facts_keep_known_typed_fields_and_the_inventorys_identity() -> None:
    facts = checked_facts({"name": "spoofed", "kind": "ssh", "cores": "<script>alert(1)</script>", "arch": "aarch64", "ram_bytes": 10**30,
                           "emulated": "yes", "runtimes": {"onnxruntime": "1.32.0", "<b>": 5}, "python": "x" * 1000, "os": "Debian", "extra": 1})
    assert facts["arch"] == "aarch64" and facts["os"] == "Debian"
    assert not {"name", "kind", "cores", "ram_bytes", "emulated", "runtimes", "python", "extra"} & set(facts)
    assert sorted(facts["probe_rejected"]) == sorted(["name", "kind", "cores", "ram_bytes", "emulated", "runtimes", "python", "extra"])
    with pytest.raises(Exception, match="not a JSON object"):
        checked_facts(["x"])
