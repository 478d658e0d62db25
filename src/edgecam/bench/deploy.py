"""Stage 2, deploy: the artifacts of one model (exported or reused from the cache) and the variants that
run them. Which (format, precision) pairs exist is the exporter's `supported`; which runtime loads which
format is the runtime's declared `format`; which runtimes a board has is its inventory entry."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from edgecam.bench.outputs import ARTIFACTS
from edgecam.bench.prepare import package_versions
from edgecam.bench.pairing import pair_runtimes
from edgecam.bench.variant import Variant
from edgecam.cache import stable_hash

if TYPE_CHECKING:
    from edgecam.bench.context import RunContext
    from edgecam.config import ModelSpec, RunConfig
    from edgecam.data.datasets import Datasets

Progress = Callable[[str, float], None]


def build_artifact(model: Any, mspec: "ModelSpec", layer: str, ckpt_sha: str, fmt: str, precision: str, cfg: "RunConfig", data: "Datasets",
                   exporter: Any, progress: Progress | None = None) -> tuple[Path, bool]:
    """Export (or reuse from the cache) one artifact; returns (cached artifact dir, built_now)."""
    from edgecam.exporters.base import MANIFEST_VERSION, CalibData, ModelInfo, cached_artifact
    from edgecam.exporters.onnx import resolve_weight_range

    spec = cfg.export.spec(precision, cfg.train.seed)
    info = ModelInfo(mspec.name, data.n_classes, layer, data.input_shape, data.mean, data.std, ckpt_sha)  # type: ignore[arg-type]
    key = stable_hash({"info": info.__dict__, "spec": spec.to_dict(), "weight_range": resolve_weight_range(spec.int8_weight_range), "format": fmt,
                       "data": data.fingerprint, "versions": package_versions(), "manifest_version": MANIFEST_VERSION})
    bound = max(spec.calib_samples, spec.qat_samples if spec.quant == "qat" else 0)
    return cached_artifact(f"{mspec.name}-{fmt}-{precision}-{key}",
                           lambda out: exporter.export(model, info, spec, out, CalibData(*data.calibration_arrays(bound, spec.seed)), progress=progress))


def deploy_model(ctx: "RunContext", mspec: "ModelSpec", model: Any, layer: str, ckpt_sha: str) -> list[Variant]:
    """Every variant of one model: each format x supported precision is exported once (cached), copied into
    the run directory, and paired with every configured runtime that loads that format and the board has."""
    from edgecam.exporters import exporter_class
    from edgecam.exporters.base import copy_artifact

    cfg = ctx.cfg
    variants: list[Variant] = []
    for fmt in cfg.export.formats:
        exporter = exporter_class(fmt)()
        for precision in cfg.export.precisions:
            if precision not in exporter.supported:
                ctx.log(f"skipping {mspec.name} {fmt} {precision}: the {fmt} exporter supports {', '.join(exporter.supported)}")
                continue
            with ctx.step(f"export {mspec.name} {fmt} {precision}", "setup") as note:
                art_cache, built = build_artifact(model, mspec, layer, ckpt_sha, fmt, precision, cfg, ctx.data, exporter, ctx.bar(f"export {mspec.name} {precision}"))
                note["suffix"] = "" if built else " (cached)"
                art = copy_artifact(art_cache, ctx.out_dir / ARTIFACTS / f"{mspec.name}-{fmt}-{precision}")
            variants += pair_runtimes(ctx, mspec.name, fmt, precision, art)
    return variants

