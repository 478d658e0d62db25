"""Shared fixtures: one trained tinycnn (the quickstart recipe) and its fp32 / int16 / int8 ONNX artifacts,
built once per session in a private cache so tests never touch the user's cache."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("edgecam-cache")
    os.environ["EDGECAM_CACHE_DIR"] = str(path)
    return path


@dataclass
class Trained:
    model: Any
    layer: str
    meta: dict[str, Any]
    data: Any
    artifacts: dict[str, Path]
    cfg: Any


@pytest.fixture(scope="session")
def quick_config() -> Any:
    from edgecam.config import RunConfig, ModelSpec

    return RunConfig(models=(ModelSpec("tinycnn"),))


@pytest.fixture(scope="session")
def data(quick_config: Any) -> Any:
    from edgecam.data.spec import load_data

    return load_data(quick_config.data)


@pytest.fixture(scope="session")
def trained_tinycnn(session_cache: Path, quick_config: Any, data: Any) -> Trained:
    """tinycnn trained with the quickstart recipe, exported at fp32 / int16 / int8 (QAT)."""
    import torch

    from edgecam.bench.deploy import build_artifact
    from edgecam.bench.prepare import prepare_model
    from edgecam.exporters.onnx import OnnxExporter

    torch.set_flush_denormal(True)
    mspec = quick_config.models[0]
    model, layer, meta = prepare_model(mspec, quick_config, data)
    exporter = OnnxExporter()
    arts = {p: build_artifact(model, mspec, layer, meta["sha256"], "onnx", p, quick_config, data, exporter)[0] for p in ("fp32", "int16", "int8")}
    return Trained(model, layer, meta, data, arts, quick_config)


def ort_outputs(artifact_dir: Path, x: np.ndarray, threads: int = 2) -> dict[str, np.ndarray]:
    """Run an artifact in ONNX Runtime in-process (tests only; benchmarks go through the agent)."""
    from edgecam.exporters.base import Artifact
    from edgecam.runtimes.onnxruntime import OnnxRuntime

    art = Artifact.load(artifact_dir)
    with OnnxRuntime(str(art.path), threads=threads) as rt:
        return rt.run({"input": x})


@pytest.fixture(scope="session")
def tflite_tinycnn(trained_tinycnn: Trained) -> dict[str, Path]:
    """The session's tinycnn as .tflite at fp32 / int16 (16x8) / int8 (cached like the ONNX artifacts)."""
    from edgecam.bench.deploy import build_artifact
    from edgecam.exporters.tflite import TfliteExporter

    t = trained_tinycnn
    exporter = TfliteExporter()
    return {p: build_artifact(t.model, t.cfg.models[0], t.layer, t.meta["sha256"], "tflite", p, t.cfg, t.data, exporter)[0] for p in ("fp32", "int16", "int8")}


def litert_outputs(artifact_dir: Path, x: np.ndarray, **options: Any) -> dict[str, np.ndarray]:
    """Run a .tflite artifact in LiteRT in-process (tests only)."""
    from edgecam.exporters.base import Artifact
    from edgecam.runtimes.litert import LiteRtRuntime

    art = Artifact.load(artifact_dir)
    with LiteRtRuntime(str(art.path), threads=2, **options) as rt:
        return rt.run({"input": x})


def edgecam(args: list[str], cache: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """`edgecam ARGS` as a user runs it (a fresh process, `python -m edgecam.cli`) with the tests' cache."""
    env = {**os.environ, "EDGECAM_CACHE_DIR": str(cache)}
    return subprocess.run([sys.executable, "-m", "edgecam.cli", *args], capture_output=True, text=True, env=env, timeout=timeout)
