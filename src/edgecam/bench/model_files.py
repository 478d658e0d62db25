"""Stages 1 and 2 for a model given by its files (issue 34: `[[models]] files = [...]`, `edgecam run a.tflite a.onnx`):
the files checked against each other and the data before any work, the float reference (the user's fp32 ONNX, or one
dequantized from a QDQ ONNX) as the host model, and every file (plus the reference) as a variant. Everything after
(measure, explain, aggregate, report) runs as for a model edgecam exported.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecam.bench.outputs import ARTIFACTS
from edgecam.bench.variant import NO_REFERENCE, Variant
from edgecam.cache import stable_hash
from edgecam.errors import ConfigError

if TYPE_CHECKING:
    from edgecam.bench.context import RunContext
    from edgecam.config import ModelSpec, RunConfig
    from edgecam.data.datasets import Datasets
    from edgecam.exporters.inspect import ModelFile
    from edgecam.exporters.model_file import Endpoints

#: the precision column of a file's variant, from the precision read from its graph (`precision_effective` keeps it)
PRECISION_OF = {"int8": "int8", "uint8": "int8", "int16x8": "int16", "int16": "int16", "fp32": "fp32", "fp16": "fp16", "mixed": "mixed"}
#: test images the surgery proof runs (the original file and the modified one, the file's own output compared)
SURGERY_CHECK_IMAGES = 16
FILE_MANIFEST_VERSION = 1  # bump when a file artifact's layout or manifest changes


@dataclass(frozen=True)
class FilePlan:
    """What a model given by its files is: each file as read, its logits and CAM tensor, the class offset, and the
    source and kind of its float reference ("fp32": the user's fp32 ONNX; "dequantized": from a QDQ ONNX; None)."""

    files: tuple["ModelFile", ...]
    ends: tuple["Endpoints", ...]
    label_offset: int
    reference: "ModelFile | None"
    reference_ends: "Endpoints | None"
    reference_kind: str | None
    class_names: tuple[str, ...] = ()  # from the model's labels file, when given


def plan_files(mspec: "ModelSpec", n_classes: int) -> FilePlan:
    """Read every file of `mspec` and refuse, naming the file, what cannot be one model: files whose class counts
    or input sizes differ, a class count the data's does not fit, no CAM tensor found."""
    from edgecam.exporters.inspect import inspect_model_file
    from edgecam.exporters.model_file import endpoints

    files = tuple(inspect_model_file(f) for f in mspec.files)
    ends = tuple(endpoints(m.path, m.format, mspec.cam_tensor) for m in files)
    ref = inspect_model_file(mspec.reference) if mspec.reference else next((m for m in files if m.format == "onnx" and m.precision == "fp32"), None)
    kind = "fp32" if ref is not None else None
    if ref is None:
        ref = next((m for m in files if m.format == "onnx" and m.counts.get("float_weights", 0) == 0 and m.precision != "fp32"), None)
        kind = "dequantized" if ref is not None else None
    every = [*files, *([ref] if ref is not None and ref not in files else [])]
    first = every[0]
    for m in every[1:]:
        if m.n_classes != first.n_classes:
            raise ConfigError(f"models.files ({mspec.name}): {m.path} gives {m.n_classes} class scores, {first.path} {first.n_classes}: the files of one model must classify alike")
        if m.input.size != first.input.size:
            raise ConfigError(f"models.files ({mspec.name}): {m.path} takes {m.input.size[0]}x{m.input.size[1]} images, {first.path} {first.input.size[0]}x{first.input.size[1]}")
    names = read_labels(mspec, n_classes)
    offset = first.n_classes - n_classes if mspec.label_offset is None else mspec.label_offset
    if mspec.label_offset is None and offset not in (0, 1):
        raise ConfigError(f"models.files ({mspec.name}): {first.path} gives {first.n_classes} class scores and the data has {n_classes} classes; "
                          "label the data with the model's class indices (data.num_classes), or set label_offset (leading non-class outputs)")
    if first.n_classes - offset != n_classes:
        raise ConfigError(f"models.label_offset ({mspec.name}): {first.path} gives {first.n_classes} class scores; less the offset {offset} that is "
                          f"{first.n_classes - offset}, the data has {n_classes} classes")
    ref_ends = None
    if ref is not None:
        ref_ends = ends[files.index(ref)] if ref in files else endpoints(ref.path, "onnx", mspec.cam_tensor)
    return FilePlan(files, ends, offset, ref, ref_ends, kind, names)


def read_labels(mspec: "ModelSpec", n_classes: int) -> tuple[str, ...]:
    """The model's class names from its labels file (one a line; blank lines at the end ignored), which must name the
    data's classes: refused, with the file named, when its length does not fit."""
    if not mspec.labels:
        return ()
    try:
        names = tuple(line.strip() for line in Path(mspec.labels).read_text(encoding="utf-8").rstrip("\n").splitlines())
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"models.labels ({mspec.name}): {mspec.labels}: not a readable UTF-8 text file ({type(exc).__name__}: {exc})") from None
    if len(names) != n_classes:
        raise ConfigError(f"models.labels ({mspec.name}): {mspec.labels} names {len(names)} classes, the data has {n_classes}: "
                          "one name a line, in class-index order, without a background class (label_offset says how many leading scores are not classes)")
    return names


def check_file_model(mspec: "ModelSpec", data: "Datasets") -> FilePlan:
    """Preflight of a model given by its files: the data's images are the files' input size and, for an integer
    input, normalised as its own scale and zero point say (else refused with the values to set)."""
    plan = plan_files(mspec, data.n_classes)
    contract = plan.files[0].input
    h, w = contract.size
    if tuple(data.input_shape[1:]) != (h, w):
        raise ConfigError(f"models.files ({mspec.name}): {plan.files[0].path} takes {h}x{w} images, the data gives {data.input_shape[1]}x{data.input_shape[2]}: "
                          f"set data.crop = {h} (and data.resize, e.g. {round(h * 256 / 224)})")
    if data.input_shape[0] != contract.channels:
        raise ConfigError(f"models.files ({mspec.name}): {plan.files[0].path} takes {contract.channels}-channel images, the data gives {data.input_shape[0]}")
    implied = contract.normalisation()
    if implied is not None and input_level_error(contract, data.mean, data.std) > 0.5 + 1e-4:  # slack for a float32 scale (1/127.5 to ~5e-10)
        want = lambda v: "[" + ", ".join(f"{x:.6f}" for x in v) + "]"  # noqa: E731
        raise ConfigError(f"models.files ({mspec.name}): {plan.files[0].path} takes {contract.dtype} pixels (scale {contract.scale:.6g}, zero point {contract.zero_point}), "
                          f"so the data must be normalised with mean {want(implied[0])}, std {want(implied[1])}; it uses mean {want(data.mean)}, std {want(data.std)}: "
                          "set data.mean and data.std to those values")
    return plan


def input_level_error(contract: Any, mean: Any, std: Any) -> float:
    """How far, in the integer input's own levels, the data's normalisation puts a black or white pixel from the level
    the file's scale and zero point give it (0 and 255): up to half a level only moves a rounding at the extremes."""
    worst = 0.0
    for m, s in zip(mean, std):
        for p in (0, 255):
            worst = max(worst, abs((p / 255.0 - m) / s / contract.scale + contract.zero_point - p))
    return worst


def prepare_file_model(mspec: "ModelSpec", data: "Datasets") -> tuple[Any, str, dict[str, Any]]:
    """The host model of a model given by its files: its float reference as a torch module (onnx2torch), fed NCHW,
    and its CAM layer. Returns (model, layer, facts for the manifest) as `prepare.prepare_model` does, less the host
    accuracy (the caller's)."""
    from edgecam.exporters.model_file import float_graph, host_module

    plan = plan_files(mspec, data.n_classes)
    files = {str(m.path): {"sha256": m.sha256, "format": m.format, "precision": m.precision, "granularity": m.granularity} for m in plan.files}
    if plan.reference is None:  # TFLite files only: no float graph; the gradient-free CAMs run on the device (config checked it)
        return None, plan.ends[0].features, {"sha256": plan.files[0].sha256, "trained_now": False, "reference_kind": None, "files": files,
                                              "source": f"no float reference: {', '.join(str(m.path) for m in plan.files)} (gradient-free CAMs only)"}
    assert plan.reference_ends is not None
    graph, facts = float_graph(plan.reference.path, plan.reference_ends)
    model, layer = host_module(graph, plan.reference.input.layout, plan.label_offset)
    meta = {"sha256": plan.reference.sha256, "trained_now": False, "source": f"{plan.reference_kind} reference: {plan.reference.path}",
            "file": str(plan.reference.path), "reference_kind": plan.reference_kind, "float_graph": facts, "files": files, "label_offset": plan.label_offset,
            **({"class_names": list(plan.class_names)} if plan.class_names else {})}
    return model, layer, meta


def file_contract(m: "ModelFile", ends: "Endpoints", label_offset: int, dtype: str | None = None) -> dict[str, Any]:
    """The manifest's `contract`: what the runtimes convert edgecam's NCHW float arrays to and from."""
    c = m.input
    return {"layout": c.layout, "dtype": dtype or c.dtype, "scale": c.scale if dtype is None else None, "zero_point": c.zero_point if dtype is None else None,
            "features_layout": ends.features_layout, "label_offset": label_offset}


def _check_images(data: "Datasets") -> np.ndarray:
    return np.ascontiguousarray(data.test_batch(list(range(min(SURGERY_CHECK_IMAGES, data.n_test)))).x, dtype=np.float32)


def build_file_artifact(m: "ModelFile", ends: "Endpoints", label_offset: int, model_name: str, data: "Datasets", out: Path) -> None:
    """One file as an edgecam artifact in `out`: the file with its logits and CAM tensor exposed, the surgery proven
    on the run's first test images (the file's own output unchanged), the manifest."""
    from edgecam.exporters.base import staging_dir, write_manifest
    from edgecam.exporters.model_file import expose, prove_surgery
    from edgecam.runtimes.base import contract_input

    contract = file_contract(m, ends, label_offset)
    with staging_dir(out) as tmp:
        final = tmp / f"model{m.path.suffix.lower()}"
        expose(m.path, final, m.format, ends)
        proof = prove_surgery(m.path, final, m.format, ends, contract_input(_check_images(data), contract, quantize=True))
        names = {"logits": "logits", "features": "features"} if m.format == "onnx" else {"logits": ends.logits, "features": ends.features}
        write_manifest(tmp, final, {
            "model": model_name, "format": m.format, "precision_requested": PRECISION_OF[m.precision], "precision_effective": m.precision,
            "weight_granularity": m.granularity, "num_classes": m.n_classes - label_offset, "target_layer": ends.features,
            "source_file": {"path": str(m.path), "sha256": m.sha256, "size_bytes": m.size_bytes, "counts": m.counts},
            "output_names": names, "contract": contract, "surgery": proof,
            "quantization": {"method": "as the file was made", "precision": m.precision, "granularity": m.granularity},
        })


def build_reference_artifact(plan: FilePlan, model_name: str, data: "Datasets", out: Path) -> None:
    """The float reference as an ONNX artifact (outputs `logits` and `features`), with its top-1 agreement with the
    quantized file it came from on the run's first test images when it is dequantized."""
    import onnx

    from edgecam.exporters.base import staging_dir, write_manifest
    from edgecam.exporters.model_file import float_graph, native_outputs
    from edgecam.runtimes.base import contract_input

    assert plan.reference is not None and plan.reference_ends is not None
    ref, ends = plan.reference, plan.reference_ends
    contract = file_contract(ref, ends, plan.label_offset, dtype="float32")
    graph, facts = float_graph(ref.path, ends)
    with staging_dir(out) as tmp:
        final = tmp / "model.onnx"
        onnx.save(graph, str(final))
        check: dict[str, Any] = {}
        if plan.reference_kind == "dequantized":
            x = _check_images(data)
            a = native_outputs(final, "onnx", contract_input(x, contract, quantize=False), ["logits"])["logits"]
            b = native_outputs(ref.path, "onnx", contract_input(x, file_contract(ref, ends, plan.label_offset), quantize=True), [ends.output])[ends.output]  # the file's own output: a softmax keeps the top-1
            check = {"images": int(len(x)), "top1_agrees_with_source": float((a.reshape(len(a), -1).argmax(1) == b.reshape(len(b), -1).argmax(1)).mean())}
        write_manifest(tmp, final, {
            "model": model_name, "format": "onnx", "precision_requested": "fp32",
            "precision_effective": "fp32" if plan.reference_kind == "fp32" else "fp32-dequantized", "reference_kind": plan.reference_kind,
            "num_classes": ref.n_classes - plan.label_offset, "target_layer": ends.features,
            "source_file": {"path": str(ref.path), "sha256": ref.sha256, "size_bytes": ref.size_bytes, "precision": ref.precision},
            "output_names": {"logits": "logits", "features": "features"}, "contract": contract, "float_graph": facts, "reference_check": check,
            "quantization": {"method": "none" if plan.reference_kind == "fp32" else "dequantized: weights folded to float, activation Q/DQ bypassed (saturation kept)"},
        })


def build_quantized_artifact(reference_dir: Path, precision: str, cfg: "RunConfig", data: "Datasets", out: Path) -> None:
    """An fp32 ONNX file quantized by edgecam (static QDQ through ONNX Runtime, per-channel symmetric weights, MinMax
    calibration on the data's calibration images in the file's own layout): the same sweep a PyTorch model gets."""
    import json

    import onnx

    from edgecam.exporters.base import staging_dir, write_manifest
    from edgecam.exporters.onnx import quantize_qdq, resolve_weight_range
    from edgecam.runtimes.base import contract_input

    ref = json.loads((reference_dir / "manifest.json").read_text())
    images = data.calibration_arrays(cfg.export.calib_samples, cfg.train.seed)[0]
    if len(images) == 0:
        raise ConfigError(f"models.files ({ref['model']}): quantizing {ref['source_file']['path']} to {precision} needs calibration images; set data.calib_path, or precisions = [\"fp32\"]")
    idx = np.random.default_rng(cfg.train.seed).permutation(len(images))[: cfg.export.calib_samples]
    weight_range = resolve_weight_range(cfg.export.int8_weight_range) if precision == "int8" else "full"
    with staging_dir(out) as tmp:
        final = tmp / "model.onnx"
        source = reference_dir / "model.onnx"
        input_name = next(i.name for i in onnx.load(str(source), load_external_data=False).graph.input)
        quantize_qdq(source, final, precision, contract_input(images[idx], ref["contract"], quantize=False), weight_range, input_name=input_name)
        write_manifest(tmp, final, {
            **{k: ref[k] for k in ("model", "format", "num_classes", "target_layer", "source_file", "output_names", "contract")},
            "precision_requested": precision, "precision_effective": precision, "weight_granularity": "per-channel",
            "quantization": {"method": "ptq", "activation_dtype": precision, "weight_dtype": precision, "weight_range": weight_range,
                             "weights": "per-channel symmetric", "activations": "per-tensor asymmetric",
                             "calibration": f"MinMax on {len(idx)} calibration images (seed {cfg.train.seed})", "quantized_by": "edgecam (ONNX Runtime quantize_static)"},
        })


def deploy_file_model(ctx: "RunContext", mspec: "ModelSpec") -> list[Variant]:
    """Every variant of a model given by its files: the float reference (ONNX Runtime) and each file, paired with the
    configured runtimes that load its format and the board has; each compares "v. fp32" against the reference."""
    from edgecam.bench.pairing import pair_runtimes
    from edgecam.cache import installed_versions
    from edgecam.exporters.base import cached_artifact, copy_artifact

    plan = plan_files(mspec, ctx.data.n_classes)
    versions = installed_versions(("edgecam", "onnx", "onnxruntime", "ai-edge-litert"))
    base = {"data": ctx.data.fingerprint, "versions": versions, "offset": plan.label_offset, "cam": mspec.cam_tensor, "v": FILE_MANIFEST_VERSION}
    variants: list[Variant] = []
    reference_key: str | None = None
    jobs: list[tuple[str, str, Any, "ModelFile"]] = []
    if plan.reference is not None and plan.reference_kind is not None:
        jobs.append(("onnx", "fp32", lambda out: build_reference_artifact(plan, mspec.name, ctx.data, out), plan.reference))
    for m, ends in zip(plan.files, plan.ends):
        if m is plan.reference and plan.reference_kind == "fp32":
            continue  # the fp32 ONNX is the reference variant itself
        jobs.append((m.format, PRECISION_OF[m.precision], lambda out, m=m, ends=ends: build_file_artifact(m, ends, plan.label_offset, mspec.name, ctx.data, out), m))
    seen: set[tuple[str, str]] = set()
    for i, (fmt, precision, build, src) in enumerate(jobs):
        label = precision if (fmt, precision) not in seen else f"{precision}-{src.sha256[:6]}"  # two files of one format and precision
        seen.add((fmt, precision))
        key = stable_hash({**base, "sha256": src.sha256, "kind": "reference" if i == 0 and plan.reference_kind else "file"})
        with ctx.step(f"prepare {mspec.name} {fmt} {label} ({src.path.name})", "setup") as note:
            art_cache, built = cached_artifact(f"{mspec.name}-{fmt}-{label}-{key}", build)
            note["suffix"] = "" if built else " (cached)"
            art = copy_artifact(art_cache, ctx.out_dir / ARTIFACTS / f"{mspec.name}-{fmt}-{label}")
        surgery = art.manifest.get("surgery")
        if surgery:
            ctx.log(f"{mspec.name} {src.path.name}: logits and CAM tensor exposed; the file's own output on {surgery['images']} test images: max |diff| "
                    f"{surgery['max_abs_diff']:.3g} vs the original file")
        for v in pair_runtimes(ctx, mspec.name, fmt, label, art):
            if reference_key is None and art.manifest.get("reference_kind"):
                reference_key = v.key
            variants.append(v)
        if art.manifest.get("reference_kind") == "fp32":  # only an fp32 file: edgecam quantizes it, as it does a PyTorch model
            for precision in (p for p in ctx.cfg.export.precisions if p != "fp32"):
                qkey = stable_hash({**base, "sha256": src.sha256, "precision": precision, "export": ctx.cfg.export.spec(precision, ctx.cfg.train.seed).to_dict()})
                with ctx.step(f"quantize {mspec.name} onnx {precision} ({src.path.name})", "setup") as note:
                    q_cache, built = cached_artifact(f"{mspec.name}-onnx-{precision}-{qkey}",
                                                     lambda out, p=precision, d=art.directory: build_quantized_artifact(d, p, ctx.cfg, ctx.data, out))
                    note["suffix"] = "" if built else " (cached)"
                    q_art = copy_artifact(q_cache, ctx.out_dir / ARTIFACTS / f"{mspec.name}-onnx-{precision}")
                variants += pair_runtimes(ctx, mspec.name, "onnx", precision, q_art)
    for v in variants:
        if v.key != reference_key:
            v.reference = reference_key or NO_REFERENCE
    return variants
