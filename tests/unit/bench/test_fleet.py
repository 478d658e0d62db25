"""A fleet's device list and its files (`bench/fleet.py`) with the in-process executor on two local devices;
on Ray and real boards: tests/integration/test_fleet_ray.py."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from edgecam.bench import outputs as files
from edgecam.bench.fleet import device_dir, fleet_run, fleet_specs
from edgecam.config import BenchSpec, ModelSpec, RunConfig, RuntimeSpec
from edgecam.errors import ConfigError


@pytest.fixture()
def inventory(tmp_path: Path) -> Path:
    path = tmp_path / "devices.toml"
    path.write_text("".join(f'[[devices]]\nname = "{n}"\nurl = "local"\n' for n in ("bench-2", "orin-1", "orin_1", "fleet.html")))
    return path


@pytest.mark.parametrize(("names", "match"), [
    ("local", "a fleet has two devices or more"),
    ("local,local", "device\\(s\\) named twice: local"),
    ("local,,bench-2", "expected device names separated by commas"),
    ("local,orin", "unknown device 'orin'; known devices: bench-2, fleet.html, local, orin-1, orin_1"),
    ("local,orin-1,orin_1", "devices 'orin-1' and 'orin_1' map to one Ray resource \\(edgecam_device_orin_1\\)"),
    ("local,fleet.html", "device 'fleet.html' would have the directory fleet.html, a name the fleet's own files use"),
])
def test_bad_fleets_are_refused_before_any_work(inventory: Path, tmp_path: Path, names: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        fleet_run(RunConfig(), tmp_path / "f", names, inventory)
    assert not (tmp_path / "f").exists()


def test_all_is_every_device_of_the_inventory(inventory: Path) -> None:
    with pytest.raises(ConfigError, match="fleet.html"):  # "all" is checked as any list is
        fleet_specs("all", inventory)
    assert [s.name for s in fleet_specs("local,bench-2,orin-1", inventory)] == ["local", "bench-2", "orin-1"]
    assert device_dir(Path("/f"), "../x y") == Path("/f/x_y")


def test_a_fleet_writes_one_run_per_device_and_the_gap_of_each_pair(inventory: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgecam.cli import main

    cfg = RunConfig(models=(ModelSpec("tinycnn"),))
    cfg = cfg.replace(data=dataclasses.replace(cfg.data, limit=6), export=dataclasses.replace(cfg.export, precisions=("fp32",)),
                      runtimes=(RuntimeSpec("onnxruntime", threads=1),), bench=BenchSpec(warmup=1, iterations=3, memory=False),
                      explain=dataclasses.replace(cfg.explain, methods=("gradcampp",), faithfulness=False))
    out = fleet_run(cfg, tmp_path / "f", "local,bench-2", inventory, log=lambda m: None)
    assert [(o["device"], o["ok"], o["attempts"]) for o in out["outcomes"]] == [("local", True, 1), ("bench-2", True, 1)]
    for name in ("local", "bench-2"):
        assert (tmp_path / "f" / name / files.REPORT).is_file() and (tmp_path / "f" / name / files.RESULTS).is_file()
    gap = files.read_table(tmp_path / "f", files.FLEET_GAP)
    assert list(gap[["device_a", "device_b", "precision"]].itertuples(index=False, name=None)) == [("local", "bench-2", "fp32")]
    assert gap["max_abs_logit_diff"].iloc[0] == 0 and gap["images"].iloc[0] == 6  # one machine twice: the same numbers
    saved = json.loads((tmp_path / "f" / files.FLEET).read_text())
    assert saved["executor"] == "inprocess" and saved["devices"] == ["local", "bench-2"] and saved["sum_device_wall_s"] > 0
    page = (tmp_path / "f" / files.FLEET_REPORT).read_text()
    assert 'href="bench-2/report.html"' in page and 'id="device-gap"' in page
    again = fleet_run(cfg, tmp_path / "f", "local,bench-2", inventory, log=lambda m: None)  # a rerun resumes every device
    assert all(json.loads((tmp_path / "f" / n / files.MANIFEST).read_text())["jobs"]["committed"] == 0 for n in ("local", "bench-2"))
    assert again["gap"].equals(out["gap"])
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "f" / "local"), str(tmp_path / "f" / "bench-2")]) == 0  # any two devices' runs compare
    assert "Device gap" in capsys.readouterr().out
