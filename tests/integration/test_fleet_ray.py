"""A fleet on a local Ray cluster on loopback (`bench/executors.py` RayExecutor, `bench/fleet.py`): three devices
(this machine, the x86 loopback sshd board, the emulated aarch64 board) at once, one actor each, give the same
rows as the same fleet run device after device in this process (timing columns apart); an actor killed mid-run
is retried on the same board and resumes its jobs; a cluster that offers no resource for a board is refused.

Needs root (sshd, and the arm64 board's debootstrap and mounts): skipped with that reason otherwise; CI runs
as root, so none of this is skipped there."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import pytest
from sshd_server import SshServer, board_spec, sshd  # noqa: F401 - the sshd fixture

from edgecam.config import BenchSpec, ModelSpec, RunConfig, RuntimeSpec

pytestmark = pytest.mark.ray
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before anything imports Ray: the test cluster binds loopback only
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

#: bench.csv's columns measured by the clock or the memory probe: the only ones allowed to differ
TIMING = ("init_ms", "first_ms", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "peak_rss_mb", "rss_model_mb")


def fleet_config() -> RunConfig:
    """tinycnn at fp32 + int8 on ONNX Runtime, 12 images, Grad-CAM++ (the CAMs and the device gap are the point)."""
    cfg = RunConfig(models=(ModelSpec("tinycnn"),))
    return cfg.replace(data=dataclasses.replace(cfg.data, limit=12), export=dataclasses.replace(cfg.export, precisions=("fp32", "int8")),
                       runtimes=(RuntimeSpec("onnxruntime", threads=1),), bench=BenchSpec(warmup=1, iterations=3, memory=False),
                       explain=dataclasses.replace(cfg.explain, methods=("gradcampp",), faithfulness=False))


def _toml(spec: Any) -> str:
    fields = ("name", "url", "key_file", "known_hosts", "python", "retries", "workdir")
    return "[[devices]]\n" + "".join(f"{k} = {getattr(spec, k)!r}\n".replace("'", '"') for k in fields if getattr(spec, k) is not None) + "\n"


@pytest.fixture(scope="module")
def arm_board() -> Iterator[SshServer]:
    from arm64_board import board_session

    yield from board_session()


@pytest.fixture(scope="module")
def inventory(sshd: SshServer, arm_board: SshServer, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    path = tmp_path_factory.mktemp("fleet") / "devices.toml"
    path.write_text(_toml(board_spec(sshd, name="x86board")) + _toml(board_spec(arm_board, name="arm64")))
    return path


def _same_rows(a: Path, b: Path) -> None:
    from edgecam.bench import outputs as files

    keys = ["model", "format", "runtime", "precision", "cam_method", "cam_mode", "image_id"]
    ra, rb = (files.read_table(d, files.RESULTS).sort_values(keys).reset_index(drop=True) for d in (a, b))
    assert len(ra) == 12 * 2  # 12 images x fp32 / int8
    pd.testing.assert_frame_equal(ra, rb)
    ba, bb = (files.read_table(d, files.BENCH).drop(columns=list(TIMING)).sort_values(["precision"]).reset_index(drop=True) for d in (a, b))
    pd.testing.assert_frame_equal(ba, bb)


@pytest.fixture(scope="module")
def reference(inventory: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The three-device fleet run device after device in this process (the in-process executor)."""
    from edgecam.bench.fleet import fleet_run

    out = tmp_path_factory.mktemp("fleet-inprocess")
    return out, fleet_run(fleet_config(), out, "local,x86board,arm64", inventory, log=lambda m: None)


@pytest.mark.slow  # 197 s with its fixtures (2026-12-05); `make test-slow` runs it. By default the Ray executor's retry policy
# (tests/unit/bench/test_executors.py) runs, and benchmark item 9 checks Ray's explain rows equal the in-process ones
def test_a_fleet_on_ray_gives_the_rows_of_the_fleet_device_by_device(inventory: Path, reference: tuple[Path, dict[str, Any]], tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from edgecam.bench import outputs as files
    from edgecam.bench.executors import RayExecutor
    from edgecam.bench.fleet import fleet_run

    ref_dir, ref = reference
    got = fleet_run(fleet_config(), tmp_path / "ray", "local,x86board,arm64", inventory, runner=RayExecutor(num_cpus=2), log=lambda m: None)
    assert [o["ok"] for o in ref["outcomes"]] == [o["ok"] for o in got["outcomes"]] == [True] * 3
    assert {o["node"] for o in got["outcomes"]} != {"driver"} and got["executor"] == "ray"
    assert {o["address"] for o in got["outcomes"]} == {"127.0.0.1"}  # the test cluster stays on loopback
    for name in ("local", "x86board", "arm64"):
        _same_rows(ref_dir / name, tmp_path / "ray" / name)
    gap_ref, gap = files.read_table(ref_dir, files.FLEET_GAP), files.read_table(tmp_path / "ray", files.FLEET_GAP)
    assert len(gap) == 3 * 2  # 3 device pairs x fp32 / int8 (one CAM method)
    pd.testing.assert_frame_equal(gap_ref, gap)
    x86 = gap[(gap["device_a"] == "local") & (gap["device_b"] == "x86board")]
    assert (x86["max_abs_logit_diff"] == 0).all() and (x86["cc"] > 0.9999).all()  # one CPU, one ONNX Runtime: the same numbers
    arm = gap[gap["device_b"] == "arm64"]
    assert (arm["top1_agreement"] > 0.9).all()  # other kernels on aarch64: close, not equal
    page = (tmp_path / "ray" / files.FLEET_REPORT).read_text()
    assert 'id="device-gap"' in page and 'href="arm64/report.html"' in page and "arm64 (aarch64, emulated)" in page
    with capsys.disabled():
        print(f"\nfleet of 3 on Ray (2 CPUs): wall {got['wall_s']:.0f} s vs {got['sum_device_wall_s']:.0f} s for the devices' runs added up; "
              f"device after device in-process: {ref['wall_s']:.0f} s")


def _actor_pid(run_dir: Path) -> int | None:
    """The pid of the Ray actor running into `run_dir` (its lock file names the holder), if it is an actor."""
    from edgecam.bench.store import LOCK_FILE

    try:
        pid = int((run_dir / LOCK_FILE).read_text().strip())
        return pid if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::DeviceWorker") else None
    except (OSError, ValueError):
        return None


@pytest.mark.slow  # 28 s; `make test-slow` runs it (the retry policy's unit test, tests/unit/bench/test_executors.py, runs by default)
def test_an_actor_killed_mid_run_on_another_node_is_retried_on_the_same_board_and_resumes(inventory: Path, reference: tuple[Path, dict[str, Any]],
                                                                                          tmp_path: Path) -> None:
    from edgecam.bench import outputs as files
    from edgecam.bench.executors import RayExecutor, device_resource
    from edgecam.bench.fleet import fleet_run
    from edgecam.cache import cache_dir

    out, killed = tmp_path / "ray", []

    def kill_after_the_first_job() -> None:
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            for scratch in (cache_dir() / "fleet").glob(f"*/{device_resource('x86board')}"):
                pid = _actor_pid(scratch)
                if pid is not None and list((scratch / files.JOBS).glob("*/*/meta.json")):
                    os.kill(pid, signal.SIGKILL)  # the x86 board's actor, once it has committed a job
                    killed.append(pid)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_after_the_first_job)
    killer.start()
    try:
        # sync="always": each actor runs in its node's scratch directory and sends the run back, as on another
        # host than the driver's (there is one host here)
        got = fleet_run(fleet_config(), out, "local,x86board", inventory, runner=RayExecutor(num_cpus=2, sync="always"), log=lambda m: None)
    finally:
        killer.join()
    assert killed, "no actor was killed: the test did not test anything"
    attempts = {o["device"]: o["attempts"] for o in got["outcomes"]}
    assert all(o["ok"] for o in got["outcomes"]) and attempts == {"local": 1, "x86board": 2}, attempts
    manifest = json.loads((out / "x86board" / files.MANIFEST).read_text())
    assert manifest["resumed"] and manifest["jobs"]["reused"] > 0  # the second attempt kept the first one's finished jobs
    assert not list((cache_dir() / "fleet").glob(f"*/{device_resource('x86board')}"))  # the scratch went once sent back
    for name in ("local", "x86board"):  # and the rows are those of the uninterrupted run
        _same_rows(reference[0] / name, out / name)


def test_a_cluster_without_a_boards_resource_is_refused(inventory: Path, tmp_path: Path) -> None:
    import ray

    from edgecam.bench.executors import RayExecutor, device_resource
    from edgecam.bench.fleet import fleet_run
    from edgecam.errors import ConfigError

    ray.init(num_cpus=1, resources={device_resource("local"): 1}, include_dashboard=False, logging_level="WARNING", _node_ip_address="127.0.0.1")
    try:
        with pytest.raises(ConfigError, match=r"offers no resource for device\(s\) x86board: .*ray start --address=HEAD --resources='\{\"edgecam_device_x86board\": 1\}'"):
            fleet_run(fleet_config(), tmp_path / "f", "local,x86board", inventory, runner=RayExecutor(), log=lambda m: None)
    finally:
        ray.shutdown()
    assert not list((tmp_path / "f").glob("*/jobs"))  # refused before any device ran
