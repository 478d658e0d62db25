"""Registries: unknown names list the known ones; duplicates raise."""

from __future__ import annotations

import pytest

from edgecam.errors import UnknownNameError
from edgecam.models import MODELS
from edgecam.registry import Registry
from edgecam.runtimes import RUNTIMES, runtime_class


def test_unknown_model_names_allowed_values() -> None:
    with pytest.raises(UnknownNameError) as exc:
        MODELS.get("resnet9000")
    for name in ("tinycnn", "vgg16", "resnet50", "densenet121", "mobilenet_v2", "squeezenet1_0", "efficientnet_b0"):
        assert name in str(exc.value)


def test_unknown_runtime_names_allowed_values() -> None:
    with pytest.raises(UnknownNameError, match="onnxruntime.*null|null.*onnxruntime"):
        runtime_class("tensorflow")


def test_duplicate_name_raises() -> None:
    reg: Registry[int] = Registry("thing")
    reg.add("a", 1)
    with pytest.raises(ValueError, match="duplicate thing name 'a'"):
        reg.add("a", 2)
    assert reg.get("a") == 1 and "a" in reg and reg.names() == ["a"]


def test_runtime_registry_resolves_classes() -> None:
    assert runtime_class("null").name == "null"
    assert "onnxruntime" in RUNTIMES
