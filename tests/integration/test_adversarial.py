"""A hostile device through a whole sweep: a board whose probe injects HTML, huge numbers, wrong types and
another identity, and whose agent answers jobs with strings for latencies, NaN arrays, outputs of the wrong
shape and hangs. The run completes; every bad answer is a failed job or a flagged row; the report holds no
unescaped value and the device keeps its inventory name."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from edgecam.devices.base import RunResult
from edgecam.devices.local import LocalDevice

SCRIPT = "<script>alert('pwned')</script>"
PROBE = {"name": "spoofed", "kind": "ssh", "arch": f"aarch64{SCRIPT}", "cores": SCRIPT, "ram_bytes": 10**40, "cpu": "<img src=x onerror=alert(1)>",
         "os": "Debian", "python": "3.11.2", "runtimes": {"onnxruntime": "1.32.0", "ai_edge_litert": SCRIPT}, "emulated": "no", "protocol": 1}


class _Tampered:
    """A persistent session whose answers a hostile agent rewrote (everything else passes through)."""

    def __init__(self, inner: Any, how: str) -> None:
        self.inner, self.how, self.calls = inner, how, 0

    def forward(self, x: np.ndarray, outputs: Any) -> dict[str, Any]:
        out = self.inner.forward(x, outputs)
        self.calls += 1
        if self.how == "nan":
            return {k: np.full_like(v, np.nan) for k, v in out.items()}
        if self.how == "shape" and self.calls == 2:  # the second shard's answer: one class short
            return {k: (v[:, :-1] if k == "logits" else v) for k, v in out.items()}
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class HostileDevice(LocalDevice):
    """This machine, but answering as a hostile board would: see the module docstring. Per artifact:
    onnx int8 times in strings, onnx int16 answers NaN arrays, tflite int8 answers logits of another shape
    for the second explain shard,
    tflite int16 hangs in its memory pass; fp32 is honest (the reference)."""

    def run(self, argv: list[str], timeout: float | None = None) -> RunResult:
        if argv[-1:] == ["probe"]:
            return RunResult(0, json.dumps(PROBE) + "\n", "", 0.0)
        return super().run(argv, timeout)

    def run_job(self, artifact_dir: Path, inputs: np.ndarray, job: dict[str, Any], timeout: float | None = 600, extra: Any = None) -> Any:
        name = Path(artifact_dir).name
        if name.endswith("onnx-int8") and job.get("mode") == "run":
            return {"ok": True, "samples_s": ["fast"] * int(job["iterations"]), "init_s": "<b>"}, {}
        if name.endswith("tflite-int16") and job.get("mode") == "memory":  # an agent that never answers: the job's timeout ends it
            self.run([sys.executable, "-c", "import time; time.sleep(120)"], timeout=min(3.0, timeout or 3.0))
        return super().run_job(artifact_dir, inputs, job, timeout, extra)

    def session(self, artifact_dir: Any, job: dict[str, Any], timeout: float | None = 600) -> Any:
        name = Path(artifact_dir).name
        inner = super().session(artifact_dir, job, timeout)
        return _Tampered(inner, "nan" if name.endswith("onnx-int16") else "shape" if name.endswith("tflite-int8") else "")


def test_a_hostile_device_cannot_break_the_run_or_the_report(trained_tinycnn: Any, tflite_tinycnn: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgecam.bench import outputs as files
    from edgecam.bench.sweep import run
    from edgecam.config import BenchSpec, RuntimeSpec
    from edgecam.devices import inventory
    from edgecam.devices.inventory import DeviceSpec

    monkeypatch.setattr(inventory, "open_device", lambda spec, local_workdir=None: HostileDevice(workdir=local_workdir, name=spec.name))
    cfg = trained_tinycnn.cfg
    cfg = cfg.replace(data=dataclasses.replace(cfg.data, limit=8), export=dataclasses.replace(cfg.export, formats=("onnx", "tflite"), precisions=("fp32", "int16", "int8")),
                      runtimes=(RuntimeSpec("onnxruntime", threads=1), RuntimeSpec("litert", threads=1)), bench=BenchSpec(warmup=1, iterations=5, memory=True, timeout_s=3),
                      explain=dataclasses.replace(cfg.explain, methods=("gradcampp", "eigencam"), faithfulness=False, shard_size=4, bootstrap=100))
    out = run(cfg, tmp_path / "run", log=lambda m: None, device_spec=DeviceSpec("hostile", url="local"))
    failed = {f["job"]: f["error"] for f in out["failed"]}
    bench = out["bench"].set_index(["format", "precision"])
    # the variants whose device answered garbage or hung are failed jobs, with the cause
    assert "timing answer is unusable" in bench.loc[("onnx", "int8"), "error"]
    assert "timed out" in bench.loc[("tflite", "int16"), "error"]
    assert bench.loc[("onnx", "fp32"), "ok"] and bench.loc[("tflite", "fp32"), "ok"] and bench.loc[("onnx", "int16"), "ok"]
    # wrong-shaped logits fail their explain shard (images 4-7), and only it
    assert [job for job, err in failed.items() if job.startswith("explain") and "logits of shape (9,) per input, expected (10,)" in err] == ["explain tinycnn images 4-7"], failed
    # NaN answers are flagged rows, not crashes; the first shard's rows are all there
    results = out["results"]
    assert results["image_id"].nunique() == 4
    nan_rows = results[(results["format"] == "onnx") & (results["precision"] == "int16")]
    assert len(nan_rows) == 4 * 2 and (~nan_rows["output_finite"]).all() and nan_rows["cc_fp32"].isna().all()
    honest = results[results["precision"] == "fp32"]
    assert honest["output_finite"].all() and honest["cc_gt"].notna().any()
    # the device keeps its inventory identity; its injected facts are dropped, never rendered
    manifest = json.loads((tmp_path / "run" / files.MANIFEST).read_text())
    assert manifest["device"]["name"] == "hostile" and manifest["device"]["kind"] == "local"
    assert set(manifest["device"]["probe_rejected"]) == {"name", "kind", "cores", "ram_bytes", "emulated"}  # wrong types / sizes / identity
    assert manifest["device"]["arch"].endswith(SCRIPT)  # a string of the right type is kept as data: escaping is the report's job
    report = (tmp_path / "run" / files.REPORT).read_text()
    assert SCRIPT not in report and "<img src=x" not in report
    assert "&lt;script&gt;alert(" in report  # there, escaped (device facts in the header and the manifest)
    assert "Content-Security-Policy" in report
    assert pd.read_parquet(tmp_path / "run" / files.RESULTS).shape[0] == len(results)


def _folder_config(folder: Path, **explain: Any) -> Any:
    from edgecam.config import BenchSpec, DataSpec, ExplainSpec, ModelSpec, RunConfig, RuntimeSpec
    from edgecam.models.train import TrainSpec

    cfg = RunConfig(
        name="hostile-names",
        data=DataSpec(name="image-folder", path=str(folder), resize=40, crop=32, test_fraction=0.5, limit=None),
        train=TrainSpec(epochs=1, batch_size=4),
        models=(ModelSpec("tinycnn"),),
        runtimes=(RuntimeSpec("onnxruntime", threads=1),),
        bench=BenchSpec(warmup=1, iterations=2, memory=False),
        explain=ExplainSpec(methods=("gradcampp",), faithfulness=False, emd_size=8, bootstrap=100, **explain),
    )
    return cfg.replace(export=dataclasses.replace(cfg.export, precisions=("fp32", "int8"), qat_epochs=0, calib_samples=4))


def test_names_that_are_mathtext_or_html_complete_the_run_and_the_report(session_cache: Path, tmp_path: Path) -> None:
    """Image ids become matplotlib titles and report cells: `$\\x$`, `$_$` or `<script>` in a file name (and a
    tampered grid.json) neither stop the run before its tables (mathtext raised in savefig) nor reach the
    report unescaped."""
    from edgecam.bench.report import build_report
    from edgecam.bench.sweep import run
    from edgecam.data.image_folder import write_skimage_folder

    folder = write_skimage_folder(tmp_path / "photos", layout="tree", boxes=False).images
    hostile = ["$\\x$", "$_$", "a$^{", SCRIPT]
    for i, path in enumerate(sorted(p for p in folder.rglob("*") if p.is_file())):
        path.rename(path.with_name(f"{hostile[i % len(hostile)]} {i}{path.suffix}".replace("/", "_")))
    out = run(_folder_config(folder), tmp_path / "run", log=lambda m: None)
    assert not out["failed"] and len(out["results"]) > 0
    ids = set(out["results"]["image_id"])
    assert any("$\\x$" in i for i in ids) and any("$_$" in i for i in ids)
    for name in ("results.parquet", "summary.csv", "manifest.json", "dissimilar.png", "report.html"):
        assert (tmp_path / "run" / name).is_file(), name
    report = (tmp_path / "run" / "report.html").read_text()
    assert SCRIPT not in report

    grid = tmp_path / "run" / "grid.json"
    index = json.loads(grid.read_text())
    for entry in index.values():  # a shared or tampered run directory
        entry["kinds"] = [SCRIPT] * len(entry["kinds"])
        entry["ids"] = [SCRIPT] * len(entry["ids"])
    grid.write_text(json.dumps(index))
    html = build_report(tmp_path / "run").read_text()
    assert SCRIPT not in html and "&lt;script&gt;" in html


def test_a_run_where_every_variant_failed_still_writes_its_tables_and_report(trained_tinycnn: Any, tmp_path: Path) -> None:
    """When nothing succeeded the report is needed most: an empty summary is an empty table, not a crash."""
    from edgecam.bench.sweep import run
    from edgecam.config import BenchSpec, RuntimeSpec

    cfg = trained_tinycnn.cfg
    cfg = cfg.replace(data=dataclasses.replace(cfg.data, limit=6), export=dataclasses.replace(cfg.export, precisions=("fp32", "int8")),
                      runtimes=(RuntimeSpec("fault", threads=1, settings={"fault": "raise"}),), bench=BenchSpec(warmup=1, iterations=2, memory=False))
    out = run(cfg, tmp_path / "run", log=lambda m: None)
    assert len(out["failed"]) == 2 and all("injected failure" in f["error"] for f in out["failed"])
    report = (tmp_path / "run" / "report.html").read_text()
    assert "injected failure" in report
    for name in ("failed.csv", "bench.csv", "summary.csv", "manifest.json"):
        assert (tmp_path / "run" / name).is_file(), name


def test_two_runs_into_one_directory_the_second_is_refused_at_once(trained_tinycnn: Any, session_cache: Path, tmp_path: Path) -> None:
    """Two real `edgecam run`s into one --out: the second is refused with the first one's pid while the first
    runs, and the first completes untouched (before the lock they corrupted each other's jobs)."""
    import os
    import subprocess
    import time

    cfg = tmp_path / "x.toml"
    cfg.write_text('name = "twice"\n[export]\nprecisions = ["fp32"]\n[[models]]\nname = "tinycnn"\n[[runtimes]]\nname = "onnxruntime"\nthreads = 1\n'
                   '[bench]\nwarmup = 1\niterations = 200\nmemory = false\n[explain]\nmethods = ["gradcampp"]\nfaithfulness = false\nbootstrap = 100\n')
    out = tmp_path / "run"
    env = {**os.environ, "EDGECAM_CACHE_DIR": str(session_cache)}
    argv = [sys.executable, "-m", "edgecam.cli", "run", str(cfg), "--out", str(out), "--limit", "12"]
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not (out / "run.json").is_file() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert first.poll() is None, first.communicate()[0][-2000:]
        second = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
        assert second.returncode == 2 and f"pid {first.pid}" in second.stderr, second.stderr[-2000:]
        text = first.communicate(timeout=600)[0]
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, text[-3000:]
    assert len(pd.read_parquet(out / "results.parquet")) == 12 and not (out / "failed.csv").read_text().strip().count("\n")
