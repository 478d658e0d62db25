"""A real `adbd` for the `adb` tests: Debian trixie's adbd (34.0.5, Android 14's platform-tools) in a Debian root,
x86-64 or arm64 (the arm64 one under qemu-user, as the arm64 board), reached by bookworm's stock `adb` client.

No Android emulator or system image can be obtained here, but the daemon that a phone runs can: with it, the
adb device's own code path (adb client -> adb server -> adbd -> shell_v2 -> the device's shell) is the real one.
Built once from Debian's packages and cached beside the arm64 board (`boards/debian-trixie-<arch>-adbd/`):

- `debootstrap --variant=minbase --include=python3,adbd trixie` (amd64 ~40-70 s; arm64 under qemu-user ~15 min,
  once) and the host's pip installs the board's numpy, onnxruntime and ai-edge-litert wheels for the root's
  CPython 3.13 (`arm64_board.build_root`);
- Android's shell user (uid 2000, `shell`) owns /data/local/tmp, and adbd runs as that user, so every command
  and the agent run unprivileged, as they do on a phone;
- a `getprop` stand-in answers the properties edgecam reads (model, ABI, release, `ro.kernel.qemu` = 1 on the
  emulated arm64 root: its latency is qemu's, not a phone's); the arm64 root gets the arm64 board's Cortex-A76
  /proc/cpuinfo and `QEMU_CPU`.

adbd listens on every interface **with no authentication** (`ADBD_PORT=N adbd`: "authentication not required"),
so it lives in a network namespace of its own (`ip netns add`, loopback up) and the adb client runs inside the
same namespace through a wrapper script (`nsenter --net`), which edgecam is given as its `adb` setting; the adb
server that the client starts lives there too. Nothing outside the namespace can reach the port (a test checks it).
Ports 5555-5585 would also show up as a phantom `emulator-NNNN`, so the board uses one outside them.

    .venv/bin/python tests/adb_board.py build amd64|arm64   # build or reuse (what `make adb-board` runs)
    .venv/bin/python tests/adb_board.py shell amd64|arm64   # start it and print the devices.toml entry

Needs root (debootstrap, mounts, chroot, network namespaces); the tests skip with that reason elsewhere.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from arm64_board import (BOARD_PACKAGES, QEMU_CPU, BoardUnavailable, Mounts, _cpuinfo, _ensure_tools, _run, board_dir, build_root, manylinux,
                         mount_root, serve_until_stopped)

SUITE = "trixie"
PYVER = "3.13"  # trixie's python3
GLIBC_MINOR = 41  # trixie's glibc 2.41
ADBD = "/usr/lib/android-sdk/platform-tools/adbd"
SHELL_UID = 2000  # Android's `shell` user: what adbd's commands run as on a phone
PORT = 7555  # outside 5555-5585 (the adb server's emulator range); the namespace is the board's own, so any port is free
ARCHES = {"amd64": ("x86_64", "x86_64"), "arm64": ("aarch64", "arm64-v8a")}  # Debian arch -> (machine, Android ABI)
PATH = "/usr/local/bin:/usr/bin:/bin"


def _getprop(arch: str) -> str:
    """The `getprop` stand-in: the properties `AdbDevice.info` reads, printed as Android's getprop does ("[k]: [v]"
    per line; `getprop KEY` prints the value). The release is that of the platform-tools adbd comes from."""
    machine, abi = ARCHES[arch]
    props = {
        "ro.product.model": f"edgecam adbd board (Debian {SUITE} {arch}, not Android)",
        "ro.product.manufacturer": "Debian adbd 34.0.5",
        "ro.product.cpu.abi": abi,
        "ro.build.version.release": "14",
        "ro.build.version.sdk": "34",
        "ro.hardware": f"qemu-user {machine}" if arch == "arm64" else machine,
        "ro.kernel.qemu": "1" if arch == "arm64" else "0",  # arm64 runs under qemu-user: emulated latency
    }
    lines = "\n".join(f"[{k}]: [{v}]" for k, v in props.items())
    return ("#!/bin/sh\n# getprop stand-in for edgecam's adb tests (tests/adb_board.py): a Debian root with adbd is not Android\n"
            f"props='{lines}'\n"
            'if [ $# -eq 0 ]; then printf "%s\\n" "$props"; else printf "%s\\n" "$props" | sed -n "s/^\\[$1\\]: \\[\\(.*\\)\\]$/\\1/p"; fi\n')


def _finish(root: Path, arch: str) -> Callable[[Path], None]:
    def finish(rootfs: Path) -> None:
        getprop = rootfs / "usr" / "local" / "bin" / "getprop"
        getprop.parent.mkdir(parents=True, exist_ok=True)
        getprop.write_text(_getprop(arch))
        getprop.chmod(0o755)
        for name, line in (("passwd", f"shell:x:{SHELL_UID}:{SHELL_UID}::/data/local/tmp:/bin/sh\n"), ("group", f"shell:x:{SHELL_UID}:\n")):
            path = rootfs / "etc" / name
            if not any(ln.startswith("shell:") for ln in path.read_text().splitlines()):
                with path.open("a") as f:
                    f.write(line)
        tmp = rootfs / "data" / "local" / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        os.chown(tmp, SHELL_UID, SHELL_UID)
        tmp.chmod(0o771)
        if arch == "arm64":
            (root / "cpuinfo").write_text(_cpuinfo(rootfs))
    return finish


def build(arch: str, log: Callable[[str], None] = print) -> Path:
    """The cached root of the `arch` adbd board (built when missing, wheels refreshed when the host's versions
    changed); returns its directory (rootfs/, board.json, cpuinfo on arm64)."""
    if arch not in ARCHES:
        raise ValueError(f"adb board arch {arch!r}: expected one of {', '.join(ARCHES)}")
    _ensure_tools(arm64=arch == "arm64")
    if not shutil.which("adb"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        _run(["apt-get", "install", "-y", "-q", "adb"], env=env)  # the stock client (bookworm: 29.0.6)
    root = board_dir(f"debian-{SUITE}-{arch}-adbd", f"EDGECAM_ADB_BOARD_DIR_{arch.upper()}")
    want = {"suite": SUITE, "python": PYVER, "adbd": "adbd", **{p: md.version(p) for p in BOARD_PACKAGES}}
    build_root(root, SUITE, arch, "python3,adbd", want, PYVER, manylinux(ARCHES[arch][0], GLIBC_MINOR), _finish(root, arch), log)
    return root


@dataclass
class AdbBoard:
    """A started adbd board: its namespace, the client wrapper edgecam uses as `adb`, and the daemon's process."""

    arch: str
    root: Path
    netns: str
    home: Path  # the adb client's HOME (its keys) and the wrapper
    mounts: Mounts
    port: int = PORT
    proc: "subprocess.Popen[bytes] | None" = None
    log: Path = field(default=Path("/dev/null"))

    @property
    def rootfs(self) -> Path:
        return self.root / "rootfs"

    @property
    def serial(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def adb(self) -> Path:
        return self.home / "adb"

    @property
    def python(self) -> str:
        return "/usr/bin/python3"

    @property
    def workdir(self) -> str:
        """edgecam's folder on the device: one per started board (the root is cached; a test counts what is left)."""
        return f"/data/local/tmp/{self.netns}"

    def client(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """The adb client inside the board's namespace (`adb ARGS`), output captured."""
        return subprocess.run([str(self.adb), *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def start_adbd(self, wait_s: float = 120, connect: bool = True) -> None:
        """Start adbd (as the shell user, chrooted, in the namespace) and connect the client to it (`connect=False`:
        only wait until it listens, and leave the reconnecting to the code under test)."""
        env = ["PATH=" + PATH, "HOME=/data/local/tmp", "TMPDIR=/data/local/tmp", f"ADBD_PORT={self.port}"]
        if self.arch == "arm64":
            env.append(f"QEMU_CPU={QEMU_CPU}")
        started = self.log.read_text(errors="replace").count("adbd started") if self.log.exists() else 0
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{self.netns}", "chroot", f"--userspec={SHELL_UID}:{SHELL_UID}", str(self.rootfs), "/usr/bin/env", "-i", *env, ADBD],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            )
        deadline = time.monotonic() + wait_s
        said = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BoardUnavailable(f"adbd exited {self.proc.returncode}: {self.log.read_text()[-1500:]}")
            if not connect:
                if self.log.read_text(errors="replace").count("adbd started") > started:
                    return
                time.sleep(0.1)
                continue
            self.client("disconnect", self.serial)  # a connection to a previous adbd is offline for good
            said = (self.client("connect", self.serial).stdout or "").strip()
            if said.startswith(("connected", "already connected")) and self.client("-s", self.serial, "get-state").stdout.strip() == "device":
                return
            time.sleep(0.5)
        raise BoardUnavailable(f"adbd on {self.serial} in {self.netns} did not come up in {wait_s:g} s (adb connect said {said!r}); log: {self.log.read_text()[-1500:]}")

    def kill_adbd(self) -> None:
        """SIGKILL the daemon (what a phone's adbd crash or a pulled cable looks like to the client)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def processes(self) -> list[int]:
        """Pids of the processes running inside the board's root (the agents, their shells; adbd itself aside)."""
        target, pids = str(self.rootfs.resolve()), []
        for p in Path("/proc").iterdir():
            if p.name.isdigit() and (self.proc is None or int(p.name) != self.proc.pid):
                try:
                    if os.readlink(p / "root") == target:
                        pids.append(int(p.name))
                except OSError:
                    pass
        return pids

    def spec(self, name: str = "phone", **common: Any) -> Any:
        """The `DeviceSpec` that reaches this board (python set: the agent runs on the root's CPython 3.13)."""
        from edgecam.devices.spec import DeviceSpec

        return DeviceSpec(name, url=f"adb://{self.serial}", python=self.python, workdir=self.workdir, settings={"adb": str(self.adb)}, **common)

    def inventory(self, name: str = "phone") -> str:
        return f'[[devices]]\nname = "{name}"\nurl = "adb://{self.serial}"\npython = "{self.python}"\nworkdir = "{self.workdir}"\nadb = "{self.adb}"\n'

    def stop(self) -> None:
        """Stop the adb server and adbd, kill what still runs in the root, unmount, delete the namespace."""
        try:
            self.client("kill-server", timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill_adbd()
        for pid in self.processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.mounts.release()
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
        shutil.rmtree(self.rootfs / self.workdir.lstrip("/"), ignore_errors=True)


def start(arch: str, tmp: Path, log: Callable[[str], None] = print) -> AdbBoard:
    """Build (or reuse) the `arch` root, mount /proc and /sys in it, make the namespace and start adbd there."""
    if not shutil.which("ip") or not shutil.which("nsenter"):
        raise BoardUnavailable("the adb board needs iproute2's `ip` and util-linux's `nsenter` (network namespaces)")
    root = build(arch, log)
    mounts = mount_root(root / "rootfs", root / "cpuinfo" if arch == "arm64" else None)
    netns = f"edgecam-adb-{uuid.uuid4().hex[:8]}"
    home = tmp / "adb-home"
    home.mkdir(parents=True, exist_ok=True)
    board = AdbBoard(arch, root, netns, home, mounts, log=tmp / "adbd.log")
    try:
        _run(["ip", "netns", "add", netns])
        _run(["ip", "netns", "exec", netns, "ip", "link", "set", "lo", "up"])
        board.adb.write_text(f"#!/bin/sh\n# the adb client inside {netns}, with a HOME of its own (keys, server)\nexport HOME='{home}'\n"
                             f"exec nsenter --net=/run/netns/{netns} {shutil.which('adb')} \"$@\"\n")
        board.adb.chmod(0o755)
        board.start_adbd()
    except BaseException:
        board.stop()
        raise
    return board


def port_open_here(port: int = PORT) -> bool:
    """Whether anything answers on 127.0.0.1:`port` from the calling process's network namespace."""
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def board_session(arch: str) -> Iterator[AdbBoard]:
    """Generator for a pytest fixture: the started board, stopped and cleaned afterwards; skips without root."""
    import pytest

    if os.geteuid() != 0:
        pytest.skip("the adbd board needs root (debootstrap, chroot, mounts, network namespaces)")
    tmp = Path(tempfile.mkdtemp(prefix=f"edgecam-adb-{arch}-"))
    board = start(arch, tmp, log=lambda m: print(m, flush=True))
    try:
        yield board
    finally:
        board.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "build" and argv[1] in ARCHES:
        t0 = time.monotonic()
        root = build(argv[1])
        print(f"adbd board ({argv[1]}) ready in {time.monotonic() - t0:.1f} s at {root}")
        return 0
    if len(argv) == 2 and argv[0] == "shell" and argv[1] in ARCHES:
        board = start(argv[1], Path(tempfile.mkdtemp(prefix="edgecam-adb-")))
        print(board.inventory())
        serve_until_stopped(f"board up ({board.netns})", board.stop)
        return 0
    sys.stderr.write("usage: adb_board.py build|shell amd64|arm64\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
