"""An emulated aarch64 board for the `arm64` tests: Debian's arm64 userland under qemu-user, behind a real sshd.

Built once from Debian's packages and cached under edgecam's cache (`boards/debian-bookworm-arm64/`):

- `debootstrap --arch=arm64 --variant=minbase --include=python3 bookworm` makes the root file system (arm64
  binaries all through: dash, Python 3.11, glibc), run through `qemu-user-static` + `binfmt-support` (the
  kernel's binfmt_misc hands every aarch64 ELF to qemu, with the F flag so it works inside a chroot);
- the board's Python packages are the aarch64 wheels of the host's numpy, onnxruntime and ai-edge-litert
  versions, installed by the host's pip with `--platform manylinux_*_aarch64 --target` (no emulated pip, no
  torch, no edgecam: the agent runs from its zipapp, as on a Jetson);
- the emulated CPU is a Cortex-A76 (`QEMU_CPU=cortex-a76`: the Raspberry Pi 5's core; ARMv8.2 with the
  dot-product instructions, no SVE). qemu's default `max` CPU also offers SVE2, SME and I8MM, and with it
  LiteRT's int8 kernels computed wrong logits (max |diff| 176 of 255 quantized steps vs x86 on one input,
  CC -0.01 between its CAMs and fp32's) where cortex-a72, cortex-a76, neoverse-n1 and a64fx all matched x86
  exactly: an emulator defect, not a board's behaviour;
- `cpuinfo` is the board's /proc/cpuinfo: the host's would list x86 CPUs, on which onnxruntime's cpuinfo
  library crashes in an aarch64 process. It lists the host's CPU count, the features the emulated CPU
  reports in its HWCAP auxiliary vector and the Cortex-A76's MIDR fields (implementer 0x41, part 0xd0b).
  `agent.probe` knows the board is emulated by the kernel's own architecture (/proc/sys/kernel/arch says
  x86_64 under an aarch64 userland).

`start_board()` mounts /proc, a read-only /sys and that cpuinfo inside the root, then starts the test suite's
sshd (`sshd_server.start_sshd`) with `ChrootDirectory` on it: the transport is the host's OpenSSH, every
process of a session (shell, agent, runtime kernels) is aarch64 code. `stop()` unmounts what it mounted.

    .venv/bin/python tests/arm64_board.py build    # build or reuse the board (what `make arm64-board` runs)
    .venv/bin/python tests/arm64_board.py shell    # start it and print the inventory entry to reach it

Needs root (debootstrap, mounts, sshd's chroot) and Debian's apt; the tests skip with that reason elsewhere.
"""

from __future__ import annotations

import fcntl
import importlib.metadata as md
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from sshd_server import BOARD_USER, SshServer, _ensure_board_user, start_sshd

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PYVER = "3.11"  # bookworm's python3
BOARD_PACKAGES = ("numpy", "onnxruntime", "ai-edge-litert")  # at the host's versions
APT_PACKAGES = ("qemu-user-static", "binfmt-support", "debootstrap")
#: glibc of bookworm is 2.36: every manylinux tag up to it (pip needs them spelled out for a foreign platform)
PLATFORMS = ["manylinux_2_%d_aarch64" % v for v in range(36, 16, -1)] + ["manylinux2014_aarch64"]  # == manylinux("aarch64", 36)
BINFMT = Path("/proc/sys/fs/binfmt_misc")
QEMU_CPU = "cortex-a76"  # what every process of the board runs on (sshd's SetEnv; qemu-user reads it)
MIDR = {"implementer": "0x41", "variant": "0x4", "part": "0xd0b", "revision": "1"}  # Cortex-A76 r4p1, as qemu's model reports

# Linux arm64 HWCAP / HWCAP2 bit names (arch/arm64/include/uapi/asm/hwcap.h), in bit order: the Features line
HWCAP = ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve "
         "asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg").split()
HWCAP2 = ("dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svef32mm svef64mm svebf16 i8mm bf16 dgh rng bti mte ecv "
          "afp rpres mte3 sme sme_i16i64 sme_f64f64 sme_i8i32 sme_f16f32 sme_b16f32 sme_f32f32 sme_fa64 wfxt ebf16 sve_ebf16 cssc rprfm sve2p1").split()
HWCAP_PROBE = "import ctypes; g = ctypes.CDLL(None).getauxval; g.restype = ctypes.c_ulong; print(g(16), g(26))"  # AT_HWCAP, AT_HWCAP2


class BoardUnavailable(RuntimeError):
    """This machine cannot build or start the board (not root, no apt, no binfmt_misc): the reason says which."""


def board_dir(name: str = f"debian-{SUITE}-arm64", env_var: str = "EDGECAM_BOARD_DIR") -> Path:
    """Where a board lives: $EDGECAM_BOARD_DIR, else ~/.cache/edgecam/boards/debian-bookworm-arm64 (never under
    the test session's temporary EDGECAM_CACHE_DIR: sshd chroots only into a path whose every component is
    root-owned and not writable by others, which /tmp is not, and the board is worth keeping across runs)."""
    env = os.environ.get(env_var)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "edgecam" / "boards" / name


def check_chroot_path(rootfs: Path) -> None:
    """sshd's ChrootDirectory rule, checked up front with a clear message: every component of the path is
    owned by root and writable by nobody else."""
    for p in [rootfs.resolve(), *rootfs.resolve().parents]:
        st = p.stat()
        if st.st_uid != 0 or st.st_mode & 0o022:
            raise BoardUnavailable(f"the board's root {rootfs} cannot be chrooted into by sshd: {p} is not root-owned or is group/world-writable "
                                   "(set EDGECAM_BOARD_DIR to a path under a root-owned, non-shared directory)")


def _run(argv: list[str], timeout: float = 1800, **kw: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise BoardUnavailable(f"{' '.join(argv[:4])} ... exited {proc.returncode}: {(proc.stderr or proc.stdout)[-1500:]}")
    return proc


def _ensure_tools(arm64: bool = True) -> None:
    """qemu-user-static, binfmt-support and debootstrap from Debian's apt; the aarch64 binfmt handler enabled
    (`arm64=False`: debootstrap alone, for a root of the host's own architecture)."""
    if os.geteuid() != 0:
        raise BoardUnavailable("building a board's root needs root (debootstrap, mounts, chroot)")
    if not all(shutil.which(t) for t in ("qemu-aarch64-static", "update-binfmts", "debootstrap")):
        if not shutil.which("apt-get"):
            raise BoardUnavailable(f"no apt-get to install {', '.join(APT_PACKAGES)}")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        proc = subprocess.run(["apt-get", "install", "-y", "-q", *APT_PACKAGES], capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env)
            _run(["apt-get", "install", "-y", "-q", *APT_PACKAGES], env=env)
    if not arm64:
        return
    if not (BINFMT / "register").exists():
        _run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)])
    entry = BINFMT / "qemu-aarch64"
    if not entry.exists() or not entry.read_text().startswith("enabled"):
        _run(["update-binfmts", "--enable", "qemu-aarch64"])
    text = entry.read_text() if entry.exists() else ""
    if not text.startswith("enabled") or "F" not in next(((ln.split() + [""])[1] for ln in text.splitlines() if ln.startswith("flags:")), ""):
        raise BoardUnavailable(f"binfmt_misc has no enabled qemu-aarch64 handler with the F (fix binary) flag: {text!r}")


def wanted() -> dict[str, str]:
    """What the board must hold: Debian suite and the host's versions of the board's Python packages."""
    return {"suite": SUITE, "python": PYVER, **{p: md.version(p) for p in BOARD_PACKAGES}}


@dataclass(frozen=True)
class BoardImage:
    """A built board: its directory, root file system, cpuinfo stand-in and build facts."""

    root: Path
    facts: dict[str, object]

    @property
    def rootfs(self) -> Path:
        return self.root / "rootfs"

    @property
    def cpuinfo(self) -> Path:
        return self.root / "cpuinfo"

    @property
    def python(self) -> str:
        return "/usr/bin/python3"  # inside the chroot


def manylinux(arch: str, glibc_minor: int) -> list[str]:
    """Every manylinux platform tag a root with glibc 2.`glibc_minor` runs (pip needs them spelled out for a foreign platform)."""
    return [f"manylinux_2_{v}_{arch}" for v in range(glibc_minor, 16, -1)] + [f"manylinux2014_{arch}"]


def _install_wheels(rootfs: Path, want: dict[str, str], pyver: str = PYVER, platforms: list[str] = PLATFORMS) -> None:
    """The wheels of the board's packages (`platforms`' builds for CPython `pyver`) into the root's /usr/local
    dist-packages, by the host's pip: no pip runs inside the root."""
    site = rootfs / "usr" / "local" / "lib" / f"python{pyver}" / "dist-packages"
    shutil.rmtree(site, ignore_errors=True)
    tags = [a for p in platforms for a in ("--platform", p)]
    pins = [f"{p}=={want[p]}" for p in BOARD_PACKAGES]
    _run([sys.executable, "-m", "pip", "install", "-q", "--no-warn-conflicts", "--target", str(site), *tags, "--python-version", pyver,
          "--implementation", "cp", "--only-binary=:all:", *pins], timeout=900)


def _cpuinfo(rootfs: Path) -> str:
    """The board's /proc/cpuinfo: one ARM block per host CPU, Features = the emulated CPU's HWCAP bits."""
    out = _run(["chroot", str(rootfs), "/usr/bin/python3", "-c", HWCAP_PROBE], env={**os.environ, "QEMU_CPU": QEMU_CPU}).stdout.split()
    hw, hw2 = int(out[0]), int(out[1])
    feats = [n for i, n in enumerate(HWCAP) if hw >> i & 1] + [n for i, n in enumerate(HWCAP2) if hw2 >> i & 1]
    block = ("processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {f}\nCPU implementer\t: {m[implementer]}\nCPU architecture: 8\n"
             "CPU variant\t: {m[variant]}\nCPU part\t: {m[part]}\nCPU revision\t: {m[revision]}\n\n")
    return "".join(block.format(i=i, f=" ".join(feats), m=MIDR) for i in range(os.cpu_count() or 1))


def _add_user(rootfs: Path, user: str) -> None:
    """The host's board user (same uid / gid) in the root's passwd and group, with a home of its own there."""
    import grp
    import pwd

    pw = pwd.getpwnam(user)
    for name, line in (("passwd", f"{user}:x:{pw.pw_uid}:{pw.pw_gid}::/home/{user}:/bin/sh\n"), ("group", f"{grp.getgrgid(pw.pw_gid).gr_name}:x:{pw.pw_gid}:\n")):
        path = rootfs / "etc" / name
        if not any(ln.split(":")[0] == line.split(":")[0] for ln in path.read_text().splitlines()):
            with path.open("a") as f:
                f.write(line)
    home = rootfs / "home" / user
    home.mkdir(parents=True, exist_ok=True)
    os.chown(home, pw.pw_uid, pw.pw_gid)


def build_root(root: Path, suite: str, arch: str, include: str, want: dict[str, str], pyver: str, platforms: list[str],
               finish: Callable[[Path], None], log: Callable[[str], None] = print) -> dict[str, object]:
    """A cached Debian root under `root`/rootfs, built when missing (`debootstrap --variant=minbase
    --include=INCLUDE`) and its wheels refreshed when `want` (the host's package versions) changed; `finish(rootfs)`
    adds what the board needs (users, stand-ins) on every call. A lock keeps two builders apart; a half-built root
    is never used. Returns the build facts (board.json)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = root / "board.json"
        facts = json.loads(stamp.read_text()) if stamp.is_file() else {}
        rootfs = root / "rootfs"
        t0 = time.monotonic()
        if not (rootfs / "usr" / "bin" / "python3").exists():
            part = root / "rootfs.partial"
            if part.exists():
                _unmount_all(part)
                shutil.rmtree(part)
            log(f"board: debootstrap {suite} {arch} ({include}) into {part} (minutes, once)")
            _run(["debootstrap", f"--arch={arch}", "--variant=minbase", f"--include={include}", suite, str(part), MIRROR], timeout=3600)
            shutil.rmtree(rootfs, ignore_errors=True)
            part.rename(rootfs)
            facts = {"debootstrap_s": round(time.monotonic() - t0, 1)}
        if {k: facts.get(k) for k in want} != want:
            t1 = time.monotonic()
            log(f"board: {arch} wheels {', '.join(f'{p} {want[p]}' for p in BOARD_PACKAGES)}")
            _install_wheels(rootfs, want, pyver, platforms)
            facts = {**facts, **want, "wheels_s": round(time.monotonic() - t1, 1)}
        finish(rootfs)
        stamp.write_text(json.dumps(facts, indent=1))
    return facts


def build_board(user: str, log: Callable[[str], None] = print) -> BoardImage:
    """The cached board, built when missing (debootstrap ~2-5 min) or refreshed when the host's package
    versions changed (wheels only, seconds)."""
    _ensure_tools()
    root = board_dir()

    def finish(rootfs: Path) -> None:
        _add_user(rootfs, user)
        (root / "cpuinfo").write_text(_cpuinfo(rootfs))

    facts = build_root(root, SUITE, "arm64", "python3", wanted(), PYVER, PLATFORMS, finish, log)
    return BoardImage(root, facts)


def _mounted(path: Path) -> bool:
    target = str(path.resolve())
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def _unmount_all(rootfs: Path) -> None:
    """Every mount under `rootfs`, deepest first (before a root is removed: never delete through a mount)."""
    prefix = str(rootfs.resolve()) + "/"
    with open("/proc/self/mountinfo") as f:
        points = [ln.split()[4] for ln in f if ln.split()[4].startswith(prefix)]
    for p in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", p], capture_output=True)


@dataclass
class Mounts:
    """What `start_board` mounted inside the root, unmounted in reverse by `release()`."""

    points: list[Path]

    def release(self) -> None:
        for p in reversed(self.points):
            proc = subprocess.run(["umount", str(p)], capture_output=True, text=True)
            if proc.returncode != 0:  # busy (a process still inside the chroot): detach it rather than pile mounts up
                subprocess.run(["umount", "-l", str(p)], capture_output=True)
                print(f"arm64 board: {p} was busy ({proc.stderr.strip()}); detached lazily", file=sys.stderr)
        self.points.clear()


def mount_board(image: BoardImage) -> Mounts:
    """/proc, a read-only /sys and the cpuinfo stand-in inside the board's root (see `mount_root`)."""
    return mount_root(image.rootfs, image.cpuinfo)


def mount_root(rfs: Path, cpuinfo: Path | None = None) -> Mounts:
    """/proc, a read-only /sys and (given) a cpuinfo stand-in inside the root `rfs`. Each board started mounts a
    layer of its own on top; `release` unmounts the top layers, which are another board's when two boards on one
    root stop out of order: same mounts either way, so a running board keeps working."""
    done = Mounts([])
    try:
        _run(["mount", "-t", "proc", "proc", str(rfs / "proc")])
        done.points.append(rfs / "proc")
        _run(["mount", "--bind", "-o", "ro", "/sys", str(rfs / "sys")])
        done.points.append(rfs / "sys")
        if cpuinfo is not None:
            _run(["mount", "--bind", "-o", "ro", str(cpuinfo), str(rfs / "proc" / "cpuinfo")])
            done.points.append(rfs / "proc" / "cpuinfo")
    except BoardUnavailable:
        done.release()
        raise
    return done


def start_board(tmp_root: Path, log: Callable[[str], None] = print) -> tuple[SshServer, Mounts, BoardImage]:
    """Build (or reuse) the board, mount it and start an sshd chrooted into it: (SshServer, Mounts, image)."""
    _ensure_board_user()
    image = build_board(BOARD_USER, log)
    check_chroot_path(image.rootfs)
    mounts = mount_board(image)
    try:
        server = start_sshd(tmp_root, chroot=image.rootfs, python=image.python, env={"QEMU_CPU": QEMU_CPU})
    except Exception:
        mounts.release()
        raise
    return server, mounts, image


def board_session() -> Iterator[SshServer]:
    """Generator for a pytest fixture: the started board's SshServer, stopped, unmounted and its temporary root
    removed afterwards; skips the test without root (debootstrap, mounts, sshd's ChrootDirectory)."""
    import tempfile

    import pytest

    if os.geteuid() != 0:
        pytest.skip("the emulated arm64 board needs root (debootstrap, mounts, sshd's ChrootDirectory)")
    tmp = Path(tempfile.mkdtemp(prefix="edgecam-arm64-"))
    server, mounts, _ = start_board(tmp, log=lambda m: print(m, flush=True))
    try:
        yield server
    finally:
        server.stop()
        mounts.release()
        shutil.rmtree(tmp, ignore_errors=True)


def serve_until_stopped(what: str, stop: Callable[[], object]) -> None:
    """Keep a started board up until Ctrl-C or SIGTERM (`kill` stops it as Ctrl-C does), then `stop()` it."""
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"{what}; Ctrl-C or SIGTERM stops it", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stop()


def main(argv: list[str]) -> int:
    if argv[:1] == ["build"]:
        t0 = time.monotonic()
        _ensure_board_user()
        image = build_board(BOARD_USER)
        print(f"arm64 board ready in {time.monotonic() - t0:.1f} s at {image.root}: {json.dumps(image.facts)}")
        return 0
    if argv[:1] == ["shell"]:
        import tempfile

        s, mounts, image = start_board(Path(tempfile.mkdtemp(prefix="edgecam-arm64-")))
        print(f'[[devices]]\nname = "arm64"\nurl = "{s.url}"\nkey_file = "{s.key_file}"\nknown_hosts = "{s.known_hosts}"\npython = "{image.python}"\n')
        serve_until_stopped("board up", lambda: (s.stop(), mounts.release()))
        return 0
    sys.stderr.write("usage: arm64_board.py build | shell\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
