"""The board-side TensorRT runtime's host-checkable parts (`runtimes/tensorrt.py`): registry entry, cache
keys, and a clear refusal where TensorRT is absent. Running engines: tests/hardware/test_tensorrt_live.py."""

from __future__ import annotations

import re

import pytest

from edgecam.runtimes import runtime_class, runtime_format, runtime_modules
from edgecam.runtimes.tensorrt import available_reason, engine_key, timing_cache_name


def test_the_runtime_loads_tensorrt_artifacts_and_is_probed_for() -> None:
    assert runtime_format("tensorrt") == "tensorrt" and "tensorrt" in runtime_modules()
    assert runtime_class("tensorrt").name == "tensorrt"


def test_engine_keys_change_with_every_input_and_only_then() -> None:
    base = ("a" * 64, "10.3.0", "Orin", 8, ["logits", "features"])
    key = engine_key(*base)
    assert engine_key(*base) == key and engine_key("a" * 64, "10.3.0", "Orin", 8, ["features", "logits"]) == key  # output order is no change
    for i, other in enumerate(("b" * 64, "10.4.0", "Xavier", 16, ["logits"])):
        changed = list(base)
        changed[i] = other
        assert engine_key(*changed) != key, i


def test_timing_cache_names_are_one_safe_file_per_gpu_and_version() -> None:
    name = timing_cache_name("10.3.0", "NVIDIA Orin/../x")
    assert "/" not in name and name.endswith(".cache") and name != timing_cache_name("10.3.0", "Xavier")
    assert timing_cache_name("8.6.2", "Orin") != timing_cache_name("10.3.0", "Orin")


@pytest.mark.skipif(available_reason() is None, reason="TensorRT runs here: tests/hardware/test_tensorrt_live.py covers it")
def test_without_tensorrt_loading_says_why(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = tmp_path / "model.onnx"
    model.write_bytes(b"")
    with pytest.raises(RuntimeError, match="the tensorrt runtime cannot run here: " + re.escape(str(available_reason()))):
        runtime_class("tensorrt")(str(model))
