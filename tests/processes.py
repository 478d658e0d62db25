"""Processes of this machine by command line, for the tests that check nothing outlives a stopped job (local,
SSH on loopback and the adb stand-in all run their "board" processes here)."""

from __future__ import annotations

import time
from pathlib import Path


def live_pids(mark: str) -> list[int]:
    """Pids of live (not zombie) processes whose command line contains `mark`."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if mark.encode() in (proc / "cmdline").read_bytes() and (proc / "stat").read_text().split(") ")[-1][:1] != "Z":
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def all_gone(mark: str, within_s: float = 10.0) -> bool:
    """True once no live process's command line contains `mark` (polled for up to `within_s` seconds)."""
    deadline = time.monotonic() + within_s
    while live_pids(mark) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not live_pids(mark)
