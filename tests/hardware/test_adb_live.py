"""Live AdbDevice tests against a real phone or emulator (skipped unless EDGECAM_ADB_SERIAL is set).

    EDGECAM_ADB_SERIAL=emulator-5554 \\
    EDGECAM_BENCHMARK_MODEL=/data/local/tmp/benchmark_model \\   # optional: LiteRT benchmark_model on the device
    EDGECAM_ADB_TFLITE=/path/on/host/model.tflite \\             # optional: else a tiny model is built here
    .venv/bin/python -m pytest tests/hardware/test_adb_live.py -q -p no:cacheprovider

Everything is written under a fresh /data/local/tmp/edgecam-test-<id> directory, removed afterwards.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from edgecam.devices.adb import AdbDevice
from edgecam.devices.benchmark_model import to_latency_columns

SERIAL = os.environ.get("EDGECAM_ADB_SERIAL", "")
BENCHMARK_MODEL = os.environ.get("EDGECAM_BENCHMARK_MODEL", "")

pytestmark = [
    pytest.mark.hardware,
    pytest.mark.skipif(not SERIAL, reason="live adb tests: set EDGECAM_ADB_SERIAL to a serial from `adb devices` (phone or emulator)"),
]


@pytest.fixture(scope="module")
def device() -> Iterator[AdbDevice]:
    dev = AdbDevice(SERIAL, benchmark_model=BENCHMARK_MODEL or None, workdir=f"/data/local/tmp/edgecam-test-{uuid.uuid4().hex[:8]}")
    yield dev
    dev.cleanup(dev.workdir())


@pytest.fixture(scope="module")
def tflite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """EDGECAM_ADB_TFLITE, or a tiny conv net converted here with litert-torch."""
    given = os.environ.get("EDGECAM_ADB_TFLITE")
    if given:
        path = Path(given)
        assert path.is_file(), f"EDGECAM_ADB_TFLITE={given} is not a file"
        return path
    try:
        import litert_torch
        import torch
    except ImportError as exc:
        pytest.skip(f"no EDGECAM_ADB_TFLITE and litert-torch is unavailable to build a model ({exc})")
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10)
    ).eval()
    path = tmp_path_factory.mktemp("tflite") / "tiny conv.tflite"  # a space, to exercise quoting on the device
    with torch.no_grad():
        litert_torch.convert(model, (torch.zeros(1, 3, 32, 32),)).export(str(path))
    return path


def test_info(device: AdbDevice) -> None:
    facts = device.info()
    assert facts["kind"] == "adb" and facts["serial"] == SERIAL
    assert facts["model"] and facts["abi"] and facts["arch"]
    assert str(facts["os"]).startswith("Android ") and facts["sdk"] >= 24  # shell_v2 was checked on the way
    assert facts["ram_bytes"] > 2**20 and facts["cores"] >= 1 and facts["kernel"]


def test_push_pull_round_trip(device: AdbDevice, tmp_path: Path) -> None:
    src = tmp_path / "send"
    (src / "a b").mkdir(parents=True)
    (src / "it's; x.txt").write_text("hello 'device'\n")
    (src / "a b" / "data.bin").write_bytes(os.urandom(200_000))
    remote = f"{device.workdir()}/round trip/it's \"here\""
    device.push(src, remote)
    assert device.exists(f"{remote}/it's; x.txt") and not device.exists(f"{remote}/missing")
    assert device.run(["cat", f"{remote}/it's; x.txt"]).stdout == "hello 'device'\n"
    back = tmp_path / "back"
    device.pull(remote, back)
    assert (back / "it's; x.txt").read_text() == "hello 'device'\n"
    assert (back / "a b" / "data.bin").read_bytes() == (src / "a b" / "data.bin").read_bytes()
    device.cleanup(remote)
    assert not device.exists(remote)


def test_shell_exit_code(device: AdbDevice) -> None:
    res = device.run(["sh", "-c", "echo out; echo err >&2; exit 7"])
    assert (res.returncode, res.stdout.strip(), res.stderr.strip()) == (7, "out", "err")
    assert device.run(["true"]).returncode == 0
    assert device.run(["ls", f"{device.workdir()}/no such dir"]).returncode != 0


@pytest.mark.skipif(not BENCHMARK_MODEL, reason="set EDGECAM_BENCHMARK_MODEL to the benchmark_model path on the device to run it")
def test_benchmark(device: AdbDevice, tflite: Path) -> None:
    result = device.benchmark(tflite, threads=1, runs=20, warmup=2)
    assert result.inference_avg_ms > 0 and result.init_ms >= 0
    assert result.inference_count is None or result.inference_count >= 20  # runs for at least --min_secs too
    cols = to_latency_columns(result)
    assert cols["mean_ms"] == result.inference_avg_ms
    again = device.benchmark(tflite, threads=1, runs=5, warmup=1)  # the model is on the device already
    assert again.inference_avg_ms > 0
