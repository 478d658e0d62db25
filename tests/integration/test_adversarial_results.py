"""Results that cannot be mistaken (issue 36): whole runs against inputs that used to give plausible-looking numbers
with exit 0. Each case ends refused before any work or as a clearly flagged result, never a silent one:

- a device answering NaN / Inf outputs: no prediction and NaN metrics for those images, counted in bench.csv
  (`nonfinite_outputs`), the terminal's table, the manifest and the report; accuracy over finite outputs only;
- a config whose formats no runtime runs: refused before the data, training or export, naming formats and runtimes;
- a shard whose histogram could not be written (ENOSPC) or was stored without it: never reused incomplete, so
  the resumed run's activation histograms equal a clean run's;
- `data.limit`: unset means every test image; a limit that cuts the split is logged and in the manifest.
"""

from __future__ import annotations

import dataclasses
import errno
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from edgecam.devices.local import LocalDevice


def _poisoned(x: np.ndarray) -> np.ndarray:
    """Which inputs the partly broken variant answers NaN for: a function of the image alone (about a third),
    so the test knows them whatever batches the run sends."""
    first = np.ascontiguousarray(x.reshape(len(x), -1)[:, :1]).view(np.int32)[:, 0]
    return (first % 3) == 0


class _NanSession:
    """A persistent session that answers NaN: every output of every input (`how="all"`), or the logits and
    features of the `_poisoned` inputs only (`how="some"`)."""

    def __init__(self, inner: Any, how: str) -> None:
        self.inner, self.how = inner, how

    def forward(self, x: np.ndarray, outputs: Any) -> dict[str, Any]:
        out = self.inner.forward(x, outputs)
        if self.how == "all":
            return {k: np.full_like(v, np.nan) for k, v in out.items()}
        bad = _poisoned(np.asarray(x))
        fixed = {}
        for k, v in out.items():
            v = np.array(v, copy=True)
            v[bad] = np.inf if k == "logits" else np.nan
            fixed[k] = v
        return fixed

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class NanDevice(LocalDevice):
    """This machine, but its int8 artifact's session answers all-NaN and its int16's NaN / Inf for a third of the
    images; fp32 is honest."""

    def session(self, artifact_dir: Any, job: dict[str, Any], timeout: float | None = 600) -> Any:
        inner = super().session(artifact_dir, job, timeout)
        name = Path(artifact_dir).name
        return _NanSession(inner, "all") if name.endswith("int8") else _NanSession(inner, "some") if name.endswith("int16") else inner


def _small(cfg: Any, precisions: tuple[str, ...], limit: int = 8, shard_size: int = 4) -> Any:
    from edgecam.config import BenchSpec, RuntimeSpec

    return cfg.replace(data=dataclasses.replace(cfg.data, limit=limit), export=dataclasses.replace(cfg.export, precisions=precisions),
                       runtimes=(RuntimeSpec("onnxruntime", threads=1),), bench=BenchSpec(warmup=1, iterations=3, memory=False),
                       explain=dataclasses.replace(cfg.explain, methods=("gradcampp",), faithfulness=False, shard_size=shard_size, bootstrap=100, emd_size=0))


def test_nan_outputs_give_nan_metrics_counted_everywhere_never_class_0(trained_tinycnn: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    from edgecam.bench import outputs as files
    from edgecam.bench.sweep import run
    from edgecam.cli import print_summary
    from edgecam.devices import inventory
    from edgecam.devices.inventory import DeviceSpec

    monkeypatch.setattr(inventory, "open_device", lambda spec, local_workdir=None: NanDevice(workdir=local_workdir, name=spec.name))
    cfg = _small(trained_tinycnn.cfg, ("fp32", "int16", "int8"))
    logs: list[str] = []
    out = run(cfg, tmp_path / "run", log=logs.append, device_spec=DeviceSpec("nan-board", url="local"))
    data = trained_tinycnn.data
    n_test = data.n_test
    bad = _poisoned(data.test_shard(0, n_test).x)
    assert 0 < bad.sum() < n_test

    bench = pd.read_csv(tmp_path / "run" / files.BENCH).set_index("precision")
    assert bench["ok"].all()  # a flagged result, not a failed job
    # all-NaN int8: before, accuracy 0.10 (argmax 0 = class 0) and agreement 1.0 (fp32's... and its own class 0)
    assert bench.loc["int8", "nonfinite_outputs"] == n_test and bench.loc["int8", "images"] == 0
    assert np.isnan(bench.loc["int8", "accuracy"]) and np.isnan(bench.loc["int8", "agrees_fp32"])
    # int16: the poisoned third counted and left out; accuracy over the finite rest, agreement over both-finite images
    assert bench.loc["int16", "nonfinite_outputs"] == bad.sum() and bench.loc["int16", "images"] == n_test - bad.sum()
    assert 0.3 < bench.loc["int16", "accuracy"] <= 1.0 and bench.loc["int16", "agrees_fp32"] > 0.9
    assert bench.loc["fp32", "nonfinite_outputs"] == 0 and bench.loc["fp32", "images"] == n_test

    rows = pd.read_parquet(tmp_path / "run" / files.RESULTS)
    dead = rows[rows["precision"] == "int8"]
    assert len(dead) == 8 and (~dead["output_finite"]).all() and dead["pred"].isna().all()
    assert dead["top1_correct"].isna().all() and dead["agrees_fp32"].isna().all()
    for col in ("sim_fp32", "cc_fp32", "kld_fp32", "rmse_fp32", "sim_sal", "cc_sal", "act_entropy", "cc_host_ref"):
        assert dead[col].isna().all(), col
    some = rows[rows["precision"] == "int16"].set_index("image_id")
    flagged = ~some["output_finite"]
    assert flagged.sum() == bad[:8].sum() and some.loc[flagged, "pred"].isna().all() and some.loc[flagged, "cc_fp32"].isna().all()
    assert some.loc[~flagged, "pred"].notna().all() and some.loc[~flagged, "cc_fp32"].notna().all()
    summary = out["summary"]
    cc_int8 = summary[(summary["precision"] == "int8") & (summary["metric"] == "cc") & (summary["reference"] == "fp32")].iloc[0]
    assert np.isnan(cc_int8["tinycnn_mean"]) and cc_int8["tinycnn_nan"] == 8  # no mean computed from garbage; the NaNs counted

    # said in the log, the manifest, the terminal's table and the report
    assert any("tinycnn-onnx-int8-onnxruntime: the device's outputs were NaN / Inf on " + str(n_test) in m for m in logs), logs
    manifest = json.loads((tmp_path / "run" / files.MANIFEST).read_text())
    assert manifest["variants"]["tinycnn-onnx-int8-onnxruntime"]["nonfinite_outputs"] == n_test
    console = Console(record=True, width=220, color_system=None)
    print_summary(console, out, ["tinycnn"])
    text = console.export_text()
    int8_line = next(line for line in text.splitlines() if line.startswith("│ tinycnn") and "│ int8 " in line)  # the performance table's row
    assert "non-finite" in text and str(n_test) in int8_line and "n/a" in int8_line and "0.1" not in int8_line.split("│")[4]
    report = (tmp_path / "run" / files.REPORT).read_text()
    assert 'id="nonfinite"' in report and "Non-finite outputs" in report and f"<td>{n_test}</td>" in report


def test_a_config_that_would_measure_nothing_is_refused_before_any_work(trained_tinycnn: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from edgecam.bench import sweep
    from edgecam.cli import main
    from edgecam.config import RuntimeSpec
    from edgecam.devices.inventory import DeviceSpec
    from edgecam.errors import ConfigError

    def no_work(*a: Any, **k: Any) -> Any:
        raise AssertionError("the run started work (data, training or export) for a config that measures nothing")

    monkeypatch.setattr(sweep, "load_data", no_work)
    monkeypatch.setattr(sweep, "prepare_model", no_work)
    monkeypatch.setattr(sweep, "deploy_model", no_work)
    base = _small(trained_tinycnn.cfg, ("fp32",))
    for fmt in ("tensorrt", "tflite"):  # the audit's N39: 49 s of export, then 0 variants, exit 0
        cfg = base.replace(export=dataclasses.replace(base.export, formats=(fmt,)))
        with pytest.raises(ConfigError) as err:
            sweep.run(cfg, tmp_path / fmt, log=lambda m: None)
        msg = str(err.value)
        assert f"formats (export.formats) are {fmt}" in msg and "(onnxruntime)" in msg and "onnxruntime runs onnx" in msg and "litert runs tflite" in msg, msg
        assert not (tmp_path / fmt).exists()
    # the device's inventory decides too: ONNX and ONNX Runtime configured, but the board has only LiteRT
    two = base.replace(runtimes=(RuntimeSpec("onnxruntime", threads=1), RuntimeSpec("litert", threads=1)))
    with pytest.raises(ConfigError, match=r"device 'phone' has only litert"):
        sweep.run(two, tmp_path / "phone", log=lambda m: None, device_spec=DeviceSpec("phone", url="local", runtimes=("litert",)))
    # the CLI: a named error, exit 2, nothing created
    toml = tmp_path / "trt.toml"
    toml.write_text('name = "trt"\n[export]\nformats = ["tensorrt"]\nprecisions = ["fp32"]\n[[models]]\nname = "tinycnn"\n[[runtimes]]\nname = "onnxruntime"\n')
    assert main(["run", str(toml), "--out", str(tmp_path / "cli")]) == 2
    assert "nothing to measure for model 'tinycnn'" in capsys.readouterr().err and not (tmp_path / "cli").exists()


def _counts(run_dir: Path) -> pd.DataFrame:
    acts = pd.read_parquet(run_dir / "activations.parquet")
    return acts.groupby(["precision", "bin_lo"])["count"].sum().reset_index().sort_values(["precision", "bin_lo"]).reset_index(drop=True)


def _resume_equals(ref: Path, out: Path, cfg: Any) -> dict[str, Any]:
    from edgecam.bench.sweep import run

    got = run(cfg, out, log=lambda m: None)
    assert not got["failed"], got["failed"]
    pd.testing.assert_frame_equal(_counts(ref), _counts(out))
    key = ["precision", "image_id", "cam_method"]
    a, b = (pd.read_parquet(d / "results.parquet").sort_values(key).reset_index(drop=True) for d in (ref, out))
    pd.testing.assert_frame_equal(a, b)
    return got["manifest"]


def test_a_shard_is_reused_only_when_it_holds_every_part(trained_tinycnn: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """N55: the disk filled while shard 0 was stored, so shard 1 was computed without histogram edges, stored without
    its histogram and reused: activations.parquet counted 36864 of 61440 values. Now such a shard is not stored and a
    stored one that lacks a part is redone: the resumed run's histograms equal a clean run's."""
    from edgecam.bench.aggregate import ShardOutput
    from edgecam.bench.store import Job, JobStore
    from edgecam.bench.sweep import run

    cfg = _small(trained_tinycnn.cfg, ("fp32", "int8"), limit=8, shard_size=4)
    ref = tmp_path / "ref"
    clean = run(cfg, ref, log=lambda m: None)
    assert not clean["failed"] and clean["manifest"]["jobs"]["committed"] > 0

    # 1. the first explain shard's write fails with ENOSPC, once
    put, failed_once = JobStore.put, []

    def full_once(self: JobStore, kind: str, key: str, job: Job) -> None:
        if kind == "explain" and not failed_once:
            failed_once.append(key)
            raise OSError(errno.ENOSPC, "No space left on device")
        put(self, kind, key, job)

    monkeypatch.setattr(JobStore, "put", full_once)
    out = tmp_path / "run"
    logs: list[str] = []
    first = run(cfg, out, log=logs.append)
    monkeypatch.setattr(JobStore, "put", put)
    failed = {f["job"]: f["error"] for f in first["failed"]}
    assert "No space left on device" in failed["explain tinycnn images 0-3"]
    assert "incomplete shard, not stored" in failed["explain tinycnn images 4-7"] and "hist:" in failed["explain tinycnn images 4-7"]
    assert any("images 4-7: incomplete shard" in m for m in logs)
    assert len(list((out / "jobs" / "explain").glob("*/meta.json"))) == 0  # neither shard stored: both redone below
    _resume_equals(ref, out, cfg)

    # 2. a stored shard whose record is consistent (checksums and all) but that lacks its histogram, as the old
    # commit left it; and one whose record lists a histogram that is not there
    store = JobStore(out / "jobs")
    later = [d for d in sorted((out / "jobs" / "explain").iterdir()) if not json.loads((d / "meta.json").read_text())["meta"]["edges"]]  # not shard 0
    assert len(later) == 1
    key = later[0].name
    for lying in (False, True):
        job = store.get("explain", key, count=False)
        assert job is not None and "parts" in job.meta and any(p.startswith("hist:") for p in job.meta["parts"])
        part = ShardOutput.from_job(job)
        listed = sorted(part.parts())
        part.hist = {}
        stripped = part.to_job(listed if lying else None)
        store.put("explain", key, stripped)
        assert store.get("explain", key, count=False) is not None  # the store's checksums accept it: only the parts check can tell
        manifest = _resume_equals(ref, out, cfg)
        assert manifest["jobs"]["committed"] == 1  # that shard, redone; everything else reused


def test_data_limit_unset_means_every_image_and_a_cut_is_said(trained_tinycnn: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    from edgecam.bench.sweep import image_limit, run
    from edgecam.config import load_config
    from edgecam.data.image_folder import index_image_folder, write_skimage_folder

    toml = tmp_path / "x.toml"
    toml.write_text('name = "x"\n[data]\nname = "digits-clutter"\n[[models]]\nname = "tinycnn"\n')
    assert load_config(toml).data.limit is None  # TOML cannot say "no limit": unset is it
    assert image_limit(None, None, 900) == {"images": 900, "available": 900, "limit": None, "set_by": None, "cut": False}
    assert image_limit(None, 200, 900)["cut"] and image_limit(12, 200, 900) == {"images": 12, "available": 900, "limit": 12, "set_by": "--limit", "cut": True}

    # an image folder cut by a limit says so (log record and source), uncut it keeps every image
    folder = write_skimage_folder(tmp_path / "photos", layout="tree", boxes=False).images
    whole = index_image_folder(folder)
    with caplog.at_level("WARNING"):
        cut = index_image_folder(folder, limit=3)
    assert len(cut) == 3 and cut.available == len(whole) and whole.available is None
    assert f"using 3 of {len(whole)} images (data.limit = 3)" in caplog.text

    # a whole run cut by data.limit: one log line, and the manifest records it
    cfg = _small(trained_tinycnn.cfg, ("fp32",), limit=4)
    logs: list[str] = []
    out = run(cfg, tmp_path / "run", log=logs.append)
    n_test = trained_tinycnn.data.n_test
    assert [m for m in logs if m.startswith("[yellow]using 4 of")] == [
        f"[yellow]using 4 of {n_test} test images (data.limit = 4) for CAMs and their metrics; accuracy and agreement cover all {n_test}[/yellow]"]
    assert out["manifest"]["image_limit"] == {"images": 4, "available": n_test, "limit": 4, "set_by": "data.limit", "cut": True}
    assert "data.limit = 4" in (tmp_path / "run" / "report.html").read_text()
