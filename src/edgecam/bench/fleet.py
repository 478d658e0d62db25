"""A fleet run: one experiment on several devices of the inventory (`edgecam run --fleet A,B,C`).

The fleet's directory holds one whole run directory per device (`OUT/<device>/`, with its job store, lock and
report: `edgecam compare` takes any two of them, and a rerun resumes each), plus:
- `fleet.json`: the devices, the executor, how each device's run ended, its wall time, the fleet's wall time;
- `fleet_gap.parquet` / `.csv`: the device gap (`compare.device_gap`) of every pair of devices, one table;
- `fleet.html`: the devices with links to their reports, and the device gap section.

Which process runs each device is the executor's business (`bench/executors.py`); the files are the same.
"""

from __future__ import annotations

import contextlib
import html
import itertools
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from edgecam.bench import outputs as files
from edgecam.bench.executors import DEFAULT_RETRIES, DeviceRun, make_executor
from edgecam.safe_io import write_bytes as atomic_write_bytes, write_json as atomic_write_json  # atomic, never through a link, RunDirWriteError
from edgecam.cache import stable_hash
from edgecam.errors import ConfigError, EdgecamError

if TYPE_CHECKING:
    from edgecam.config import RunConfig
    from edgecam.devices.inventory import DeviceSpec


def fleet_specs(names: str | Sequence[str], inventory: str | Path | None = None) -> list["DeviceSpec"]:
    """The fleet's devices from a comma-separated list (or "all": every device of the inventory, "local" first);
    an unknown or repeated name is a ConfigError before any work."""
    from edgecam.devices.inventory import get_device_spec, load_inventory

    listed = [n.strip() for n in names.split(",")] if isinstance(names, str) else [str(n).strip() for n in names]
    if listed == ["all"]:
        listed = list(load_inventory(inventory))
    if not listed or "" in listed:
        raise ConfigError(f"--fleet: expected device names separated by commas (or 'all'), got {names!r}")
    repeated = sorted({n for n in listed if listed.count(n) > 1})
    if repeated:
        raise ConfigError(f"--fleet: device(s) named twice: {', '.join(repeated)}")
    if len(listed) < 2:
        raise ConfigError(f"--fleet: a fleet has two devices or more (got {listed[0]!r}); for one device use --device")
    from edgecam.bench.executors import device_resource

    reserved = {files.FLEET, files.FLEET_GAP, files.FLEET_GAP_CSV, files.FLEET_REPORT}
    for key, what in ((device_dir, "directory"), (lambda _out, n: device_resource(n), "Ray resource")):
        mapped: dict[Any, str] = {}
        for n in listed:
            k = key(Path(), n)
            if str(k) in reserved:
                raise ConfigError(f"--fleet: device {n!r} would have the {what} {k}, a name the fleet's own files use; rename it in the inventory")
            if k in mapped:
                raise ConfigError(f"--fleet: devices {mapped[k]!r} and {n!r} map to one {what} ({k}); rename one in the inventory")
            mapped[k] = n
    return [get_device_spec(n, inventory) for n in listed]


def device_dir(out_dir: Path, name: str) -> Path:
    """A device's run directory inside the fleet's: its name as one safe path component."""
    import re

    return out_dir / (re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "device")


def fleet_run(cfg: "RunConfig", out_dir: str | Path, names: str | Sequence[str], inventory: str | Path | None = None, executor: str = "inprocess",
              address: str | None = None, limit: int | None = None, resume: bool | None = None, log: Callable[[str], None] = print,
              retries: int = DEFAULT_RETRIES, runner: Any = None) -> dict[str, Any]:
    """Run `cfg` on every device of `names` into `out_dir/<device>/`, on `executor` ("inprocess" or "ray", or the
    executor object `runner`), then write the fleet's files. Returns fleet.json's content and the gap table."""
    from edgecam.bench.store import run_dir_lock

    specs = fleet_specs(names, inventory)
    out = Path(out_dir)
    runner = runner or make_executor(executor, address, retries)
    runs = [DeviceRun(spec, device_dir(out, spec.name)) for spec in specs]
    if resume and not out.is_dir():
        raise ConfigError(f"--resume {out}: no such fleet directory")
    out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as held:
        held.enter_context(run_dir_lock(out))  # one fleet run into a directory at a time; each device's run locks its own
        t0 = time.perf_counter()
        log(f"fleet of {len(runs)} devices ({', '.join(s.name for s in specs)}) on the {runner.name} executor")
        # a device directory that exists resumes (as a rerun of one device's run does); a new one starts
        outcomes = runner.run(cfg, runs, limit, True if resume else None, log)
        wall = time.perf_counter() - t0
        finished = [(o.device, r.out_dir) for o, r in zip(outcomes, runs) if o.ok]
        gap, gap_errors = fleet_gap(finished)
        for e in gap_errors:
            log(f"[yellow]no device gap for {e['device_a']} / {e['device_b']}: {e['error']}[/yellow]")
        summary = {"devices": [s.name for s in specs], "executor": runner.name, "address": address, "config_hash": stable_hash(cfg.to_dict()),
                   "wall_s": wall, "sum_device_wall_s": sum(o.wall_s for o in outcomes), "outcomes": [asdict(o) for o in outcomes], "gap_errors": gap_errors}
        atomic_write_json(out / files.FLEET, summary)
        files.write_tables(out, [(files.FLEET_GAP, gap), (files.FLEET_GAP_CSV, gap)])
        atomic_write_bytes(out / files.FLEET_REPORT, fleet_html(out, summary, gap).encode())
    return {**summary, "gap": gap}


def fleet_gap(finished: list[tuple[str, Path]]) -> tuple[Any, list[dict[str, str]]]:
    """The device gap of every pair of finished devices (in fleet order), with `device_a` / `device_b` first, and
    the pairs whose gap could not be computed (e.g. logits of another shape: not the same model) with why."""
    import pandas as pd

    from edgecam.bench.compare import GAP_COLUMNS, device_gap

    parts, errors = [], []
    for (a, da), (b, db) in itertools.combinations(finished, 2):
        try:
            part = device_gap(da, db)
        except (EdgecamError, OSError, ValueError, KeyError) as exc:
            errors.append({"device_a": a, "device_b": b, "error": f"{type(exc).__name__}: {exc}"[:500]})
            continue
        if not part.empty:
            parts.append(part.assign(device_a=a, device_b=b))
    cols = ["device_a", "device_b", *GAP_COLUMNS]
    return (pd.concat(parts, ignore_index=True)[cols] if parts else pd.DataFrame(columns=cols)), errors


def fleet_html(out: Path, summary: dict[str, Any], gap: Any) -> str:
    """fleet.html: one row per device (how its run ended, wall time, a link to its report) and the device gap."""
    from edgecam.bench.compare import CSP, STYLE, device_label, gap_section, html_table

    rows = []
    for o in summary["outcomes"]:
        d = device_dir(out, o["device"])
        report = d / files.REPORT
        label = device_label(d) if (d / files.MANIFEST).is_file() else o["device"]
        link = f'<a href="{html.escape(report.relative_to(out).as_posix())}">report</a>' if report.is_file() else ""
        state = "finished" if o["ok"] else "FAILED: " + (o["error"] or "")[-300:]
        jobs = f"{len(o['failed_jobs'])} failed job(s)" if o["failed_jobs"] else ""
        rows.append([html.escape(label), html.escape(state), html.escape(jobs), f"{o['wall_s']:.0f} s", str(o["attempts"]), link])
    walls = f"fleet wall time {summary['wall_s']:.0f} s; the devices' runs add up to {summary['sum_device_wall_s']:.0f} s"
    title = f"edgecam fleet: {len(summary['devices'])} devices ({html.escape(summary['executor'])} executor)"
    gap_html = gap_section(gap, ("device_a", "device_b")) if not gap.empty else "<p>No device gap: the runs kept no outputs (explain.keep_outputs = 0).</p>"
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" content="{CSP}"><title>{title}</title>'
            f"<style>{STYLE}</style></head><body><h1>{title}</h1><p>{html.escape(walls)}.</p>"
            f"{html_table(['device', 'run', 'jobs', 'wall', 'attempts', ''], rows)}{gap_html}</body></html>")
