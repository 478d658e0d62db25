"""The end-to-end run, as DESIGN.md's data flow: prepare model -> deploy (export, cached) -> measure on the
device -> explain (CAMs + metrics, shard by shard) -> aggregate -> write outputs -> report.

Every stage reads one frozen `RunContext` (`bench/context.py`); each stage lives in its own module:
`prepare.py`, `deploy.py`, `measure.py`, `explain_stage.py`, `aggregate.py`; the run directory's files are
named and written by `outputs.py`, the rows' schema is `results.py`. The run is a set of jobs committed to
`RUN_DIR/jobs` as each finishes (`store.py`): rerunning the same experiment into the same directory (or
`--resume`) reuses them and computes only what is missing; a different experiment there is refused.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from edgecam.bench import outputs as files
from edgecam.bench.context import RunContext, device_fingerprint
from edgecam.bench.deploy import deploy_model
from edgecam.bench.estimate import format_estimate, work_estimate
from edgecam.bench.explain_stage import explain_model
from edgecam.bench.measure import measure
from edgecam.bench.prepare import host_accuracy, package_versions, prepare_model, preflight
from edgecam.bench.variant import Variant
from edgecam.cache import stable_hash
from edgecam.data.spec import load_data
from edgecam.errors import EdgecamError
from edgecam.stages import TAGS, clock, stage

if TYPE_CHECKING:
    from edgecam.bench.aggregate import ExplainOutput
    from edgecam.config import ModelSpec, RunConfig
    from edgecam.devices.inventory import DeviceSpec


@dataclass
class Collected:
    """What outlives one model's stages: rows, aggregates and the variants (no images, no CAMs)."""

    variants: list[Variant] = field(default_factory=list)
    rows: list[Any] = field(default_factory=list)
    gaps: list[Any] = field(default_factory=list)
    wsol: list[dict[str, Any]] = field(default_factory=list)
    histograms: list[dict[str, Any]] = field(default_factory=list)
    dissimilar: list[dict[str, Any]] = field(default_factory=list)
    grids: dict[str, dict[str, Any]] = field(default_factory=dict)
    lowbit: list[dict[str, Any]] = field(default_factory=list)
    saliency_qat: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    device_io: dict[str, int] = field(default_factory=lambda: {"calls": 0, "bytes_sent": 0, "bytes_received": 0, "predict_bytes_sent": 0})  # explain-stage sessions

    def add(self, model: str, ex: "ExplainOutput") -> None:
        """One model's explain stage folded in: its rows, aggregates, failures and device traffic."""
        self.rows += ex.rows
        self.gaps += ex.gaps
        self.failed += ex.failed
        self.wsol += ex.wsol
        self.histograms += ex.histograms
        self.dissimilar += ex.dissimilar
        self.grids[model] = ex.grid
        for k in self.device_io:
            self.device_io[k] += int(getattr(ex, k))


def image_limit(limit: int | None, data_limit: int | None, n_test: int) -> dict[str, Any]:
    """How many test images get CAMs and their metrics, and why: `--limit` (the run's `limit`) over `data.limit`
    (None: the whole test split). `cut` says whether the limit left images out (accuracy still covers them all);
    the manifest records it as `image_limit`."""
    by = "--limit" if limit else "data.limit" if data_limit else None
    images = min(limit or data_limit or n_test, n_test)
    return {"images": images, "available": n_test, "limit": limit or data_limit, "set_by": by, "cut": images < n_test}


def open_run(cfg: "RunConfig", out_dir: Path, limit: int | None, progress: Any, log: Callable[[str], None], device_spec: "DeviceSpec | None",
             inventory: str | Path | None, resume: bool | None, held: contextlib.ExitStack) -> tuple[RunContext, bool]:
    """Check the plan (a model no runtime can run is refused), load and check the data and models (bad input fails
    here, before any work), lock the run directory (released when `held` closes), pin it to this experiment and
    connect the device. Returns the context and whether the run resumes."""
    from edgecam.bench.store import JobStore, pin_run_dir, run_dir_lock
    from edgecam.config import check_plan
    from edgecam.devices.inventory import get_device_spec, open_device

    with stage("setup"):
        dspec = device_spec or get_device_spec(cfg.device, inventory)
        check_plan(cfg, tuple(dspec.runtimes or ()), dspec.name)  # before the data, the training and the exports: a run that would measure nothing
        data = load_data(cfg.data)
        cut = image_limit(limit, cfg.data.limit, data.n_test)
        n_img = cut["images"]
        if cut["cut"]:  # never silent: the images left out are named in the log and the manifest
            log(f"[yellow]using {n_img} of {data.n_test} test images ({cut['set_by']} = {cut['limit']}) for CAMs and their metrics; "
                f"accuracy and agreement cover all {data.n_test}[/yellow]")
        preflight(cfg, data)
        if cfg.saliency_qat.datasets:
            from edgecam.bench.studies import saliency_qat

            saliency_qat.check(cfg.saliency_qat)
    identity = {"config_hash": stable_hash(cfg.to_dict()), "images": n_img, "device": dspec.name, "device_url": dspec.url, "data": data.fingerprint}
    if resume and not (out_dir / "run.json").is_file():  # before the lock creates the directory of a mistyped --resume
        pin_run_dir(out_dir, identity, resume, cfg.to_dict())
    held.enter_context(run_dir_lock(out_dir))
    resumed = pin_run_dir(out_dir, identity, resume, cfg.to_dict())
    store = JobStore(out_dir / files.JOBS)
    if resumed:
        partials = store.clean_partials()  # first: a half-written job's meta.json is not a finished job
        log(f"resuming {out_dir}: {sum(1 for _ in store.root.glob('*/*/meta.json'))} finished job(s) kept, {partials} partial one(s) discarded")
    device = open_device(dspec, local_workdir=str(out_dir / files.DEVICE_SCRATCH))
    return RunContext(cfg, data, dspec, device, store, out_dir, n_img, log, progress), resumed


def run_model(ctx: RunContext, mspec: "ModelSpec", manifest: dict[str, Any], acc: Collected) -> None:
    """Every stage of one model: prepare, deploy, measure each variant, explain, and the low-bit study."""
    if mspec.is_files:
        from edgecam.bench.model_files import deploy_file_model, prepare_file_model

        with ctx.step(f"load {mspec.name} (its float reference)", "setup"):
            model, layer, meta = prepare_file_model(mspec, ctx.data)
            meta["host_fp32_accuracy"] = host_accuracy(model, ctx.data) if model is not None else float("nan")
    else:
        given = mspec.pretrained or bool(mspec.weights)  # nothing trains: the step is the fp32 accuracy pass
        with ctx.step(prepare_label(mspec, trained_now=not given), "setup") as note:
            model, layer, meta = prepare_model(mspec, ctx.cfg, ctx.data, None if given else ctx.bar(f"train {mspec.name}"))
            note["label"] = prepare_label(mspec, meta["trained_now"])
    manifest["models"][mspec.name] = {"target_layer": layer, "checkpoint": meta}
    origin = "trained now" if meta["trained_now"] else meta["source"] if mspec.pretrained or mspec.weights or mspec.is_files else "cached checkpoint"
    ctx.log(f"{mspec.name}: fp32 host accuracy {meta['host_fp32_accuracy']:.4f} ({origin})")
    variants = deploy_file_model(ctx, mspec) if mspec.is_files else deploy_model(ctx, mspec, model, layer, meta["sha256"])
    mixed: list[Variant] = []
    if ctx.cfg.sensitivity.enabled and not mspec.is_files and mspec.name == (ctx.cfg.sensitivity.model or ctx.cfg.models[0].name):
        from edgecam.bench.studies.sensitivity import sensitivity_stage

        with ctx.step(f"sensitivity {mspec.name}", "other"):
            mixed, manifest["sensitivity"] = sensitivity_stage(ctx, mspec, variants, meta["sha256"])
        variants += mixed
    measure_variants(ctx, variants, meta["sha256"], acc)
    if mixed and mixed[0].ok:
        _sensitivity_on_device(ctx, mspec.name, mixed[0], meta["sha256"], manifest, acc)
    estimate = work_estimate(variants, ctx.cfg.explain, ctx.n_img, tuple(ctx.data.input_shape))
    manifest.setdefault("work_estimate", {})[mspec.name] = estimate
    if estimate:
        ctx.log(format_estimate(estimate) if ctx.verbose else estimate_line(mspec.name, estimate))
    with ctx.step(f"CAMs + metrics {mspec.name}", "other"):
        ex = explain_model(ctx, model, layer, variants, meta["sha256"])
    acc.add(mspec.name, ex)
    for v in variants:
        if v.nonfinite_outputs:  # flagged, never read as class 0: the count is in bench.csv, the tables and the report
            ctx.log(f"[yellow]{v.key}: the device's outputs were NaN / Inf on {v.nonfinite_outputs} of {ctx.data.n_test} test images: no prediction and "
                    "NaN metrics for them; accuracy and agreement cover the finite ones only[/yellow]")
    ctx.timings[f"device session calls {mspec.name}"] = float(ex.calls)
    manifest.setdefault("explain_overlapped_device_s", {})[mspec.name] = ex.overlapped_device_s
    manifest.setdefault("explain_estimates", {})[mspec.name] = ex.estimates
    if ctx.cfg.lowbit.schemes and not mspec.is_files:
        from edgecam.bench.studies.lowbit import lowbit_study

        with ctx.step(f"low-bit PACT {mspec.name}", "other"):
            acc.lowbit += lowbit_study(ctx, model, layer, mspec.name, meta["sha256"])
    acc.variants += variants


def prepare_label(mspec: "ModelSpec", trained_now: bool) -> str:
    """The prepare step's name in the manifest's `stages_s`: "train M" only when it trained the model; else the
    host's fp32 accuracy pass of the packaged weights, the weights file or the cached checkpoint."""
    if trained_now:
        return f"train {mspec.name}"
    origin = "pretrained" if mspec.pretrained else "weights file" if mspec.weights else "cached checkpoint"
    return f"fp32 accuracy {mspec.name} ({origin})"


def estimate_line(model: str, rows: list[dict[str, Any]]) -> str:
    """The explain stage's work estimate in one line (`format_estimate`'s per-variant lines: --verbose)."""
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    forwards = sum(int(r["device_forwards"]) for r in rows)
    pushed = sum(int(r["bytes_pushed"]) for r in rows)
    secs = sum(float(r["seconds_at_p50"]) for r in rows)
    eta = "unknown device time" if secs != secs else f"~{secs:.0f} s of device time at p50" if secs < 120 else f"~{secs / 60:.1f} min of device time at p50"
    return (f"{model}: explain stage work {forwards:,} device forwards over {len(variants)} variant(s), {pushed / 2**20:,.1f} MiB to push, {eta} "
            "(per variant: --verbose)")


def measure_variants(ctx: RunContext, variants: list[Variant], ckpt_sha: str, acc: Collected) -> None:
    """The timing and memory passes of each variant on the device; a failed one is logged and recorded."""
    rspecs = {r.name: r for r in ctx.cfg.runtimes}
    for v in variants:
        bar = ctx.bar(f"run {v.key}")
        bar(f"run {v.key}", 0.0)
        with ctx.step(f"run {v.key}", "device") as note:
            note["suffix"] = " (resumed)" if measure(ctx, v, rspecs[v.runtime], ckpt_sha) else ""
        bar(f"run {v.key}", 1.0)
        if v.error:
            acc.failed.append({"job": f"run {v.key}", "error": v.error})
            ctx.log(f"[red]FAILED[/red] {v.key}: {v.error.splitlines()[0]}")


def _sensitivity_on_device(ctx: RunContext, model: str, mixed: Variant, ckpt_sha: str, manifest: dict[str, Any], acc: Collected) -> None:
    """The sensitivity plan's mixed-precision variant on the device against its host simulation."""
    from edgecam.bench.studies.sensitivity import host_device_agreement

    try:
        with ctx.step(f"sensitivity {model}: host simulation vs device", "device"):
            manifest["sensitivity"]["host_vs_device"] = agree = host_device_agreement(ctx, mixed, ckpt_sha)
        ctx.log(f"sensitivity {model}: {mixed.key} CAMs on the device vs host simulation: CC {agree['device_vs_host_cc']:.4f} "
                f"(min {agree['device_vs_host_cc_min']:.4f}), top-1 agreement {agree['device_vs_host_top1_agreement']:.4f} on {agree['images']} ranking images")
    except (EdgecamError, OSError, TimeoutError) as exc:
        acc.failed.append({"job": f"sensitivity {model} host vs device", "error": f"{type(exc).__name__}: {exc}"})


def latency_rows(variants: list[Variant], device: str, emulated: bool = False) -> list[dict[str, Any]]:
    """latency.parquet: one row per timed iteration of each variant (`device_emulated`: an emulator's time)."""
    return [{"model": v.model, "format": v.format, "runtime": v.runtime, "precision": v.precision, "device": device, "device_emulated": emulated, "iteration": i,
             "batch_size": v.result.get("batch_size"), "latency_ms": s * 1e3} for v in variants if v.ok for i, s in enumerate(v.result.get("samples_s", []))]


def write_outputs(ctx: RunContext, acc: Collected) -> dict[str, Any]:
    """Assemble the run's tables from what the stages collected and write every run-directory file."""
    import pandas as pd

    from edgecam.bench.results import faithfulness_subset, summarise, summarise_gap, variant_table

    ex = ctx.cfg.explain
    n_faith = min(ctx.n_img, ex.faithfulness_images) if ex.faithfulness else 0  # the images Deletion / Insertion ran on (explain_stage)
    with stage("metrics"):
        names = [m.name for m in ctx.cfg.models]
        results = pd.concat(acc.rows, ignore_index=True) if acc.rows else pd.DataFrame()
        gap = pd.concat(acc.gaps, ignore_index=True) if acc.gaps else pd.DataFrame()
        tables = {
            "results": results, "bench": variant_table(acc.variants, ctx.data.test_y, ctx.device.name).assign(device_emulated=ctx.emulated),
            "summary": summarise(results, names, ctx.cfg.explain.bootstrap, ctx.cfg.explain.seed, faithfulness_subset(ctx.data.test_ids, n_faith)),
            "runtime_gap": summarise_gap(gap, names, ctx.cfg.explain.bootstrap, ctx.cfg.explain.seed),
            "wsol": pd.DataFrame(acc.wsol, columns=["model", "format", "runtime", "precision", "cam_method", "cam_mode", "max_box_acc", "best_threshold", "images"]),
            "lowbit": pd.DataFrame(acc.lowbit),
        }
    if not ctx.data.has_ground_truth:
        ctx.log("[yellow]no ground truth (no box or mask file for any test image): no ground-truth comparisons, WSOL or pointing-game numbers in this run[/yellow]")
    out = ctx.out_dir
    files.write_tables(out, [(files.RESULTS, results), (files.LATENCY, pd.DataFrame(latency_rows(acc.variants, ctx.device.name, ctx.emulated))), (files.BENCH, tables["bench"]),
                             (files.SUMMARY, tables["summary"]), (files.FAILED, pd.DataFrame(acc.failed, columns=["job", "error"]))])
    files.write_tables(out, [(files.WSOL, tables["wsol"]), (files.ACTIVATIONS, pd.DataFrame(acc.histograms))])
    if not gap.empty:
        files.write_tables(out, [(files.RUNTIME_GAP, gap), (files.RUNTIME_GAP_CSV, tables["runtime_gap"])])
    try:  # the figures last: one that fails to draw loses no table, and the run still finishes
        files.write_grid(acc.grids, out)
        files.write_dissimilar(acc.dissimilar, out)
    except Exception as exc:  # noqa: BLE001 - reported; the tables above are written
        ctx.log(f"[yellow]the CAM grid / dissimilar figure was not written: {type(exc).__name__}: {exc}[/yellow]")
    if acc.lowbit:
        files.write_tables(out, [(files.LOWBIT, tables["lowbit"])])
    if acc.saliency_qat:
        from edgecam.bench.studies import saliency_qat

        saliency_qat.write(acc.saliency_qat, out)
        tables["saliency_qat"] = saliency_qat.wide_table(acc.saliency_qat)
    return tables


def run(cfg: "RunConfig", out_dir: Path, limit: int | None = None, progress: Any = None, log: Callable[[str], None] = print, device_spec: "DeviceSpec | None" = None,
        inventory: str | Path | None = None, resume: bool | None = None, verbose: bool = False) -> dict[str, Any]:
    """Run the whole experiment into `out_dir`; returns the manifest and the tables. `progress` is the CLI's
    `RunProgress` or None. The device is `device_spec`, else the config's `device` looked up in the
    inventory (`inventory` file or the default search path); the host prepares artifacts and CAMs, the
    device only runs artifacts. Once the input checks out, the run directory is locked for the rest of the
    run (`store.run_dir_lock`). `verbose`: the log says more (the explain stage's work estimate per variant)."""
    with contextlib.ExitStack() as held:
        return _run(cfg, Path(out_dir), limit, progress, log, device_spec, inventory, resume, held, verbose)


def _run(cfg: "RunConfig", out_dir: Path, limit: int | None, progress: Any, log: Callable[[str], None], device_spec: "DeviceSpec | None",
         inventory: str | Path | None, resume: bool | None, held: contextlib.ExitStack, verbose: bool = False) -> dict[str, Any]:
    from edgecam.devices.agent import probe

    import torch

    t_start = time.perf_counter()
    tags_before, cpu_before = clock().snapshot(), clock().cpu_snapshot()
    torch.set_flush_denormal(True)  # int16 activations sit near denormals; x86 slows ~10x on them
    ctx, resumed = open_run(cfg, out_dir, limit, progress, log, device_spec, inventory, resume, held)
    log(f"device {ctx.dspec.name} ({ctx.dspec.url}): probing")
    acc = Collected()
    with ctx.device:  # closed (SSH connection, adb forward) however the run ends
        with stage("device"):
            device_info = ctx.device.info()
        ctx = replace(ctx, emulated=ctx.dspec.is_emulated(device_info), device_id=device_fingerprint(ctx.dspec, device_info), verbose=verbose)
        if ctx.emulated:
            log(f"[yellow]device {ctx.dspec.name} is emulated ({device_info.get('emulation') or 'inventory: emulated = true'}): its latency is labelled "
                "emulated (not a hardware figure); predictions and CAM fidelity are real[/yellow]")
        manifest: dict[str, Any] = {
            "config": cfg.to_dict(), "config_hash": stable_hash(cfg.to_dict()), "versions": package_versions(), "host": probe(),
            "device": {**device_info, "emulated": ctx.emulated, "inventory": ctx.dspec.public()}, "images": ctx.n_img, "data_fingerprint": ctx.data.fingerprint, "data": ctx.data.source,
            "image_limit": image_limit(limit, cfg.data.limit, ctx.data.n_test),
            "models": {}, "variants": {}, "stages_s": ctx.timings, "resumed": resumed,
        }
        for mspec in cfg.models:
            run_model(ctx, mspec, manifest, acc)
        if cfg.saliency_qat.datasets:
            from edgecam.bench.studies.saliency_qat import saliency_qat_study

            with ctx.step("saliency-assisted QAT study", "other"):
                acc.saliency_qat = saliency_qat_study(ctx)
        tables = write_outputs(ctx, acc)
    manifest["variants"] = {v.key: {"artifact": str(v.artifact_dir.relative_to(out_dir)), "sha256": v.manifest.get("sha256"), "size_bytes": v.manifest.get("size_bytes"),
                                    "runtime": v.result.get("runtime"), "error": v.error, "nonfinite_outputs": v.nonfinite_outputs} for v in acc.variants}
    manifest["failed"] = [f["job"] for f in acc.failed]
    manifest["jobs"] = {"reused": ctx.store.reused, "committed": ctx.store.committed}
    manifest["device_io"] = {**acc.device_io, "images": ctx.n_img}  # what the explain stage's sessions moved (0 for resumed shards)
    manifest["wall_s"] = time.perf_counter() - t_start
    tags = {t: s - tags_before.get(t, 0.0) for t, s in clock().snapshot().items()}
    manifest["stage_tags_s"] = {t: sum(s for k, s in tags.items() if k.split(".")[0] == t) for t in TAGS} | {"untagged": manifest["wall_s"] - sum(tags.values())}
    manifest["stage_detail_s"] = {k: s for k, s in sorted(tags.items()) if s > 0}  # the sub-tags too ("cam.reference", ...)
    manifest["stage_detail_cpu_s"] = {k: s - cpu_before.get(k, 0.0) for k, s in sorted(clock().cpu_snapshot().items()) if s - cpu_before.get(k, 0.0) > 0}
    manifest["stages_cpu_s"] = ctx.cpu_timings
    files.write_json(out_dir / files.MANIFEST, manifest)  # RunDirWriteError naming it when the disk refuses
    shutil.rmtree(out_dir / files.DEVICE_SCRATCH, ignore_errors=True)
    report = None
    try:  # the run's data is already written: a report that fails to render loses nothing
        from edgecam.bench.report import build_report

        report = build_report(out_dir)
    except Exception as exc:  # noqa: BLE001 - reported, and `edgecam report RUN_DIR` can retry
        log(f"[yellow]report.html not written: {type(exc).__name__}: {exc}[/yellow]")
    return {"report": report, "manifest": manifest, "results": tables["results"], "bench": tables["bench"], "summary": tables["summary"],
            "runtime_gap": tables["runtime_gap"], "wsol": tables["wsol"], "failed": acc.failed, "lowbit": tables["lowbit"],
            "saliency_qat": tables.get("saliency_qat"), "sensitivity": manifest.get("sensitivity"),
            "sensitivity_ranking": files.read_table(out_dir, files.SENSITIVITY), "sensitivity_plan": files.read_table(out_dir, files.SENSITIVITY_PLAN)}
