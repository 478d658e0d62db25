"""The emulated aarch64 board (tests/arm64_board.py: Debian arm64 under qemu-user behind a chrooted sshd):
the probe says aarch64 and emulated; the quickstart (EfficientNet-Lite0, ONNX Runtime + LiteRT, fp32 + int8)
runs there as a whole `edgecam run`, its latency labelled emulated; fp32 on aarch64 matches x86 to 1e-4 in
the logits; the int8 device gap (top-1 agreement, max |logit diff|, CC of CAMs) is measured by
`edgecam compare`; a connection dropped mid-run is survived as on the x86 sshd. The same quickstart over adb to
the arm64 adbd (tests/adb_board.py: Debian's adbd in a trixie arm64 root under qemu-user) gives the SSH board's
rows: same artifacts, same aarch64 kernels, only the transport differs.

Needs root (debootstrap, mounts, ChrootDirectory): skipped with that reason otherwise; as root, a board that
cannot be built is a failure, not a skip (CI runs as root: none of these is skipped there)."""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import pytest
from sshd_server import SshServer, board_spec

from edgecam.config import BenchSpec, RunConfig, RuntimeSpec, load_config

pytestmark = pytest.mark.arm64
ROOT = Path(__file__).resolve().parents[2]
QUICK_IMAGES = 6  # each photo once (views = 1), all evaluated; emulated Lite0: ~2.5 s per fp32 image, ~0.5 s int8


@pytest.fixture(scope="module")
def arm_board() -> Iterator[SshServer]:
    from arm64_board import board_session

    yield from board_session()


def test_probe_reports_an_emulated_aarch64_board(arm_board: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from edgecam.cli import main
    from edgecam.devices.inventory import open_device

    with open_device(board_spec(arm_board)) as device:
        facts = device.info()
    assert facts["arch"] == "aarch64" and facts["emulated"] is True and "x86_64 kernel" in facts["emulation"]
    assert facts["cpu"] == "Cortex-A76 (0xd0b)"  # qemu-user -cpu cortex-a76, as the board's cpuinfo says
    assert facts["runtimes"]["onnxruntime"] and facts["runtimes"]["ai_edge_litert"], facts["runtimes"]
    inv = tmp_path / "devices.toml"
    inv.write_text(f'[[devices]]\nname = "arm64"\nurl = "{arm_board.url}"\nkey_file = "{arm_board.key_file}"\nknown_hosts = "{arm_board.known_hosts}"\n'
                   f'python = "{arm_board.python}"\n')
    monkeypatch.setenv("EDGECAM_DEVICES", str(inv))
    assert main(["devices", "probe", "arm64", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["arch"] == "aarch64" and printed["emulated"] is True


def quickstart_config() -> RunConfig:
    """The quickstart at fp32 + int8 on ONNX Runtime and LiteRT, 3 timed runs (emulated time is no figure)."""
    cfg = load_config(ROOT / "configs" / "quickstart.toml")
    return cfg.replace(
        data=dataclasses.replace(cfg.data, views=1, limit=QUICK_IMAGES),
        export=dataclasses.replace(cfg.export, precisions=("fp32", "int8")),
        bench=BenchSpec(warmup=1, iterations=3, memory=False),
    )


@pytest.fixture(scope="module")
def quickstart_runs(arm_board: SshServer, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    """(x86 run dir, arm64 run dir, the arm64 run's result) of the reduced quickstart."""
    from edgecam.bench.sweep import run

    cfg = quickstart_config()
    x86, arm = tmp_path_factory.mktemp("quick-x86"), tmp_path_factory.mktemp("quick-arm64")
    run(cfg, x86, log=lambda m: None)
    out = run(cfg, arm, log=lambda m: None, device_spec=board_spec(arm_board, name="arm64", retries=4))
    return x86, arm, out


@pytest.fixture(scope="module")
def arm_phone() -> Iterator[Any]:
    """The arm64 adbd board (built once, ~4.5 min under qemu-user; a cached start is timed and printed)."""
    import time

    import adb_board

    t0 = time.monotonic()
    boards = adb_board.board_session("arm64")
    phone = next(boards)
    print(f"\narm64 adbd board started in {time.monotonic() - t0:.1f} s")
    yield phone
    next(boards, None)


@pytest.mark.adb
@pytest.mark.slow  # the arm64 adbd's first build (~4.5 min) does not fit `make test`; the x86-64 adbd is there (test_adb_board.py)
def test_probe_reports_the_arm64_adbd_as_an_emulated_aarch64_phone(arm_phone: Any) -> None:
    from edgecam.devices.inventory import open_device

    with open_device(arm_phone.spec()) as device:
        facts = device.info()
    assert facts["kind"] == "adb" and facts["arch"] == "aarch64" and facts["abi"] == "arm64-v8a" and facts["emulated"] is True
    assert facts["os"] == "Android 14 (API 34)" and facts["python"].startswith("3.13.")
    assert facts["runtimes"]["onnxruntime"] and facts["runtimes"]["ai_edge_litert"], facts["runtimes"]


@pytest.mark.adb
@pytest.mark.slow  # ~3 min under qemu after the SSH fixture's 184 s
def test_the_quickstart_over_adb_gives_the_arm64_ssh_rows_and_the_device_gap(arm_phone: Any, quickstart_runs: tuple[Path, Path, dict[str, Any]],
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """The same run over adb to the arm64 adbd and over SSH to the arm64 board: the same artifacts on the same
    aarch64 kernels, so the same rows (device columns aside) and no gap between the two; `edgecam compare` of the adb
    run against the local x86 run shows the device gap."""
    from edgecam.bench.compare import device_gap
    from edgecam.bench.sweep import run
    from edgecam.cli import main

    x86, ssh, ssh_out = quickstart_runs
    adb = x86.parent / "quick-adb-arm64"
    out = run(quickstart_config(), adb, log=lambda m: None, device_spec=arm_phone.spec("phone"))
    assert not out["failed"], out["failed"]
    device = out["manifest"]["device"]
    assert device["kind"] == "adb" and device["arch"] == "aarch64" and device["emulated"] is True
    keys = ["model", "format", "runtime", "precision", "cam_method", "image_id"]
    a, b = (r.sort_values(keys).reset_index(drop=True) for r in (ssh_out["results"], out["results"]))
    assert set(a["device"]) == {"arm64"} and set(b["device"]) == {"phone"} and len(a) == len(b) > 0
    same = [c for c in a.columns if not c.startswith("device")]
    pd.testing.assert_frame_equal(a[same], b[same], check_exact=False, atol=1e-6, rtol=0)
    between = device_gap(ssh, adb)  # the transports: nothing between them
    assert between["same_artifact"].all() and (between["max_abs_logit_diff"] == 0).all() and (between["top1_agreement"] == 1).all(), between
    gap = device_gap(x86, adb)
    assert gap["same_artifact"].all() and set(gap["precision"]) == {"fp32", "int8"} and (gap["images"] == QUICK_IMAGES).all()
    assert (gap.loc[gap["precision"] == "fp32", "max_abs_logit_diff"] < 1e-4).all(), gap
    assert main(["compare", str(x86), str(adb)]) == 0
    printed = capsys.readouterr().out
    assert "Device gap" in printed and "phone (aarch64, emulated)" in printed
    with pd.option_context("display.width", 250, "display.max_columns", 20), capsys.disabled():
        print(f"\ndevice gap x86 -> arm64 adbd (emulated aarch64), {QUICK_IMAGES} quickstart images:\n{gap}")


@pytest.mark.slow  # with its fixture 184 s under qemu (2026-12-05); `make test-slow` runs it, `make test` the probe here and the SSH run on the x86 loopback board
def test_quickstart_runs_whole_on_the_arm64_board(quickstart_runs: tuple[Path, Path, dict[str, Any]]) -> None:
    from edgecam.bench import outputs as files

    _, arm, out = quickstart_runs
    assert not out["failed"], out["failed"]
    bench = out["bench"]
    assert set(zip(bench["runtime"], bench["precision"])) == {(r, p) for r in ("onnxruntime", "litert") for p in ("fp32", "int8")}
    assert bench["ok"].all() and bench["device_emulated"].all()
    assert out["manifest"]["device"]["arch"] == "aarch64" and out["manifest"]["device"]["emulated"] is True
    assert files.read_table(arm, files.LATENCY)["device_emulated"].all()
    report = (arm / files.REPORT).read_text()
    assert 'id="emulated"' in report and "Latency and memory (EMULATED device)" in report
    results = out["results"]
    assert len(results) and set(results["device"]) == {"arm64"} and results["cc_fp32"].notna().all()


@pytest.mark.slow  # shares the 184 s arm64 quickstart fixture above
def test_fp32_on_aarch64_matches_x86_and_the_int8_gap_is_measured(quickstart_runs: tuple[Path, Path, dict[str, Any]], capsys: pytest.CaptureFixture[str]) -> None:
    from edgecam.bench.compare import device_gap
    from edgecam.cli import main

    x86, arm, _ = quickstart_runs
    gap = device_gap(x86, arm)
    assert set(gap["precision"]) == {"fp32", "int8"} and set(gap["runtime"]) == {"onnxruntime", "litert"}
    assert gap["same_artifact"].all() and (gap["images"] == QUICK_IMAGES).all()
    fp32, int8 = gap[gap["precision"] == "fp32"], gap[gap["precision"] == "int8"]
    assert (fp32["max_abs_logit_diff"] < 1e-4).all(), fp32
    assert (fp32["top1_agreement"] == 1.0).all() and (fp32["cc"] > 0.999).all(), fp32
    assert np.isfinite(int8[["max_abs_logit_diff", "top1_agreement", "sim", "cc", "kld"]].to_numpy(float)).all()
    with pd.option_context("display.width", 250, "display.max_columns", 20), capsys.disabled():
        print(f"\ndevice gap x86 -> emulated aarch64 (cortex-a76), {QUICK_IMAGES} quickstart images:\n{gap}")
    csv = x86.parent / "gap.csv"
    assert main(["compare", str(x86), str(arm), "--gap-csv", str(csv), "--html", str(x86.parent / "compare.html")]) == 0
    printed = capsys.readouterr().out
    assert "Device gap" in printed and "arm64 (aarch64, emulated)" in printed
    assert len(pd.read_csv(csv)) == len(gap)
    assert 'id="device-gap"' in (x86.parent / "compare.html").read_text()


@pytest.mark.slow  # 97 s under qemu; `make test` covers a dropped connection on the x86 loopback board (test_ssh_device.py)
def test_a_connection_dropped_mid_run_is_survived_on_arm64(arm_board: SshServer, trained_tinycnn: Any, tmp_path: Path) -> None:
    """As on the x86 sshd: the connection is cut while an agent runs a job on the board; the run completes
    with every row, fp32 rows equal to the x86 run's."""
    from test_ssh_device import _kill_connection_when_a_job_runs

    from edgecam.bench.sweep import run

    cfg = trained_tinycnn.cfg
    cfg = cfg.replace(data=dataclasses.replace(cfg.data, limit=10), export=dataclasses.replace(cfg.export, precisions=("fp32", "int8")),
                      runtimes=(RuntimeSpec("onnxruntime", threads=1),), bench=BenchSpec(warmup=2, iterations=10, memory=False))
    local = run(cfg, tmp_path / "x86", log=lambda m: None)["results"]
    stop, killed = threading.Event(), []  # type: ignore[var-annotated]
    killer = threading.Thread(target=_kill_connection_when_a_job_runs, args=(arm_board, stop, killed))
    killer.start()
    try:
        out = run(cfg, tmp_path / "arm64", log=lambda m: None, device_spec=board_spec(arm_board))
    finally:
        stop.set()
        killer.join()
    assert killed and not out["manifest"]["failed"]
    keys = ["model", "format", "runtime", "precision", "cam_method", "image_id"]
    a, b = (r.sort_values(keys).reset_index(drop=True) for r in (local, out["results"]))
    pd.testing.assert_frame_equal(a[keys], b[keys])
    fp32 = a["precision"] == "fp32"
    np.testing.assert_allclose(a.loc[fp32, ["cc_fp32", "sim_gt", "cc_gt"]].to_numpy(float), b.loc[fp32, ["cc_fp32", "sim_gt", "cc_gt"]].to_numpy(float), atol=1e-4)


ST = ROOT.parent / "shared" / "models" / "st-mobilenet"
ST_MNV2 = "mobilenet_v2_1.0_224_int8_per_tensor"


@pytest.mark.slow  # ~2 min under qemu with the board's start; `make test` runs the same files locally (test_model_files.py)
@pytest.mark.skipif(not ST.is_dir(), reason=f"the real deployed models are not here ({ST})")
def test_the_st_pair_runs_on_the_arm64_board_as_locally(arm_board: SshServer, tmp_path: Path) -> None:
    """Model files another toolchain made (issue 34), on aarch64 kernels: the int8 .tflite in LiteRT and the QDQ .onnx in
    ONNX Runtime answer the photos as on x86 (a cat, an espresso), and the device gap is measured."""
    from edgecam.bench.compare import device_gap
    from edgecam.bench.sweep import run
    from edgecam.config import files_config

    cfg = files_config([str(ST / f"{ST_MNV2}.tflite"), str(ST / f"{ST_MNV2}.onnx")])
    cfg = cfg.replace(data=dataclasses.replace(cfg.data, views=1), bench=BenchSpec(warmup=1, iterations=3, memory=False))
    x86 = run(cfg, tmp_path / "x86", log=lambda m: None)
    arm = run(cfg, tmp_path / "arm64", log=lambda m: None, device_spec=board_spec(arm_board, name="arm64", retries=4))
    assert not x86["failed"] and not arm["failed"], arm["failed"]
    assert arm["manifest"]["device"]["arch"] == "aarch64"
    rows = arm["results"]
    photos = rows[(rows.cam_method == "eigencam") & rows.image_id.isin(["chelsea-00.jpg", "coffee-00.jpg"])]
    assert len(photos) == 6  # two photos x three variants (the dequantized reference, both int8 files)
    for _, row in photos.iterrows():
        assert (281 <= row.pred <= 285) if row.image_id.startswith("chelsea") else row.pred == 967
    gap = device_gap(tmp_path / "x86", tmp_path / "arm64")
    assert gap["same_artifact"].all() and set(gap["format"]) == {"onnx", "tflite"}
    assert np.isfinite(gap[["max_abs_logit_diff", "top1_agreement", "cc"]].to_numpy(float)).all()
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print(f"\nST MobileNetV2 pair, device gap x86 -> emulated aarch64 (6 photos):\n{gap}")
