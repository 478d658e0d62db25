"""A real OpenSSH server on a free loopback port, for the SSH device tests.

Installs Debian's `openssh-server` when sshd is missing (as root), generates a host key and a user key, and
starts `sshd -D` with key authentication only (no passwords, no root login). As root, the login user is a
dedicated unprivileged account whose "board" Python is a separate venv holding only numpy and onnxruntime
(no torch, no edgecam): the agent must run from its zipapp alone, as on a Jetson. As a normal user, sshd
runs unprivileged and the login user is the current one.
"""

from __future__ import annotations

import getpass
import importlib.metadata as md
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

BOARD_USER = "edgecam-board"
BOARD_VENV = Path("/opt/edgecam-board-venv")
SSHD = Path("/usr/sbin/sshd")


@dataclass
class SshServer:
    proc: subprocess.Popen[bytes]
    port: int
    user: str
    key_file: Path
    known_hosts: Path
    python: str
    home: Path
    log: Path

    @property
    def url(self) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}"

    def connection_pids(self) -> list[int]:
        """sshd processes serving live connections (children of the listener): killing them drops the link."""
        import psutil

        return [c.pid for c in psutil.Process(self.proc.pid).children(recursive=True) if c.name().startswith("sshd")]

    def drop_connections(self) -> list[int]:
        """Kill (SIGKILL) the sshd processes serving live connections: every client's link drops at once."""
        pids = self.connection_pids()
        for pid in pids:
            subprocess.run(["kill", "-9", str(pid)], check=False)
        return pids

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw)  # type: ignore[call-overload]


def _ensure_sshd() -> None:
    if SSHD.exists():
        return
    if os.geteuid() != 0:
        pytest.skip("sshd is not installed and we are not root to `apt-get install openssh-server`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    proc = subprocess.run(["apt-get", "install", "-y", "-q", "openssh-server"], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env)
        proc = subprocess.run(["apt-get", "install", "-y", "-q", "openssh-server"], capture_output=True, text=True, env=env)
    if proc.returncode != 0 or not SSHD.exists():
        pytest.fail(f"could not install openssh-server: {proc.stderr[-2000:]}")


def _ensure_board_user() -> Path:
    try:
        _run(["id", BOARD_USER])
    except subprocess.CalledProcessError:
        _run(["useradd", "--create-home", "--shell", "/bin/sh", BOARD_USER])
    _run(["usermod", "-p", "*", BOARD_USER])  # no password, but not "locked" ("!"), which sshd refuses
    home = Path(f"/home/{BOARD_USER}")
    return home


def _ensure_board_python() -> str:
    """A torch-free Python for the board user: Debian's python3 + numpy + the host's onnxruntime version."""
    py = BOARD_VENV / "bin" / "python"
    want = {"numpy": md.version("numpy"), "onnxruntime": md.version("onnxruntime")}
    if py.exists():
        check = subprocess.run([str(py), "-c", "import numpy, onnxruntime; print(numpy.__version__, onnxruntime.__version__)"], capture_output=True, text=True)
        if check.returncode == 0 and check.stdout.split() == [want["numpy"], want["onnxruntime"]]:
            return str(py)
        shutil.rmtree(BOARD_VENV)
    base = shutil.which("python3", path="/usr/bin") or sys.executable
    _run([base, "-m", "venv", str(BOARD_VENV)])
    _run([str(py), "-m", "pip", "install", "-q", *(f"{k}=={v}" for k, v in want.items())], timeout=900)
    _run(["chmod", "-R", "a+rX", str(BOARD_VENV)])
    return str(py)


def start_sshd(root: Path, chroot: Path | None = None, python: str | None = None, env: dict[str, str] | None = None, sftp: bool = True) -> SshServer:
    """Start sshd on a free loopback port; `root` holds keys, config and log (world-readable where needed).
    With `chroot` (root only), every session of the board user runs inside that root file system
    (`ChrootDirectory`: the emulated arm64 board of `arm64_board.py`), with `python` the board's Python there;
    `env` is set in every session (`SetEnv`); `sftp=False` leaves out the SFTP subsystem (as many boards' sshd)."""
    _ensure_sshd()
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    host_key = root / "host_ed25519"
    user_key = root / "user_ed25519"
    for key in (host_key, user_key):
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgecam-test", "-f", str(key)])
    auth = root / "authorized_keys"
    shutil.copy(user_key.with_suffix(".pub"), auth)
    auth.chmod(0o644)
    if chroot is not None:
        if os.geteuid() != 0:
            raise RuntimeError("a chrooted board needs root (sshd's ChrootDirectory)")
        _ensure_board_user()
        user, home = BOARD_USER, chroot / "home" / BOARD_USER
        python = python or "python3"
        Path("/run/sshd").mkdir(exist_ok=True)
    elif os.geteuid() == 0:
        user, home, python = BOARD_USER, _ensure_board_user(), _ensure_board_python()
        Path("/run/sshd").mkdir(exist_ok=True)  # privilege-separation directory
    else:
        user, home, python = getpass.getuser(), Path.home(), sys.executable
    port = _free_port()
    config = root / "sshd_config"
    log = root / "sshd.log"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {host_key}",
                f"AuthorizedKeysFile {auth}",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin no",
                f"AllowUsers {user}",
                "UsePAM no",
                "StrictModes no",
                f"PidFile {root / 'sshd.pid'}",
                "LogLevel VERBOSE",
                *(["Subsystem sftp internal-sftp"] if sftp else []),
                *([f"ChrootDirectory {chroot}"] if chroot is not None else []),
                *([f"SetEnv {' '.join(f'{k}={v}' for k, v in env.items())}"] if env else []),
                "",
            ]
        )
    )
    proc = subprocess.Popen([str(SSHD), "-D", "-f", str(config), "-E", str(log)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited {proc.returncode}: {proc.stderr.read().decode() if proc.stderr else ''} {log.read_text() if log.exists() else ''}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError(f"sshd did not listen on 127.0.0.1:{port} within 20 s")
    known = root / "known_hosts"
    host_pub = host_key.with_suffix(".pub").read_text().split()
    known.write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    assert python is not None
    return SshServer(proc, port, user, user_key, known, python, home, log)


# -- fixtures for the SSH test modules (import them by name: `from sshd_server import board, sshd`) ---------
@pytest.fixture(scope="module")
def sshd() -> Iterator[SshServer]:
    """A running sshd for the module (its root not under pytest's 0700 tmp: sshd reads it as the board user)."""
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="edgecam-sshd-"))
    server = start_sshd(root)
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(Path(server.home) / board_workdir(server), ignore_errors=True)


def board_workdir(server: SshServer) -> str:
    """The board's work directory for `server` (relative to the board user's home): one per server."""
    return f".cache/edgecam-test-{server.port}"


def board_spec(server: SshServer, **changes: Any) -> Any:
    """The inventory entry of the loopback board (key, known_hosts, its torch-free Python, 4 retries), with a
    work directory of its own per server: the board user is shared with any other loopback sshd running (a
    benchmark's), and tests count the jobs and agents left on the board."""
    from edgecam.devices.inventory import DeviceSpec

    spec = DeviceSpec("board", url=server.url, python=server.python, workdir=board_workdir(server),
                      settings={"key_file": str(server.key_file), "known_hosts": str(server.known_hosts), "retries": 4})
    return spec.replace(**changes)


@pytest.fixture()
def board(sshd: SshServer) -> Iterator[Any]:
    """An SSHDevice on the loopback board with a short backoff; closed after the test."""
    from edgecam.devices.inventory import open_device
    from edgecam.devices.ssh import SSHDevice

    device = open_device(board_spec(sshd))
    assert isinstance(device, SSHDevice)
    device.backoff_s = 0.2
    yield device
    device.close()
