"""Artifacts (a model file + manifest.json) and the Exporter interface every deployment format implements."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, Mapping

from edgecam.cache import atomic_write_json, current_umask, sha256_file
from edgecam.errors import ArtifactError, ConfigError
from edgecam.specs import require_positive

if TYPE_CHECKING:
    import numpy as np
    import torch

MANIFEST_VERSION = 2  # 2: manifests carry the fp32 validation record (`validation`)
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
        require_positive(self, "export", ("calib_samples", "qat_batch_size", "qat_samples"))
        if self.int8_weight_range not in ("auto", "full", "reduced"):
            raise ConfigError(f"export.int8_weight_range: expected one of auto, full, reduced, got {self.int8_weight_range!r}")
        if self.qat_epochs < 0 or not (0 < self.qat_lr < float("inf")):  # `not (x > 0)`: NaN is refused too
            raise ConfigError(f"export.qat_epochs must be >= 0 and export.qat_lr a positive finite number, got {self.qat_epochs}, {self.qat_lr}")

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


def cached_artifact(name: str, build: Callable[[Path], Any]) -> tuple[Path, bool]:
    """The artifact cache's directory `name` (its key in the name): reused when it loads and its model file
    matches its manifest, else `build(directory)` writes it. Returns (directory, built now)."""
    from edgecam.cache import cache_dir

    out = cache_dir() / "artifacts" / name
    try:
        Artifact.load(out)
        return out, False
    except ArtifactError:
        pass
    build(out)
    return out, True


def copy_artifact(cached: Path, dest: Path) -> Artifact:
    """A cached artifact copied to `dest` (a run directory's, replacing an older copy): the run keeps the files
    it measured. Copied into a `.part` sibling and renamed, never through a link (`bench.safe_io`); a copy the
    disk refuses is a RunDirWriteError naming `dest`, and leaves no partial folder."""
    from edgecam.safe_io import check_no_links, make_dirs, write_error

    make_dirs(dest.parent, dest.parent.parent)
    check_no_links(dest)
    tmp: Path | None = None
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent))
        for src in sorted(cached.rglob("*")):  # file by file: an error keeps its errno (copytree's would not)
            target = tmp / src.relative_to(cached)
            if src.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            else:
                shutil.copy2(src, target)
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp's 0700 would hide it from the run directory's other readers
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException as exc:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise write_error(dest, exc) from exc
        raise
    return Artifact.load(dest)


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
    """Turns a host PyTorch model into an artifact of one format; declares the precisions it supports.

    `export` is the template every format shares: staging directory, one fp32 conversion per model (validated
    against PyTorch), calibration subset, manifest. A format implements the hooks below it: `convert_fp32`,
    `run_fp32`, `quantize`, `manifest_fields` (and `versions`), plus the class attributes."""

    format: ClassVar[str]
    supported: ClassVar[tuple[str, ...]]
    suffix: ClassVar[str]  # model file suffix, e.g. ".onnx"
    # the fp32 conversion must match PyTorch per output within atol_fp32 + rtol_fp32 x max |PyTorch output|
    # (optimum's ATOL_FOR_VALIDATION; the relative part because deep nets accumulate fp32 round-off: random
    # ResNet50 features differ by ~7e-4 at a scale of ~8, 1e-4 x the scale)
    atol_fp32: ClassVar[float] = 1e-4
    rtol_fp32: ClassVar[float] = 1e-3
    probe_images: ClassVar[int] = 2  # images the fp32 validation runs
    # the host can run the artifact's own (fake-quant) graph, so gradient CAMs also run in "sim" mode there
    # (`exporters/quantize/graph.py` for QDQ ONNX; 2403.09939's host simulation)
    host_simulation: ClassVar[bool] = False
    fp32_spec_fields: ClassVar[tuple[str, ...]] = ()  # ExportSpec fields the fp32 conversion depends on
    fp32_quantization: ClassVar[Mapping[str, Any]] = MappingProxyType({"method": "none"})  # manifest entry at fp32

    def __init__(self) -> None:
        self._fp32_memo: dict[tuple[Any, ...], tuple[bytes, dict[str, Any]]] = {}

    def export(
        self,
        model: "torch.nn.Module",
        info: ModelInfo,
        spec: ExportSpec,
        out_dir: str | os.PathLike[str],
        calib: CalibData | None = None,
        progress: Callable[[str, float], None] | None = None,
    ) -> Artifact:
        """Write `out_dir/model<suffix>` + `manifest.json` atomically; nothing is left behind on failure."""
        self.check_supported(spec)
        out_dir = Path(out_dir)
        images = None if spec.precision == "fp32" else calibration_subset(calib, info, spec)
        with staging_dir(out_dir) as tmp:
            fp32 = tmp / f"fp32{self.suffix}"
            validation = self.fp32_file(model, info, spec, fp32, calib)
            final = tmp / f"model{self.suffix}"
            if images is None:
                fp32.rename(final)
                quant_info = dict(self.fp32_quantization)
            else:
                quant_info = self.quantize(fp32, final, spec, images, calib, info, progress)
                fp32.unlink(missing_ok=True)
            fields = {
                **common_manifest_fields(model, info, spec),
                "format": self.format,
                **self.manifest_fields(model, info, spec, final, quant_info),
                "quantization": quant_info,
                "versions": self.versions(),
                "validation": validation,
            }
            write_manifest(tmp, final, fields)
        return Artifact.load(out_dir)

    @classmethod
    def check_supported(cls, spec: ExportSpec) -> None:
        """Raise ConfigError unless this format can export `spec.precision`."""
        if spec.precision not in cls.supported:
            raise ConfigError(f"export format {cls.format!r} does not support precision {spec.precision!r}; supported: {', '.join(cls.supported)}")

    def fp32_file(self, model: "torch.nn.Module", info: ModelInfo, spec: ExportSpec, path: Path, calib: CalibData | None = None) -> dict[str, Any]:
        """Write the fp32 conversion of `model` to `path`, converting and validating once per model: every
        precision starts from the same fp32 file (the last model's bytes are kept in memory). Returns the
        validation record for the manifest."""
        memo_key = (id(model), info.checkpoint_sha256, *(getattr(spec, f) for f in self.fp32_spec_fields))
        if memo_key in self._fp32_memo:
            data, validation = self._fp32_memo[memo_key]
            path.write_bytes(data)
        else:
            self.convert_fp32(model, info, spec, path)
            validation = self.validate_fp32(model, info, path, probe_inputs(info, calib, self.probe_images, spec.seed))
            self._fp32_memo = {memo_key: (path.read_bytes(), validation)}
        return dict(validation)

    def validate_fp32(self, model: "torch.nn.Module", info: ModelInfo, path: Path, x: "np.ndarray") -> dict[str, Any]:
        """Run `x` through the fp32 file in the format's runtime and through PyTorch; raise ArtifactError if an
        output's max abs difference exceeds `atol_fp32 + rtol_fp32 x max |PyTorch output|`. Returns the
        manifest's `validation` record (the measured differences)."""
        import numpy as np
        import torch

        probe = two_output_module(model, info.target_layer)
        try:
            with torch.no_grad():
                ref = [t.numpy() for t in probe(torch.from_numpy(x))]
        finally:
            probe.handle.remove()
        got = self.run_fp32(path, x)
        diffs: dict[str, float] = {}
        tols: dict[str, float] = {}
        for name, want, have in zip(("logits", "features"), ref, got):
            have = np.asarray(have)
            what = f"{self.format} fp32 conversion of model {info.name!r}"
            if have.shape != want.shape:
                raise ArtifactError(f"{what}: {name} has shape {list(have.shape)}, PyTorch {list(want.shape)}")
            scale = float(np.abs(want).max())
            diffs[name] = float(np.abs(have.astype(np.float64) - want).max())
            tols[name] = self.atol_fp32 + self.rtol_fp32 * scale
            if not diffs[name] <= tols[name]:  # also catches NaN
                raise ArtifactError(
                    f"{what} does not match PyTorch: {name} max abs diff {diffs[name]:.3g} > tolerance {tols[name]:.3g} "
                    f"(atol_fp32 {self.atol_fp32:g} + rtol_fp32 {self.rtol_fp32:g} x max |{name}| {scale:.3g}) on {len(x)} probe images"
                )
        return {"max_abs_diff": diffs, "tolerance": tols, "atol": self.atol_fp32, "rtol": self.rtol_fp32, "probe_images": len(x)}

    # ---- hooks a format implements ----

    def convert_fp32(self, model: "torch.nn.Module", info: ModelInfo, spec: ExportSpec, path: Path) -> None:
        """Write the fp32 two-output conversion (`logits`, `features`) of `model` to `path`."""
        raise NotImplementedError

    def run_fp32(self, path: Path, x: "np.ndarray") -> tuple["np.ndarray", "np.ndarray"]:
        """(logits, features) of the fp32 file at `path` for the normalised batch `x`, in the format's runtime."""
        raise NotImplementedError

    def quantize(
        self,
        fp32_path: Path,
        out_path: Path,
        spec: ExportSpec,
        calib_images: "np.ndarray",
        calib: CalibData | None,
        info: ModelInfo,
        progress: Callable[[str, float], None] | None,
    ) -> dict[str, Any]:
        """Write the `spec.precision` model quantized from `fp32_path` to `out_path`; returns the manifest's
        `quantization` entry. Only called for precisions other than fp32."""
        raise NotImplementedError

    def manifest_fields(self, model: "torch.nn.Module", info: ModelInfo, spec: ExportSpec, final_path: Path, quant_info: dict[str, Any]) -> dict[str, Any]:
        """Format-specific manifest fields (`precision_effective`, `input`, ...), placed after `format`."""
        raise NotImplementedError

    def versions(self) -> dict[str, str]:
        """The manifest's `versions` entry: the packages this format's export depends on."""
        return {}


def probe_inputs(info: ModelInfo, calib: CalibData | None, n: int, seed: int = 0) -> "np.ndarray":
    """The fp32 validation batch: the first `n` calibration images if given, else seeded standard normal
    inputs of `info.input_shape` (normalised inputs are roughly that)."""
    import numpy as np

    if calib is not None and len(calib.images) > 0:
        return np.ascontiguousarray(calib.images[:n], dtype=np.float32)
    return np.random.default_rng(seed).standard_normal((n, *info.input_shape)).astype(np.float32)


def two_output_module(model: "torch.nn.Module", target_layer: str) -> "torch.nn.Module":
    """Wrap `model` so that forward returns (logits, activation of `target_layer`); `.handle.remove()` unhooks."""
    from torch import nn

    class TwoOutputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self._captured: list[Any] = []
            self.handle = model.get_submodule(target_layer).register_forward_hook(lambda _m, _i, out: self._captured.append(out))

        def forward(self, x: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
            self._captured.clear()
            logits = self.model(x)
            return logits, self._captured[-1]

    return TwoOutputs().eval()


def calibration_subset(calib: CalibData | None, info: ModelInfo, spec: ExportSpec) -> "np.ndarray":
    """The seeded calibration images (`spec.calib_samples` of the training split); clear error without data."""
    import numpy as np

    if calib is None or len(calib.images) == 0:
        raise ArtifactError(f"{info.name} {spec.precision}: quantization needs calibration data (training split)")
    idx = np.random.default_rng(spec.seed).permutation(len(calib.images))[: spec.calib_samples]
    return calib.images[idx]


def common_manifest_fields(model: "torch.nn.Module", info: ModelInfo, spec: ExportSpec) -> dict[str, Any]:
    """Manifest fields every format writes: model, precision requested, output shapes, CAM layer, hashes."""
    import torch

    probe = two_output_module(model, info.target_layer)
    with torch.no_grad():
        logits, feats = probe(torch.zeros((1, *info.input_shape)))
    probe.handle.remove()
    return {
        "model": info.name,
        "num_classes": info.num_classes,
        "precision_requested": spec.precision,
        "output_shapes": {"logits": ["batch", *logits.shape[1:]], "features": ["batch", *feats.shape[1:]]},
        "target_layer": info.target_layer,
        "source_checkpoint_sha256": info.checkpoint_sha256,
        "export_spec": spec.to_dict(),
    }


def input_spec(name: str, shape: list[Any], dtype: str, info: ModelInfo) -> dict[str, Any]:
    """The manifest's `input` entry: name, shape, dtype, layout and the normalisation callers must apply."""
    return {"name": name, "shape": shape, "dtype": dtype, "layout": "NCHW", "value_range": [0.0, 1.0], "normalisation": {"mean": list(info.mean), "std": list(info.std)}}


