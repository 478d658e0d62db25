"""The variants a config plans (`config.planned_variants`) and the refusal of a run that would measure nothing
(`config.check_plan`, issue 36: `formats = ["tensorrt"]` with only ONNX Runtime exported for 49 s, then ran nothing)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from edgecam.config import ExplainSpec, ModelSpec, RunConfig, RuntimeSpec, check_plan, planned_variants
from edgecam.errors import ConfigError


def _cfg(formats: tuple[str, ...], *runtimes: str) -> RunConfig:
    cfg = RunConfig(models=(ModelSpec("tinycnn"),), runtimes=tuple(RuntimeSpec(r) for r in runtimes))
    return cfg.replace(export=dataclasses.replace(cfg.export, formats=formats))


def test_the_plan_pairs_each_format_with_the_runtimes_that_load_it() -> None:
    assert planned_variants(_cfg(("onnx", "tflite"), "onnxruntime", "litert")) == {"tinycnn": [("onnx", "onnxruntime"), ("tflite", "litert")]}
    assert planned_variants(_cfg(("tflite",), "null")) == {"tinycnn": [("tflite", "null")]}  # the null runtime takes any format
    assert planned_variants(_cfg(("onnx", "tflite"), "onnxruntime", "litert"), ("litert",)) == {"tinycnn": [("tflite", "litert")]}
    check_plan(_cfg(("onnx", "tflite"), "onnxruntime", "litert"))  # something to measure: no error


@pytest.mark.parametrize("formats, runtimes", [(("tensorrt",), ("onnxruntime",)), (("tflite",), ("onnxruntime",)), (("onnx",), ("litert", "tensorrt"))])
def test_a_config_whose_formats_no_runtime_runs_is_refused_naming_both(formats: tuple[str, ...], runtimes: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as err:
        check_plan(_cfg(formats, *runtimes))
    msg = str(err.value)
    assert msg.startswith("nothing to measure for model 'tinycnn'") and f"are {', '.join(formats)}" in msg and f"({', '.join(runtimes)})" in msg
    assert "onnxruntime runs onnx" in msg and "litert runs tflite" in msg and "tensorrt runs tensorrt" in msg and "null runs any format" in msg


def test_the_device_inventory_can_leave_nothing_to_run() -> None:
    with pytest.raises(ConfigError, match=r"device 'pi' has only litert \(its inventory entry's runtimes\)"):
        check_plan(_cfg(("onnx",), "onnxruntime", "litert"), ("litert",), "pi")


def test_a_model_given_by_tflite_files_needs_a_runtime_for_them(tmp_path: Path) -> None:
    (tmp_path / "m.tflite").write_bytes(b"")
    cfg = RunConfig(models=(ModelSpec("m", files=(str(tmp_path / "m.tflite"),)),), runtimes=(RuntimeSpec("onnxruntime"),),
                    explain=ExplainSpec(methods=("eigencam",)))
    with pytest.raises(ConfigError, match=r"nothing to measure for model 'm': its formats \(its files\) are tflite and the runtimes \(onnxruntime\)"):
        check_plan(cfg)
    assert planned_variants(cfg.replace(runtimes=(RuntimeSpec("litert"),))) == {"m": [("tflite", "litert")]}
