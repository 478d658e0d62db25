"""The fault runtime, in process, for the faults that do not end the process (the others are exercised
through the agent by tests/integration/test_faults.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tiny_artifacts import expected, tiny_onnx

from edgecam.runtimes.fault import FAULTS, FaultRuntime

pytest.importorskip("onnxruntime")

X = np.array([[0.5, -1.0, 2.0, -3.0]], dtype=np.float32)


def test_raise_and_nan_faults(tmp_path: Path) -> None:
    path = str(tiny_onnx(tmp_path))
    with FaultRuntime(path, fault="raise") as rt, pytest.raises(RuntimeError, match="injected failure"):
        rt.run({"input": X})
    with FaultRuntime(path, fault="nan") as rt:
        out = rt.run({"input": X})
    assert sorted(out) == ["features", "logits"] and all(np.isnan(v).all() and v.shape == (1, 4) for v in out.values())


def test_fault_fires_only_for_the_listed_precisions(tmp_path: Path) -> None:
    path = str(tiny_onnx(tmp_path, precision_requested="fp32"))
    with FaultRuntime(path, fault="raise", fault_precisions=["int8"]) as rt:
        assert rt.fault is None
        np.testing.assert_array_equal(rt.run({"input": X})["logits"], expected(X)["logits"])
    with FaultRuntime(path, fault="raise", fault_precisions=["fp32", "int8"]) as rt:
        assert rt.fault == "raise"


def test_unknown_fault_lists_the_kinds(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="option fault must be one of %s, got 'meltdown'" % ", ".join(FAULTS)):
        FaultRuntime(str(tiny_onnx(tmp_path)), fault="meltdown")
