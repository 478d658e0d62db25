"""The null runtime: zeros of the manifest's output shapes for any artifact, without reading the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tiny_artifacts import write_manifest

from edgecam.runtimes.null import NullRuntime


def test_returns_zeros_of_the_output_shapes_for_each_sample(tmp_path: Path) -> None:
    write_manifest(tmp_path, "model.bin", output_shapes={"logits": [1, 10], "features": [1, 3, 2, 2]})
    with NullRuntime(str(tmp_path / "model.bin")) as rt:  # the model file need not exist
        out = rt.run({"input": np.ones((5, 3, 8, 8), dtype=np.float32)})
        assert rt.describe() == {"runtime": "null", "version": "n/a", "threads": None}
    assert sorted(out) == ["features", "logits"]
    assert out["logits"].shape == (5, 10) and out["features"].shape == (5, 3, 2, 2)
    assert out["logits"].dtype == np.float32 and not out["logits"].any() and not out["features"].any()


def test_needs_a_manifest_with_output_shapes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no manifest.json with output_shapes"):
        NullRuntime(str(tmp_path / "model.onnx"))
    write_manifest(tmp_path, "model.onnx")
    with pytest.raises(ValueError, match="no manifest.json with output_shapes"):
        NullRuntime(str(tmp_path / "model.onnx"))
