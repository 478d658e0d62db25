"""Artifacts (a model file + manifest.json) and the Exporter interface every deployment format implements."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterator

import contextlib

from edgecam.cache import atomic_write_json, sha256_file
from edgecam.errors import ArtifactError, ConfigError
from edgecam.registry import Registry

if TYPE_CHECKING:
    import numpy as np
    import torch

MANIFEST_VERSION = 1
PRECISIONS = ("fp32", "int16", "int8")
QUANT_METHODS = ("qat", "ptq")


@dataclass(frozen=True)
class ExportSpec:
    """What to export: format-independent knobs, validated on construction."""

    precision: str = "fp32"
    quant: str = "qat"  # how quantized artifacts get their scales: QAT fine-tune (learned) or PTQ calibration
    opset: int = 21
    calib_samples: int = 128
    qat_epochs: int = 2
    qat_lr: float = 1e-4
    qat_batch_size: int = 64
    qat_samples: int = 1024  # training images seen per QAT epoch (a seeded subset; fine-tuning, not training)
    # int8 weights: "full" [-127, 127]; "reduced" [-64, 64] (ORT reduce_range: no int16 saturation in x86
    # AVX2 int8 kernels); "auto": reduced on an x86 build host without VNNI
    int8_weight_range: str = "auto"
    seed: int = 0
    version: int = 1

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"export.precision: expected one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.quant not in QUANT_METHODS:
            raise ConfigError(f"export.quant: expected one of {', '.join(QUANT_METHODS)}, got {self.quant!r}")
        if self.opset < 21:
            raise ConfigError(f"export.opset: int16 QDQ needs opset >= 21, got {self.opset}")
        for name in ("calib_samples", "qat_batch_size", "qat_samples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"export.{name}: expected a positive integer, got {getattr(self, name)}")
        if self.int8_weight_range not in ("auto", "full", "reduced"):
            raise ConfigError(f"export.int8_weight_range: expected one of auto, full, reduced, got {self.int8_weight_range!r}")
        if self.qat_epochs < 0 or self.qat_lr <= 0:
            raise ConfigError("export.qat_epochs must be >= 0 and export.qat_lr > 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ModelInfo:
    """The host model an exporter works from, and how its inputs are prepared."""

    name: str
    num_classes: int
    target_layer: str
    input_shape: tuple[int, int, int]  # C, H, W
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    checkpoint_sha256: str


@dataclass(frozen=True)
class CalibData:
    """Training-split samples (already normalised) for calibration and QAT fine-tuning."""

    images: "np.ndarray"
    labels: "np.ndarray"


@dataclass(frozen=True)
class Artifact:
    """A deployable model file plus its manifest (format, precisions, I/O spec, hashes)."""

    path: Path
    manifest: dict[str, Any] = field(hash=False)

    @property
    def directory(self) -> Path:
        return self.path.parent

    @property
    def precision(self) -> str:
        return str(self.manifest["precision_requested"])

    @classmethod
    def load(cls, directory: str | os.PathLike[str], verify: bool = True) -> "Artifact":
        """Read `manifest.json` from `directory`; with `verify`, check the model file's sha256 against it."""
        directory = Path(directory)
        mpath = directory / "manifest.json"
        if not mpath.is_file():
            raise ArtifactError(f"artifact {directory}: manifest.json not found")
        try:
            manifest = json.loads(mpath.read_text())
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"artifact manifest {mpath} is not valid JSON: {exc}") from exc
        path = directory / manifest.get("file", "")
        if not path.is_file():
            raise ArtifactError(f"artifact {directory}: model file {path.name!r} named in manifest.json is missing")
        if verify and sha256_file(path) != manifest.get("sha256"):
            raise ArtifactError(f"artifact {path}: sha256 does not match manifest.json (file changed or corrupt)")
        return cls(path, manifest)


@contextlib.contextmanager
def staging_dir(final: Path) -> Iterator[Path]:
    """A temp directory beside `final`, renamed onto it on success and removed on failure (no partial artifact)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_manifest(directory: Path, model_file: Path, fields: dict[str, Any]) -> dict[str, Any]:
    """Write manifest.json for `model_file` (which must sit in `directory`); returns the manifest."""
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "file": model_file.name,
        "sha256": sha256_file(model_file),
        "size_bytes": model_file.stat().st_size,
        "outputs": ["logits", "features"],
        **fields,
    }
    atomic_write_json(directory / "manifest.json", manifest)
    return manifest


class Exporter:
    """Turns a host PyTorch model into an artifact of one format; declares the precisions it supports."""

    format: ClassVar[str]
    supported: ClassVar[tuple[str, ...]]
    # max abs difference vs PyTorch that the fp32 artifact must meet (optimum's ATOL_FOR_VALIDATION)
    atol_fp32: ClassVar[float] = 1e-4

    def export(self, model: "torch.nn.Module", info: ModelInfo, spec: ExportSpec, out_dir: Path, calib: CalibData | None = None) -> Artifact:
        raise NotImplementedError


EXPORTERS: Registry[type[Exporter]] = Registry("export format")
