"""The executors' own logic (`bench/executors.py`): the retry policy on the same board, run directories moved
between nodes as tar bytes, the device name in front of each log line, the Ray resource names. Real fleets on
a Ray cluster: tests/integration/test_fleet_ray.py."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import pytest

from edgecam.bench import executors
from edgecam.bench.executors import DeviceRun, InProcessExecutor, device_resource, make_executor, pack_dir, unpack_dir
from edgecam.devices.errors import DeviceError
from edgecam.devices.inventory import DeviceSpec
from edgecam.errors import ConfigError, UnknownNameError


def _runs(tmp_path: Path, *names: str) -> list[DeviceRun]:
    return [DeviceRun(DeviceSpec(n), tmp_path / n) for n in names]


def test_a_lost_board_is_retried_on_the_same_board_resuming_then_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, Any]] = []

    def fake_run_device(cfg: Any, run: DeviceRun, limit: Any, resume: Any, log: Any) -> dict[str, Any]:
        calls.append((run.device.name, resume))
        if run.device.name == "flaky" and len([c for c in calls if c[0] == "flaky"]) == 1:
            raise DeviceError("connection reset by the board")
        if run.device.name == "gone":
            raise DeviceError("no route to host")
        if run.device.name == "badcfg":
            raise ConfigError("data.limit: expected a positive integer")
        return {"failed_jobs": [], "wall_s": 1.0}

    monkeypatch.setattr(executors, "run_device", fake_run_device)
    lines: list[str] = []
    out = InProcessExecutor(retries=1).run(None, _runs(tmp_path, "flaky", "gone", "badcfg", "fine"), None, None, lines.append)  # type: ignore[arg-type]
    by = {o.device: o for o in out}
    assert by["flaky"].ok and by["flaky"].attempts == 2
    assert calls[:2] == [("flaky", None), ("flaky", True)]  # the retry resumes, on the same device
    assert not by["gone"].ok and by["gone"].attempts == 2 and "no route to host" in str(by["gone"].error)
    assert not by["badcfg"].ok and by["badcfg"].attempts == 1  # a retry cannot fix a config: not retried
    assert by["fine"].ok and [o.device for o in out] == ["flaky", "gone", "badcfg", "fine"]
    assert sum("retrying on the same board" in line for line in lines) == 2


def test_run_directories_travel_as_tar_without_their_lock(tmp_path: Path) -> None:
    src = tmp_path / "a"
    (src / "jobs" / "run").mkdir(parents=True)
    (src / "jobs" / "run" / "meta.json").write_text("{}")
    (src / "results.parquet").write_bytes(b"PAR1")
    (src / ".lock").write_text("123")
    data = pack_dir(src)
    dst = tmp_path / "b"
    dst.mkdir()
    (dst / "stale.csv").write_text("old")
    (dst / ".lock").write_text("456")
    unpack_dir(data, dst)
    assert sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*")) == [".lock", "jobs", "jobs/run", "jobs/run/meta.json", "results.parquet"]
    assert (dst / ".lock").read_text() == "456"  # the receiving side's lock is its own
    unpack_dir(pack_dir(tmp_path / "missing"), tmp_path / "new")  # a device's first run: an empty directory travels
    assert (tmp_path / "new").is_dir() and not list((tmp_path / "new").iterdir())


def test_an_archive_that_escapes_the_directory_is_refused(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.parquet").write_bytes(b"PAR1")
    with pytest.raises(ValueError, match="'../escaped.txt' is not a plain file or folder inside"):
        unpack_dir(buf.getvalue(), tmp_path / "run")
    assert not (tmp_path / "escaped.txt").exists()
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["results.parquet"]  # a refused archive changes nothing


def test_a_symlink_in_an_archive_is_refused(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("jobs")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc"
        tar.addfile(info)
    with pytest.raises(ValueError, match="not a plain file or folder"):
        unpack_dir(buf.getvalue(), tmp_path / "run")


def test_log_lines_name_the_device_after_their_colour_tag() -> None:
    lines: list[str] = []
    log = executors._prefixed(lines.append, "jetson")
    log("[red]FAILED[/red] tinycnn-onnx-int8")
    log("tinycnn: fp32 host accuracy 0.97")
    assert lines == ["[red]jetson: FAILED[/red] tinycnn-onnx-int8", "jetson: tinycnn: fp32 host accuracy 0.97"]


def test_each_board_has_its_own_resource_and_executors_are_named() -> None:
    assert device_resource("orin-1") == "edgecam_device_orin_1" != device_resource("orin-2")
    assert make_executor("inprocess").name == "inprocess" and make_executor("ray", "127.0.0.1:6379").address == "127.0.0.1:6379"
    with pytest.raises(ConfigError, match="--address is a Ray cluster's address: it needs --executor ray"):
        make_executor("inprocess", "127.0.0.1:6379")
    with pytest.raises(ConfigError, match="Ray Client"):
        make_executor("ray", "ray://head:10001")
    with pytest.raises(UnknownNameError, match="unknown executor .dask.; known executors: inprocess, ray"):
        make_executor("dask")
