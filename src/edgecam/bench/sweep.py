"""The end-to-end run: data -> train (cached) -> export (cached) -> device runs -> CAMs -> metrics -> results.

One row per image x model x runtime x precision x CAM method x mode in results.parquet (the explain stage,
`bench/explain.py`, streams CAMs shard by shard into those rows); raw latency samples in latency.parquet;
per-variant performance in bench.csv; Table-1 layout with confidence intervals and Wilcoxon p-values in
summary.csv; WSOL MaxBoxAcc in wsol.csv; activation histograms in activations.parquet; the most dissimilar
CAMs in dissimilar.csv / .png; everything that produced the run in manifest.json. Outputs are written
atomically.
"""

from __future__ import annotations

import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgecam.bench.explain import DeviceSession, explain_model, write_dissimilar, write_grid
from edgecam.cache import atomic_write_json, cache_dir, stable_hash
from edgecam.config import ModelSpec, RunConfig, RuntimeSpec
from edgecam.devices.inventory import LOCAL, DeviceSpec
from edgecam.errors import ConfigError, EdgecamError

MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)

Progress = Callable[[str, float], None]


def normalise(images: np.ndarray, mean: tuple[float, ...] = MEAN, std: tuple[float, ...] = STD) -> np.ndarray:
    """(x - mean) / std per channel; the artifact manifest records mean and std."""
    m = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    return ((images - m) / s).astype(np.float32)


IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet normalisation (the six architectures' weights)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Datasets:
    """Normalised train (training / calibration / QAT) and test (evaluated) images, and what describes them."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    test_masks: np.ndarray
    test_ids: list[str]
    fingerprint: str
    n_classes: int = 10
    mean: tuple[float, ...] = MEAN
    std: tuple[float, ...] = STD
    source: dict[str, Any] = field(default_factory=dict)  # recorded in the manifest (incl. preprocessing)


def load_data(cfg: RunConfig) -> Datasets:
    """The config's dataset, normalised with its mean / std. Bad folders, CSVs, box files and images that do
    not decode fail here, before any training or export, naming the file."""
    d = cfg.data
    if d.name == "image-folder":
        return _load_image_folder(cfg)
    from edgecam.data.digits_clutter import DigitsClutterSpec, build_digits_clutter

    spec = DigitsClutterSpec(canvas=d.canvas, digit_size=d.digit_size, seed=d.seed, copies_test=d.copies_test)
    train = build_digits_clutter(spec, "train")
    test = build_digits_clutter(spec, "test")
    mean, std = d.mean or MEAN, d.std or STD
    return Datasets(
        normalise(train.images, mean, std), train.labels, normalise(test.images, mean, std), test.labels, test.masks,
        [str(i) for i in test.ids], stable_hash([train.fingerprint(), test.fingerprint()]), 10, mean, std,
        {"dataset": "digits-clutter", "canvas": d.canvas, "digit_size": d.digit_size, "seed": d.seed, "copies_test": d.copies_test, "normalisation": {"mean": mean, "std": std}},
    )


def _load_image_folder(cfg: RunConfig) -> Datasets:
    from edgecam.data.image_folder import load_image_folder, stratified_split

    d = cfg.data
    folder = load_image_folder(Path(str(d.path)).expanduser(), d.resolve(d.labels_csv), d.resolve(d.boxes_dir), d.resize, d.crop)
    n_classes = d.num_classes or folder.n_classes
    if folder.labels.max() >= n_classes:
        raise ConfigError(f"data.num_classes: {n_classes} classes, but {d.path} has labels up to {int(folder.labels.max())} ({folder.n_classes} class names)")
    train_idx, test_idx = stratified_split(folder.labels, d.test_fraction, d.seed)
    train, test = folder.subset(train_idx), folder.subset(test_idx)
    mean, std = d.mean or IMAGENET_MEAN, d.std or IMAGENET_STD
    return Datasets(
        normalise(train.images, mean, std), train.labels, normalise(test.images, mean, std), test.labels, test.masks, list(test.ids),
        stable_hash([folder.fingerprint, d.test_fraction, d.seed, mean, std, n_classes]), n_classes, mean, std,
        {"dataset": "image-folder", **folder.source, "class_names": folder.class_names, "test_images": len(test), "calibration_images": len(train),
         "preprocessing": folder.preprocessing, "normalisation": {"mean": mean, "std": std}},
    )


@dataclass
class Variant:
    """One deployed model: model x format x precision x runtime, and what running it produced."""

    model: str
    format: str
    precision: str
    runtime: str
    artifact_dir: Path
    manifest: dict[str, Any]
    result: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    error: str | None = None

    @property
    def key(self) -> str:
        return f"{self.model}-{self.format}-{self.precision}-{self.runtime}"


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("edgecam", "torch", "torchvision", "onnx", "onnxruntime", "grad-cam", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def prepare_model(mspec: ModelSpec, cfg: RunConfig, data: Datasets, progress: Progress | None = None) -> tuple[Any, str, dict[str, Any]]:
    """fp32 model for `mspec`: the user's weights, or trained on the data (cached by what produced it)."""
    from edgecam.models import build_model, resolve_entry
    from edgecam.models.train import accuracy, cached_checkpoint, train_classifier

    if mspec.weights:
        model, layer = build_model(mspec.name, data.n_classes, mspec.weights, mspec.target_layer)
        from edgecam.cache import sha256_file

        from edgecam.models import TORCHVISION_WEIGHTS_PREFIX, torchvision_weights_info

        weights_file = mspec.weights
        if str(mspec.weights).startswith(TORCHVISION_WEIGHTS_PREFIX):  # the hub-cache file build_model just loaded
            weights_file = str(torchvision_weights_info(mspec.name, str(mspec.weights)[len(TORCHVISION_WEIGHTS_PREFIX):])["file"])
        meta: dict[str, Any] = {"sha256": sha256_file(weights_file), "source": str(mspec.weights), "file": str(weights_file), "trained_now": False}
    else:
        tspec = mspec.train_spec(cfg.train)
        import torch

        key = {"model": mspec.name, "classes": data.n_classes, "data": data.fingerprint, "train": tspec.__dict__, "torch": torch.__version__, "norm": [data.mean, data.std]}
        layer = resolve_entry(mspec.name, mspec.target_layer).target_layer
        model, _ckpt, meta, trained = cached_checkpoint(
            key,
            cache_dir() / "checkpoints" / mspec.name,
            lambda: _seeded(tspec.seed, lambda: build_model(mspec.name, data.n_classes, None, mspec.target_layer)[0]),
            lambda m: train_classifier(m, data.train_x, data.train_y, tspec, progress, mspec.name),
        )
        meta = {**meta, "trained_now": trained}
    meta["host_fp32_accuracy"] = accuracy(model, data.test_x, data.test_y)
    return model, layer, meta


def _seeded(seed: int, fn: Callable[[], Any]) -> Any:
    """Call `fn` with torch's global RNG seeded: weight initialisation must not depend on what ran before."""
    import torch

    torch.manual_seed(seed)
    return fn()


def build_artifact(model: Any, mspec: ModelSpec, layer: str, ckpt_sha: str, fmt: str, precision: str, cfg: RunConfig, data: Datasets, exporter: Any, progress: Progress | None = None) -> tuple[Path, bool]:
    """Export (or reuse from the cache) one artifact; returns (cached artifact dir, built_now)."""
    from edgecam.exporters.base import Artifact, ArtifactError, CalibData, ModelInfo

    spec = cfg.export.spec(precision, cfg.train.seed)
    info = ModelInfo(mspec.name, data.n_classes, layer, tuple(data.test_x.shape[1:]), data.mean, data.std, ckpt_sha)  # type: ignore[arg-type]
    from edgecam.exporters.onnx import resolve_weight_range

    key = stable_hash({"info": info.__dict__, "spec": spec.to_dict(), "weight_range": resolve_weight_range(spec.int8_weight_range), "format": fmt, "data": data.fingerprint, "versions": _versions()})
    out = cache_dir() / "artifacts" / f"{mspec.name}-{fmt}-{precision}-{key}"
    try:
        Artifact.load(out)
        return out, False
    except ArtifactError:
        pass
    exporter.export(model, info, spec, out, CalibData(data.train_x, data.train_y), progress=progress)
    return out, True


def device_job(rspec: RuntimeSpec, dspec: DeviceSpec) -> dict[str, Any]:
    """The job fields every run of `rspec` on `dspec` shares: runtime, its options (the inventory's thread
    count where the experiment sets none) and the device's CPU budget."""
    options = rspec.options()
    if options.get("threads") is None and dspec.threads is not None:
        options["threads"] = dspec.threads
    job: dict[str, Any] = {"runtime": rspec.name, "runtime_options": options}
    if dspec.cores is not None:
        job["cores"] = dspec.cores
    return job


def run_variant(variant: Variant, rspec: RuntimeSpec, cfg: RunConfig, data: Datasets, device: Any, dspec: DeviceSpec = LOCAL) -> None:
    """Timing + outputs pass, then a separate memory pass, on `device`; failures are recorded, not raised.

    The device's inventory entry supplies the thread count where the experiment sets none, and its CPU
    budget (`cores`, applied by the agent) and tegrastats sampling. A crash of the runtime (segfault, OOM
    kill), a timeout or a lost board ends up in `variant.error` with the device's stderr; transport errors
    were already retried with backoff by the device (see `devices/ssh.py`)."""
    job = {**device_job(rspec, dspec), "warmup": cfg.bench.warmup, "iterations": cfg.bench.iterations, "batch_size": cfg.bench.batch_size}
    if dspec.tegrastats:
        job["tegrastats"] = True
    try:
        variant.result, variant.outputs = device.run_job(variant.artifact_dir, data.test_x, {**job, "mode": "run"}, timeout=cfg.bench.timeout_s)
        if cfg.bench.memory:
            variant.memory, _ = device.run_job(variant.artifact_dir, data.test_x[: 3 * cfg.bench.batch_size], {**job, "mode": "memory"}, timeout=cfg.bench.timeout_s)
    except (EdgecamError, OSError, TimeoutError) as exc:
        variant.error = f"{type(exc).__name__}: {exc}"


def _run_job_key(v: Variant, rspec: RuntimeSpec, cfg: RunConfig, data: Datasets, dspec: DeviceSpec, ckpt_sha: str) -> str:
    """What a variant's device run depends on: model, weights, artifact, runtime and options, device, data."""
    from edgecam.bench.store import job_key

    return job_key(kind="run", model=v.model, weights=ckpt_sha, artifact=v.manifest.get("sha256"), format=v.format, precision=v.precision,
                   runtime=v.runtime, job=device_job(rspec, dspec), device=dspec.name, bench=cfg.bench.__dict__, data=data.fingerprint, images=len(data.test_x))


def run_variant_resumable(v: Variant, rspec: RuntimeSpec, cfg: RunConfig, data: Datasets, device: Any, dspec: DeviceSpec, store: Any, key: str) -> bool:
    """`run_variant` as a job of the run's store: a finished one is read back (True), a new one is run and
    committed when it succeeded. Failed runs are not committed, so the next resume retries them."""
    from edgecam.bench.store import Job

    job = store.get("run", key)
    if job is None:
        run_variant(v, rspec, cfg, data, device, dspec)
        if v.error:
            return False
        store.put("run", key, Job({"result": v.result, "memory": v.memory}, dict(v.outputs)))
        job = store.get("run", key, count=False)
        reused = False
    else:
        reused = True
    v.result, v.memory, v.outputs = job.meta["result"], job.meta["memory"], job.arrays
    return reused


def preflight(cfg: RunConfig, data: Datasets) -> None:
    """Reject bad input before any work: every model builds, its weights file loads and fits, and it takes
    the data's input shape and gives one logit per class. Errors name the model, file and what was expected."""
    import torch

    from edgecam.models import build_model

    probe_x = torch.from_numpy(np.ascontiguousarray(data.test_x[:1]))
    for m in cfg.models:
        model, _layer = build_model(m.name, data.n_classes, m.weights, m.target_layer)
        try:
            with torch.no_grad():
                logits = model(probe_x)
        except Exception as exc:  # noqa: BLE001 - any failure here is a shape / dtype mismatch with the data
            raise ConfigError(f"models.name ({m.name}): the model does not accept the data's input of shape {tuple(probe_x.shape[1:])} (C, H, W): {type(exc).__name__}: {exc}") from None
        if tuple(logits.shape) != (1, data.n_classes):
            raise ConfigError(f"models.name ({m.name}): expected logits of shape (batch, {data.n_classes}) for the data's {data.n_classes} classes, got {tuple(logits.shape)}")


def run(cfg: RunConfig, out_dir: Path, limit: int | None = None, progress: Any = None, log: Callable[[str], None] = print, device_spec: DeviceSpec | None = None,
        inventory: str | Path | None = None, resume: bool | None = None) -> dict[str, Any]:
    """Run the whole experiment into `out_dir`; returns the manifest. `progress` is a `RunProgress` or None.

    The device is `device_spec`, else the config's `device` looked up in the inventory (`inventory` file or
    the default search path); the host prepares artifacts and CAMs, the device only runs artifacts.

    The run is a set of jobs (a device run per variant, an explain job per model and image shard) committed
    to `out_dir/jobs` as each finishes: rerunning the same experiment into the same directory (or `resume`)
    reuses them and computes only what is missing; a different experiment there is refused (`bench/store.py`).
    """
    import pandas as pd

    import torch

    from edgecam.bench.results import summarise, summarise_gap, variant_table
    from edgecam.bench.store import JobStore, pin_run_dir
    from edgecam.devices.agent import probe
    from edgecam.devices.inventory import get_device_spec, open_device
    from edgecam.exporters.base import EXPORTERS, Artifact
    from edgecam.runtimes import RUNTIME_FORMATS

    t_start = time.perf_counter()
    torch.set_flush_denormal(True)  # int16 activations sit near denormals; x86 slows ~10x on them
    stage = progress.stage if progress else (lambda name, total: (lambda desc, frac: None))
    data = load_data(cfg)
    n_img = limit or cfg.data.limit or len(data.test_x)
    n_img = min(n_img, len(data.test_x))
    dspec = device_spec or get_device_spec(cfg.device, inventory)
    preflight(cfg, data)
    identity = {"config_hash": stable_hash(cfg.to_dict()), "images": n_img, "device": dspec.name, "data": data.fingerprint}
    resumed = pin_run_dir(out_dir, identity, resume)
    store = JobStore(out_dir / "jobs")
    if resumed:
        log(f"resuming {out_dir}: {sum(1 for _ in store.root.glob('*/*/meta.json'))} finished job(s) kept, {store.clean_partials()} partial one(s) discarded")
    device = open_device(dspec, local_workdir=str(out_dir / ".device"))
    log(f"device {dspec.name} ({dspec.url}): probing")
    device_info = device.info()
    manifest: dict[str, Any] = {
        "config": cfg.to_dict(),
        "config_hash": identity["config_hash"],
        "versions": _versions(),
        "host": probe(),
        "device": {**device_info, "inventory": dspec.public()},
        "images": n_img,
        "data_fingerprint": data.fingerprint,
        "data": data.source,
        "models": {},
        "variants": {},
        "stages_s": {},
        "resumed": resumed,
    }
    timings: dict[str, float] = manifest["stages_s"]
    all_rows: list[pd.DataFrame] = []
    all_gaps: list[pd.DataFrame] = []
    latency_rows: list[dict[str, Any]] = []
    variants: list[Variant] = []
    failed: list[dict[str, str]] = []
    wsol: list[dict[str, Any]] = []
    histograms: list[dict[str, Any]] = []
    dissimilar: list[dict[str, Any]] = []
    grids: dict[str, dict[str, Any]] = {}
    lowbit: list[dict[str, Any]] = []
    rspecs = {r.name: r for r in cfg.runtimes}
    for mspec in cfg.models:
        t0 = time.perf_counter()
        model, layer, meta = prepare_model(mspec, cfg, data, stage(f"train {mspec.name}", 1.0))
        timings[f"train {mspec.name}" + ("" if meta["trained_now"] else " (cached)")] = time.perf_counter() - t0
        manifest["models"][mspec.name] = {"target_layer": layer, "checkpoint": meta}
        log(f"{mspec.name}: fp32 host accuracy {meta['host_fp32_accuracy']:.4f} ({'trained now' if meta['trained_now'] else 'cached checkpoint'})")
        mvariants: list[Variant] = []
        for fmt in cfg.export.formats:
            exporter = EXPORTERS.get(fmt)()
            for precision in cfg.export.precisions:
                t_export = time.perf_counter()
                art_cache, built = build_artifact(model, mspec, layer, meta["sha256"], fmt, precision, cfg, data, exporter, stage(f"export {mspec.name} {precision}", 1.0))
                timings[f"export {mspec.name} {fmt} {precision}" + ("" if built else " (cached)")] = time.perf_counter() - t_export
                art_dir = out_dir / "artifacts" / f"{mspec.name}-{fmt}-{precision}"
                if art_dir.exists():
                    shutil.rmtree(art_dir)
                shutil.copytree(art_cache, art_dir)
                art = Artifact.load(art_dir)
                for rspec in cfg.runtimes:
                    if RUNTIME_FORMATS.get(rspec.name, fmt) not in (fmt, "*"):
                        continue
                    if dspec.runtimes and rspec.name not in dspec.runtimes:
                        log(f"skipping {rspec.name} on {dspec.name}: the inventory lists only {', '.join(dspec.runtimes)}")
                        continue
                    v = Variant(mspec.name, fmt, precision, rspec.name, art_dir, art.manifest)
                    step = stage(f"run {v.key}", 1.0)
                    step(f"run {v.key}", 0.0)
                    t_run = time.perf_counter()
                    reused = run_variant_resumable(v, rspec, cfg, data, device, dspec, store, _run_job_key(v, rspec, cfg, data, dspec, meta["sha256"]))
                    timings[f"run {v.key}" + (" (resumed)" if reused else "")] = time.perf_counter() - t_run
                    step(f"run {v.key}", 1.0)
                    if v.error:
                        failed.append({"job": f"run {v.key}", "error": v.error})
                        log(f"[red]FAILED[/red] {v.key}: {v.error.splitlines()[0]}")
                    mvariants.append(v)
        t_cam = time.perf_counter()
        sessions = {v.key: DeviceSession(device, v.artifact_dir, device_job(rspecs[v.runtime], dspec), cfg.bench.timeout_s) for v in mvariants if not v.error}
        explain_key = {"kind": "explain", "model": mspec.name, "weights": meta["sha256"], "device": dspec.name, "data": data.fingerprint, "images": n_img,
                       "explain": cfg.explain.__dict__, "variants": sorted((v.key, v.manifest.get("sha256"), device_job(rspecs[v.runtime], dspec)) for v in mvariants if not v.error)}
        ex = explain_model(model, layer, mvariants, cfg, data, n_img, device.name, sessions, stage(f"CAMs {mspec.name}", 1.0), log, data.mean, data.std, store, explain_key)
        all_rows += ex.rows
        all_gaps += ex.gaps
        failed += ex.failed
        wsol += ex.wsol
        histograms += ex.histograms
        dissimilar += ex.dissimilar
        grids[mspec.name] = ex.grid
        timings[f"CAMs + metrics {mspec.name}"] = time.perf_counter() - t_cam
        if cfg.lowbit.schemes:
            from edgecam.bench.lowbit import lowbit_study

            t_low = time.perf_counter()
            lowbit += lowbit_study(model, layer, mspec.name, meta["sha256"], cfg, data, out_dir, device, device_job(cfg.runtimes[0], dspec), store, log)
            timings[f"low-bit PACT {mspec.name}"] = time.perf_counter() - t_low
        timings[f"device session calls {mspec.name}"] = float(sum(x.calls for x in sessions.values()))
        for v in mvariants:
            for i, s in enumerate(v.result.get("samples_s", [])):
                latency_rows.append({"model": v.model, "format": v.format, "runtime": v.runtime, "precision": v.precision, "device": device.name, "iteration": i, "batch_size": v.result.get("batch_size"), "latency_ms": s * 1e3})
        variants += mvariants
    results = pd.concat(all_rows, ignore_index=True) if all_rows else pd.DataFrame()
    bench = variant_table(variants, data.test_y, device.name)
    names = [m.name for m in cfg.models]
    summary = summarise(results, names, cfg.explain.bootstrap, cfg.explain.seed)
    gap = pd.concat(all_gaps, ignore_index=True) if all_gaps else pd.DataFrame()
    gap_summary = summarise_gap(gap, names, cfg.explain.bootstrap, cfg.explain.seed)
    _write_csv(pd.DataFrame(wsol), out_dir / "wsol.csv")
    _write_parquet(pd.DataFrame(histograms), out_dir / "activations.parquet")
    write_dissimilar(dissimilar, out_dir)
    write_grid(grids, out_dir)
    if not gap.empty:
        _write_parquet(gap, out_dir / "runtime_gap.parquet")
        _write_csv(gap_summary, out_dir / "runtime_gap.csv")
    _write_parquet(results, out_dir / "results.parquet")
    _write_parquet(pd.DataFrame(latency_rows), out_dir / "latency.parquet")
    _write_csv(bench, out_dir / "bench.csv")
    _write_csv(summary, out_dir / "summary.csv")
    _write_csv(pd.DataFrame(failed, columns=["job", "error"]), out_dir / "failed.csv")
    if lowbit:
        _write_csv(pd.DataFrame(lowbit), out_dir / "lowbit.csv")
    manifest["variants"] = {v.key: {"artifact": str(v.artifact_dir.relative_to(out_dir)), "sha256": v.manifest.get("sha256"), "size_bytes": v.manifest.get("size_bytes"), "runtime": v.result.get("runtime"), "error": v.error} for v in variants}
    manifest["failed"] = [f["job"] for f in failed]
    manifest["jobs"] = {"reused": store.reused, "committed": store.committed}
    manifest["wall_s"] = time.perf_counter() - t_start
    atomic_write_json(out_dir / "manifest.json", manifest)
    shutil.rmtree(out_dir / ".device", ignore_errors=True)
    if hasattr(device, "close"):
        device.close()
    report = None
    try:  # the run's data is already written: a report that fails to render loses nothing
        from edgecam.bench.report import build_report

        report = build_report(out_dir)
    except Exception as exc:  # noqa: BLE001 - reported, and `edgecam report RUN_DIR` can retry
        log(f"[yellow]report.html not written: {type(exc).__name__}: {exc}[/yellow]")
    return {"report": report, "manifest": manifest, "results": results, "bench": bench, "summary": summary, "runtime_gap": gap_summary,
            "wsol": pd.DataFrame(wsol), "failed": failed, "lowbit": pd.DataFrame(lowbit)}


def _write_parquet(df: Any, path: Path) -> None:
    from edgecam.cache import atomic_path

    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def _write_csv(df: Any, path: Path) -> None:
    from edgecam.cache import atomic_path

    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
