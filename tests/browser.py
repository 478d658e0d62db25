"""Headless Chromium for the report tests: installed with apt-get when missing (as the sshd tests do), run
with the flags this closed network needs (DESIGN.md), and asked for the DOM after load, a screenshot and
its console log."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--hide-scrollbars"]


def ensure_chromium() -> str | None:
    """Path of a chromium binary, installing Debian's `chromium` if root and apt-get are there; None if not."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], env=env, capture_output=True, timeout=900)
    return shutil.which("chromium")


def render(binary: str, page: Path, screenshot: Path | None = None, size: str = "1400,2400") -> tuple[str, str]:
    """(DOM after load, stderr with the console log) of `page` opened in headless Chromium."""
    with tempfile.TemporaryDirectory(prefix="edgecam-chromium-") as profile:
        # no --virtual-time-budget: it would fake the clock that the page's own load timing reads
        args = [binary, *FLAGS, f"--user-data-dir={profile}", f"--window-size={size}", "--enable-logging=stderr", "--v=0"]
        if screenshot is not None:
            subprocess.run([*args, f"--screenshot={screenshot}", page.resolve().as_uri()], capture_output=True, timeout=120, check=True)
        proc = subprocess.run([*args, "--dump-dom", page.resolve().as_uri()], capture_output=True, text=True, timeout=120, check=True)
    return proc.stdout, proc.stderr
