"""Parse NVIDIA Jetson `tegrastats` lines and sample the tool during a timed run.

Runs on the device next to the agent, so it is standard library only (no numpy, no torch) and valid on
Python >= 3.8, the oldest Python a supported JetPack ships.

tegrastats prints one line per interval. Its format drifted across JetPack / L4T releases; the parser reads
fields by pattern rather than by position and ignores tokens it does not know, so one parser covers:

- JetPack 3.x / 4.x (TX1, TX2, Nano, Xavier): ``RAM 1685/7854MB (lfb 1044x4MB) SWAP ... CPU [0%@1303,off,...]
  EMC_FREQ 0%@1866 GR3D_FREQ 0%@140 ... GPU@39C ... VDD_IN 1931/1931`` (rails "current/average", mW implied;
  the Nano names its input rail POM_5V_IN; JetPack 4.2 on AGX Xavier prints bare names such as ``GPU 463/463``).
- JetPack 5.x (Xavier, Orin): a leading ``MM-DD-YYYY HH:MM:SS`` timestamp, ``GR3D_FREQ 0%@[114]`` (per-GPC
  frequencies), rails with units (``VDD_IN 2763mW/2846mW``), and ``-256C`` for sensors that are powered off.
- JetPack 6.x (Orin): lower-case sensors (``cpu@47.5C tj@...``), ``GR3D_FREQ 0%`` with no frequency.
- Newer releases (L4T R38 / R39): ``GR3D_FREQ @[0,0,0]`` with no load, temperatures ``cpu@34.8C/34.8C`` and
  rails with three readings ``4925mW/4925mW/4925mW``; the first reading is the current one.

Only the RAM field is required: a line without it is not a tegrastats sample and raises ValueError.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Tuple

__all__ = [
    "TegrastatsSample",
    "TegrastatsSampler",
    "TegrastatsUnavailable",
    "maybe_sampler",
    "parse_line",
    "summarise",
]

# Readings at or below this are tegrastats' "no reading" sentinel (-256C for a rail-gated GPU / CV cluster).
_TEMP_SENTINEL_C = -256.0

_TIMESTAMP_RE = re.compile(r"^(\d{2}-\d{2}-\d{4} \d{2}:\d{2}:\d{2})\s")
_RAM_RE = re.compile(r"\bRAM (\d+)/(\d+)(kB|MB|GB)\b")
_SWAP_RE = re.compile(r"\bSWAP (\d+)/(\d+)(kB|MB|GB)\b")
# "CPU [12%@1420,off,...]" or the oldest form "CPU [12%,3%,off,off]@1420" (one frequency for all cores).
_CPU_RE = re.compile(r"\bCPU \[([^\]]*)\](?:@(\d+))?")
_CPU_CORE_RE = re.compile(r"^(\d+)%(?:@(\d+))?$")
# "GR3D_FREQ 0%", "0%@76", "0%@[305,305]" or (no load) "@[0,0,0]".
_GR3D_RE = re.compile(r"\bGR3D_FREQ (?:(\d+)%)?(?:@\[?([\d,]+)\]?)?")
_EMC_RE = re.compile(r"\bEMC_FREQ (\d+)%(?:@\[?([\d,]+)\]?)?")
# "name@43.5C", "name@-256C", "name@34.843C/34.843C"; the character before the name must not be a word
# character, "%" or "@", so "0%@1600" (a load at a frequency) never reads as a temperature.
_TEMP_RE = re.compile(r"(?<![\w%@])([A-Za-z][\w]*)@(-?\d+(?:\.\d+)?)C(?:/-?\d+(?:\.\d+)?C)?(?=\s|$)")
# "VDD_IN 1931/1931", "VDD_IN 4747mW/4747mW", "VDD_GPU 4925mW/4925mW/4925mW", "GPU 463/463".
_RAIL_RE = re.compile(r"(?<![\w@%])([A-Za-z][A-Za-z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?:/\d+(?:mW)?)?(?=\s|$)")

_TO_MB = {"kB": 1.0 / 1024.0, "MB": 1.0, "GB": 1024.0}


@dataclass(frozen=True)
class TegrastatsSample:
    """One parsed tegrastats line. Loads are percent, frequencies MHz, memory MB, temperatures C, power mW.

    `cpu_load_pct[i]` / `cpu_freq_mhz[i]` are None for a core tegrastats reports as "off". Optional fields are
    None where the line does not carry them (e.g. `gpu_freq_mhz` on JetPack 6's bare ``GR3D_FREQ 0%``,
    `gpu_load_pct` on R38+'s ``GR3D_FREQ @[0,0,0]``). `power_mw` holds each rail's current reading,
    `power_avg_mw` tegrastats' own running average; a rail name printed twice (Orin's "NC") keeps the first.
    """

    ram_used_mb: int
    ram_total_mb: int
    swap_used_mb: Optional[int] = None
    swap_total_mb: Optional[int] = None
    cpu_load_pct: List[Optional[int]] = field(default_factory=list)
    cpu_freq_mhz: List[Optional[int]] = field(default_factory=list)
    gpu_load_pct: Optional[int] = None
    gpu_freq_mhz: Optional[int] = None
    emc_load_pct: Optional[int] = None
    emc_freq_mhz: Optional[int] = None
    temps_c: Dict[str, float] = field(default_factory=dict)
    power_mw: Dict[str, int] = field(default_factory=dict)
    power_avg_mw: Dict[str, int] = field(default_factory=dict)
    timestamp: Optional[str] = None


def _mb(value: str, unit: str) -> int:
    return int(round(int(value) * _TO_MB[unit]))


def _max_freq(freqs: Optional[str]) -> Optional[int]:
    """The clock of a "305" or "305,305" (one per GPC) frequency field: the highest one."""
    if not freqs:
        return None
    values = [int(f) for f in freqs.split(",") if f]
    return max(values) if values else None


def _parse_cpus(line: str) -> Tuple[List[Optional[int]], List[Optional[int]]]:
    match = _CPU_RE.search(line)
    if not match:
        return [], []
    shared_freq = int(match.group(2)) if match.group(2) else None
    loads: List[Optional[int]] = []
    freqs: List[Optional[int]] = []
    for entry in match.group(1).split(","):
        core = _CPU_CORE_RE.match(entry.strip())
        if core is None:  # "off" (or the blank entry of the oldest format): core powered down
            loads.append(None)
            freqs.append(None)
            continue
        loads.append(int(core.group(1)))
        freqs.append(int(core.group(2)) if core.group(2) else shared_freq)
    return loads, freqs


def parse_line(line: str) -> TegrastatsSample:
    """Parse one tegrastats output line; unknown tokens are ignored.

    Raises ValueError (quoting the line) when it has no ``RAM used/total`` field, the one field every
    tegrastats release prints; anything else missing is left None / empty.
    """
    text = line.strip()
    ram = _RAM_RE.search(text)
    if ram is None:
        raise ValueError("not a tegrastats line (no 'RAM used/total' field): %r" % (line,))
    ts = _TIMESTAMP_RE.match(text)
    swap = _SWAP_RE.search(text)
    loads, freqs = _parse_cpus(text)
    gr3d = _GR3D_RE.search(text)
    emc = _EMC_RE.search(text)

    temps: Dict[str, float] = {}
    for name, value in _TEMP_RE.findall(text):
        celsius = float(value)
        if celsius > _TEMP_SENTINEL_C:
            temps[name] = celsius

    power: Dict[str, int] = {}
    power_avg: Dict[str, int] = {}
    for name, current, average in _RAIL_RE.findall(text):
        if name not in power:
            power[name] = int(current)
            power_avg[name] = int(average)

    return TegrastatsSample(
        ram_used_mb=_mb(ram.group(1), ram.group(3)),
        ram_total_mb=_mb(ram.group(2), ram.group(3)),
        swap_used_mb=_mb(swap.group(1), swap.group(3)) if swap else None,
        swap_total_mb=_mb(swap.group(2), swap.group(3)) if swap else None,
        cpu_load_pct=loads,
        cpu_freq_mhz=freqs,
        gpu_load_pct=int(gr3d.group(1)) if gr3d and gr3d.group(1) is not None else None,
        gpu_freq_mhz=_max_freq(gr3d.group(2)) if gr3d else None,
        emc_load_pct=int(emc.group(1)) if emc else None,
        emc_freq_mhz=_max_freq(emc.group(2)) if emc else None,
        temps_c=temps,
        power_mw=power,
        power_avg_mw=power_avg,
        timestamp=ts.group(1) if ts else None,
    )


def _mean(values: List[float]) -> float:
    return float(sum(values)) / len(values)


def summarise(samples: Iterable[TegrastatsSample]) -> Dict[str, Any]:
    """JSON-friendly summary of a run's samples, to store next to its latency results.

    Keys: ``n``; ``ram_used_mb`` {max, mean}; ``gpu_load_pct`` {mean, max} over the samples that report a
    load (None when none do); ``power_mean_mw`` {rail: mean current mW} and ``temp_max_c`` {sensor: max C},
    each over the samples that carry that rail / sensor. Sensor names are kept as printed ("CPU" vs "cpu").
    """
    items = list(samples)
    summary: Dict[str, Any] = {
        "n": len(items),
        "ram_used_mb": None,
        "gpu_load_pct": None,
        "power_mean_mw": {},
        "temp_max_c": {},
    }
    if not items:
        return summary
    ram = [s.ram_used_mb for s in items]
    summary["ram_used_mb"] = {"max": max(ram), "mean": _mean([float(r) for r in ram])}
    gpu = [s.gpu_load_pct for s in items if s.gpu_load_pct is not None]
    if gpu:
        summary["gpu_load_pct"] = {"mean": _mean([float(g) for g in gpu]), "max": max(gpu)}
    rails: Dict[str, List[float]] = {}
    temps: Dict[str, float] = {}
    for s in items:
        for rail, mw in s.power_mw.items():
            rails.setdefault(rail, []).append(float(mw))
        for sensor, celsius in s.temps_c.items():
            temps[sensor] = max(celsius, temps.get(sensor, celsius))
    summary["power_mean_mw"] = {rail: _mean(values) for rail, values in sorted(rails.items())}
    summary["temp_max_c"] = dict(sorted(temps.items()))
    return summary


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def latency_columns(summary: Any) -> Dict[str, float]:
    """The latency table's tegrastats columns (`tegra_ram_used_max_mb`, `tegra_gpu_load_mean_pct`) from the
    `summarise` of a timed loop as a device sent it: only finite numbers where the summary has them."""
    summary = summary if isinstance(summary, dict) else {}
    cols: Dict[str, float] = {}
    for column, key, stat in (("tegra_ram_used_max_mb", "ram_used_mb", "max"), ("tegra_gpu_load_mean_pct", "gpu_load_pct", "mean")):
        part = summary.get(key)
        value = part.get(stat) if isinstance(part, dict) else None
        if _finite(value):
            cols[column] = float(value)
    return cols


class TegrastatsUnavailable(RuntimeError):
    """The tegrastats executable is not on this machine (not a Jetson, or not on PATH)."""


class TegrastatsSampler:
    """Run tegrastats in the background for the span of a `with` block and collect its parsed samples.

    ``with TegrastatsSampler(interval_ms=100) as s: run_benchmark()`` starts
    ``[executable, "--interval", "100"]``, reads its stdout in a daemon thread (lines that do not parse are
    counted in `bad_lines`, never fatal), and on exit terminates the process (SIGTERM, SIGKILL after a grace
    period). `samples`, `bad_lines`, `returncode` and `summary()` are then final. tegrastats stays in the
    caller's process group, so the host's group kill of a timed-out agent stops it too; an agent killed
    outright (its watchdog) takes tegrastats down with it at its next line (SIGPIPE on the closed pipe).

    Entering the block raises TegrastatsUnavailable when the executable cannot be found; use
    `TegrastatsSampler.available()` to check first, or `maybe_sampler()` to get None instead.
    """

    def __init__(self, interval_ms: int = 100, executable: str = "tegrastats", stop_timeout_s: float = 5.0) -> None:
        if int(interval_ms) <= 0:
            raise ValueError("interval_ms must be positive, got %r" % (interval_ms,))
        self.interval_ms = int(interval_ms)
        self.executable = executable
        self.stop_timeout_s = stop_timeout_s
        self.bad_lines = 0
        self.returncode: Optional[int] = None
        self._samples: List[TegrastatsSample] = []
        self._lock = threading.Lock()
        self._proc: Optional[subprocess.Popen] = None  # type: ignore[type-arg]
        self._reader: Optional[threading.Thread] = None

    @staticmethod
    def available(executable: str = "tegrastats") -> bool:
        """Whether `executable` resolves to a runnable program (PATH lookup via shutil.which)."""
        return shutil.which(executable) is not None

    @property
    def pid(self) -> Optional[int]:
        """Process id of the running (or last) tegrastats process, None before start."""
        return self._proc.pid if self._proc is not None else None

    @property
    def samples(self) -> List[TegrastatsSample]:
        """The samples parsed so far (a copy; final once the sampler has stopped)."""
        with self._lock:
            return list(self._samples)

    def summary(self) -> Dict[str, Any]:
        """`summarise` of the samples, plus the count of lines that did not parse."""
        result = summarise(self.samples)
        result["bad_lines"] = self.bad_lines
        result["interval_ms"] = self.interval_ms
        return result

    def start(self) -> "TegrastatsSampler":
        """Start tegrastats and the reader thread (what entering the `with` block does)."""
        if self._proc is not None:
            raise RuntimeError("this TegrastatsSampler was already started")
        path = shutil.which(self.executable)
        if path is None:
            raise TegrastatsUnavailable(
                "tegrastats executable %r not found (not a Jetson, or not on PATH); check "
                "TegrastatsSampler.available() or use maybe_sampler()" % (self.executable,)
            )
        self._proc = subprocess.Popen(
            [path, "--interval", str(self.interval_ms)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            universal_newlines=True,
            errors="replace",
            bufsize=1,
        )
        self._reader = threading.Thread(target=self._read, name="tegrastats-reader", daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        proc = self._proc
        if proc is None or proc.stdout is None:
            return
        for raw in proc.stdout:
            if not raw.strip():
                continue
            try:
                sample = parse_line(raw)
            except ValueError:
                with self._lock:
                    self.bad_lines += 1
                continue
            with self._lock:
                self._samples.append(sample)

    def _signal(self, sig: int) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        try:
            if sig == signal.SIGTERM:
                proc.terminate()
            else:
                proc.kill()
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self) -> None:
        """Terminate tegrastats, wait for it, and let the reader drain what it had printed."""
        proc = self._proc
        if proc is None:
            return
        self._signal(signal.SIGTERM)
        try:
            proc.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            self._signal(getattr(signal, "SIGKILL", signal.SIGTERM))
            proc.wait(timeout=self.stop_timeout_s)
        if self._reader is not None:
            self._reader.join(timeout=self.stop_timeout_s)
        if proc.stdout is not None and (self._reader is None or not self._reader.is_alive()):
            proc.stdout.close()
        self.returncode = proc.returncode

    def __enter__(self) -> "TegrastatsSampler":
        return self.start()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.stop()


def maybe_sampler(interval_ms: int = 100, executable: str = "tegrastats") -> Optional[TegrastatsSampler]:
    """A TegrastatsSampler where the executable exists, else None (for code that runs on any device)."""
    if not TegrastatsSampler.available(executable):
        return None
    return TegrastatsSampler(interval_ms=interval_ms, executable=executable)
