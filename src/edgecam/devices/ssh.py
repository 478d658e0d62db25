"""SSH devices (`ssh://user@host:port`): a Jetson, a Raspberry Pi or any Linux box, driven with paramiko.

paramiko rather than asyncssh or fabric: the Device interface is synchronous (push, run, pull), paramiko
gives SSH and SFTP in one blocking API with no event loop to host, reads OpenSSH's known_hosts and keys and
the user's ssh-agent, and is what fabric and Ansible are built on.

Security defaults: key authentication only (the user's agent or a key file; no passwords), strict host-key
checking against known_hosts (an explicit, logged opt-out), every remote argument quoted with `shlex`.
Reliability: connect / command timeouts, reconnect with exponential backoff on a lost connection; a job
whose result already exists on the device is pulled, a job cut off mid-run is stopped and run again.

The persistent session (`SSHSession`) keeps one exec channel open to `agent serve` (binary stdin / stdout,
stderr drained as it comes). When the connection drops it reconnects with the same backoff, kills the old
agent's process group if it still runs, starts a new agent and sends the request in flight again; answers
are matched by request id, so nothing is lost or answered twice.

Files move by SFTP where the board's sshd offers it; where it does not (dropbear, or an OpenSSH without
`Subsystem sftp`, common on embedded boards), every transfer streams a tar archive over an exec channel
(`tar` on the board: busybox has it) with the same temporary-sibling-then-rename discipline.
"""

from __future__ import annotations

import logging
import os
import posixpath
import shlex
import shutil
import socket
import stat
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar
from urllib.parse import urlsplit

from edgecam.devices.answers import BadAnswer
from edgecam.devices.base import Device, DeviceError, DeviceTimeout, RunResult, shell_command
from edgecam.devices.persistent import STDERR_TAIL, PersistentSession

if TYPE_CHECKING:
    import numpy as np

    from edgecam.devices.inventory import DeviceSpec

log = logging.getLogger(__name__)

MAX_COMMAND_OUTPUT = 256 << 20  # stdout a command may send back (the agent prints a line of JSON; pulls have their own cap)
STDERR_KEEP = 1 << 20  # the tail of stderr kept for error messages

T = TypeVar("T")


class HostKeyError(DeviceError):
    """The server's host key is unknown or has changed: refused, with how to trust it."""


class AuthError(DeviceError):
    """The board refused us or our key cannot be used: an answer, never retried, never naming the key's path."""


class ConnectionLost(DeviceError):
    """The SSH connection dropped; retried with backoff up to the device's retry budget."""


@dataclass(frozen=True)
class SSHTarget:
    """`ssh://user@host:port` parsed."""

    user: str | None
    host: str
    port: int = 22

    @classmethod
    def parse(cls, url: str) -> "SSHTarget":
        parts = urlsplit(url)
        if parts.scheme != "ssh" or not parts.hostname:
            raise DeviceError(f"device url {url!r}: expected ssh://[user@]host[:port]")
        if parts.password:
            raise DeviceError(f"device url {url!r}: passwords are not accepted; use key authentication (ssh-agent or key_file)")
        try:
            port = parts.port or 22
        except ValueError as exc:
            raise DeviceError(f"device url {url!r}: bad port ({exc})") from exc
        return cls(parts.username, parts.hostname, port)

    def __str__(self) -> str:
        return f"{self.user + '@' if self.user else ''}{self.host}:{self.port}"


def _known_hosts_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


class _ExecPump:
    """The streams of one exec channel (`SSHDevice._exec_bytes`): stdout and stderr drained as they come (no
    window stall on either), stdout capped at `max_out`, only stderr's tail kept, and a transport that dies
    or a command past `timeout` (seconds from `start`) raised instead of hanging."""

    def __init__(self, name: str, command: str, transport: Any, chan: Any, start: float, timeout: float | None, max_out: int) -> None:
        self.name, self.command, self.transport, self.chan = name, command, transport, chan
        self.start, self.timeout, self.max_out = start, timeout, max_out
        self.out, self.err = bytearray(), bytearray()

    def drain(self) -> bool:
        """Read what stdout, then stderr, has ready and enforce the size limits; whether anything came."""
        busy = False
        while self.chan.recv_ready():
            self.out += self.chan.recv(1 << 16)
            busy = True
        while self.chan.recv_stderr_ready():
            self.err += self.chan.recv_stderr(1 << 16)
            busy = True
        if len(self.out) > self.max_out:
            raise BadAnswer(f"{self.name}: {self.command[:80]!r} sent more than {self.max_out:,} bytes of output; refused")  # its job fails
        if len(self.err) > 2 * STDERR_KEEP:
            del self.err[: len(self.err) - STDERR_KEEP]
        return busy

    def check_timeout(self) -> None:
        """Raise DeviceTimeout once the command has run past its timeout."""
        if self.timeout is not None and time.perf_counter() - self.start > self.timeout:
            raise DeviceTimeout(f"{self.name}: command timed out after {self.timeout} s: {self.command[:200]}")

    def send_stdin(self, stdin: bytes) -> None:
        """Send `stdin` and then close it (when given), draining meanwhile; stops early when the command ends."""
        chan = self.chan
        view = memoryview(stdin)
        while view:
            if chan.exit_status_ready() or chan.closed:  # the command ended early (a failing mkdir / tar): read why below
                break
            try:
                sent = chan.send(view[: 1 << 16]) if chan.send_ready() else 0
            except OSError:
                if chan.exit_status_ready():
                    break
                raise ConnectionLost(f"{self.name}: connection closed while sending to {self.command[:80]!r}") from None
            view = view[sent:]
            self.drain()
            if not self.transport.is_active() or chan.closed:
                raise ConnectionLost(f"{self.name}: connection closed while sending to {self.command[:80]!r}")
            self.check_timeout()
            if not sent:
                time.sleep(0.005)
        if stdin and not chan.closed:
            chan.shutdown_write()

    def wait_exit(self) -> None:
        """Drain both streams until the exit status is ready and nothing is left to read."""
        chan = self.chan
        while True:
            busy = self.drain()
            if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                break
            if not self.transport.is_active() or (chan.closed and not chan.exit_status_ready()):
                raise ConnectionLost(f"{self.name}: connection closed while running {self.command[:80]!r}")
            self.check_timeout()
            if not busy:
                time.sleep(0.005)


class SSHDevice(Device):
    """A remote Linux device reached over SSH; the agent zipapp runs under its own Python."""

    kind = "ssh"
    settings_help = {"key_file": "the private key (default: ssh-agent, then ~/.ssh's keys)", "known_hosts": "the host keys file (default ~/.ssh/known_hosts)",
                     "host_key_check": "refuse a host whose key is not known (default true)", "passphrase_env": "the environment variable holding the key's passphrase",
                     "connect_timeout_s": "seconds to wait for a connection (default 10)", "retries": "reconnections after a lost connection (default 3)"}
    secret_settings = ("key_file", "passphrase_env")

    @classmethod
    def check_settings(cls, settings: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"key_file": None, "known_hosts": None, "host_key_check": True, "passphrase_env": None, "connect_timeout_s": 10.0, "retries": 3, **settings}
        for key in ("key_file", "known_hosts", "passphrase_env"):
            if out[key] is not None and not isinstance(out[key], str):
                raise ValueError(f"{key}: expected a string, got {type(out[key]).__name__} {out[key]!r}")
        if not isinstance(out["host_key_check"], bool):
            raise ValueError(f"host_key_check: expected true or false, got {out['host_key_check']!r}")
        timeout, retries = out["connect_timeout_s"], out["retries"]
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 3600:
            raise ValueError(f"connect_timeout_s: expected seconds in (0, 3600], got {timeout!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries: expected an integer >= 0, got {retries!r}")
        return {**out, "connect_timeout_s": float(timeout)}

    def __init__(
        self,
        url: str,
        name: str | None = None,
        key_file: str | None = None,
        known_hosts: str | None = None,
        host_key_check: bool = True,
        python: str = "python3",
        workdir: str = ".cache/edgecam",
        connect_timeout: float = 10.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        passphrase_env: str | None = None,
    ) -> None:
        self.target = SSHTarget.parse(url)
        self.name = name or str(self.target)
        self.key_file = str(Path(key_file).expanduser()) if key_file else None
        self.known_hosts = str(Path(known_hosts).expanduser()) if known_hosts else None
        self.host_key_check = host_key_check
        self._python = python
        self._workdir_setting = workdir
        self._abs_workdir: str | None = None
        self.connect_timeout = connect_timeout
        self.retries = retries
        self.backoff_s = backoff_s
        self.passphrase_env = passphrase_env
        self._client: Any = None
        self._sftp: Any = None
        self._sftp_ok: bool | None = None  # has_sftp, asked once
        self.reconnects = 0

    @classmethod
    def from_spec(cls, spec: "DeviceSpec", local_workdir: str | None = None) -> "SSHDevice":
        return cls(
            spec.url, name=spec.name, key_file=spec.key_file, known_hosts=spec.known_hosts, host_key_check=spec.host_key_check,
            python=spec.python or "python3", workdir=spec.workdir or ".cache/edgecam", connect_timeout=spec.connect_timeout_s,
            retries=spec.retries, passphrase_env=spec.passphrase_env,
        )

    # -- connection -----------------------------------------------------------------------------------
    def _connect(self) -> None:
        import paramiko

        client = paramiko.SSHClient()
        if self.known_hosts:
            if not Path(self.known_hosts).is_file():
                raise HostKeyError(f"{self.name}: known_hosts file {self.known_hosts} does not exist")
            client.load_host_keys(self.known_hosts)
        else:
            client.load_system_host_keys()
        if self.host_key_check:
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        else:
            log.warning("%s: host key checking is OFF (host_key_check = false); the connection could be intercepted", self.name)
            client.set_missing_host_key_policy(paramiko.WarningPolicy())
        passphrase = os.environ.get(self.passphrase_env) if self.passphrase_env else None
        if self.key_file and not (os.path.isfile(self.key_file) and os.access(self.key_file, os.R_OK)):
            raise AuthError(f"{self.name}: key_file of this device (devices.toml) is missing or not readable by this user")
        try:
            client.connect(
                self.target.host, port=self.target.port, username=self.target.user, key_filename=self.key_file,
                passphrase=passphrase, allow_agent=True, look_for_keys=self.key_file is None,
                timeout=self.connect_timeout, banner_timeout=self.connect_timeout, auth_timeout=self.connect_timeout,
            )
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyError(
                f"{self.name}: the host key of {self.target.host}:{self.target.port} has CHANGED (got {exc.key.get_name()} "
                f"{exc.key.get_base64()[:24]}..., expected another). Refused: this may be an attack, or the board was "
                f"reinstalled; if so remove the old key with `ssh-keygen -R {shlex.quote(_known_hosts_name(self.target.host, self.target.port))}`."
            ) from None
        except paramiko.AuthenticationException as exc:
            client.close()
            raise AuthError(f"{self.name}: authentication failed ({self._scrub(exc)}); edgecam uses keys only: load one into ssh-agent or set key_file in devices.toml") from None
        except paramiko.SSHException as exc:
            transport_up = client.get_transport() is not None and client.get_transport().is_active()
            client.close()
            if transport_up and "not found in known_hosts" not in str(exc):  # the handshake was done: the key was refused or unusable
                raise AuthError(f"{self.name}: authentication failed: the board refused the key, or it is of a type this client cannot use "
                                f"({self._scrub(exc)}); check key_file in devices.toml (an ed25519 key works everywhere)") from None
            if "not found in known_hosts" in str(exc):
                where = self.known_hosts or "~/.ssh/known_hosts"
                hk = shlex.quote(_known_hosts_name(self.target.host, self.target.port))
                raise HostKeyError(
                    f"{self.name}: the host key of {self.target.host}:{self.target.port} is not in {where}; refused (strict "
                    f"host-key checking). Check the key's fingerprint on the device, then trust it with "
                    f"`ssh-keyscan -p {self.target.port} {shlex.quote(self.target.host)} >> {where}` (or `ssh -p {self.target.port} "
                    f"{hk.strip('[]')}` once and answer yes); `host_key_check = false` in devices.toml turns the check off (insecure, logged)."
                ) from None
            raise ConnectionLost(f"{self.name}: SSH error: {self._scrub(exc)}") from None
        except (OSError, EOFError) as exc:
            client.close()
            if isinstance(exc, OSError) and exc.filename and not isinstance(exc, (socket.timeout, ConnectionError)):  # a key file paramiko tried to read
                raise AuthError(f"{self.name}: a key file could not be read ({exc.strerror or type(exc).__name__}); set key_file in devices.toml "
                                "to a key this user can read, or load one into ssh-agent") from None
            raise ConnectionLost(f"{self.name}: cannot connect to {self.target.host}:{self.target.port}: {self._scrub(exc)}") from None
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(5)
        self._client = client

    def _scrub(self, exc: BaseException) -> str:
        """An exception's text without the key file's path (errors reach logs, failed.csv and bench.csv)."""
        text = str(exc)
        for path in {self.key_file, getattr(exc, "filename", None), getattr(exc, "filename2", None)} - {None}:
            text = text.replace(str(path), "<key_file>")
        return text

    def _ensure(self) -> Any:
        if self._client is None or not self._client.get_transport() or not self._client.get_transport().is_active():
            self.close()
            self._connect()
        return self._client

    def _sftp_client(self) -> Any:
        if self._sftp is None:
            self._sftp = self._ensure().open_sftp()
            self._sftp.get_channel().settimeout(max(self.connect_timeout, 30.0))
        return self._sftp

    @property
    def has_sftp(self) -> bool:
        """Whether the board's sshd offers the SFTP subsystem (many embedded boards' dropbear or a stripped
        OpenSSH do not). Asked once; without it every transfer streams a tar archive over an exec channel."""
        if self._sftp_ok is None:
            import paramiko

            try:
                self._sftp_client()
                self._sftp_ok = True
            except paramiko.SSHException as exc:  # "Channel closed." when no `Subsystem sftp` is configured
                alive = self._client and self._client.get_transport() and self._client.get_transport().is_active()
                if not alive or isinstance(exc, paramiko.ChannelException) or "Channel closed" not in str(exc) and "EOF" not in str(exc):
                    raise ConnectionLost(f"{self.name}: opening SFTP failed: {self._scrub(exc)}") from None  # transient: retried
                self._sftp = None
                self._sftp_ok = False
                log.info("%s: the board's sshd has no SFTP subsystem (%s): files go over the exec channel (tar)", self.name, exc)
        return bool(self._sftp_ok)

    def _exec_bytes(self, command: str, stdin: bytes = b"", timeout: float | None = None, max_out: int = MAX_COMMAND_OUTPUT) -> tuple[int, bytes, str]:
        """Run one command with `stdin` sent and then closed (when given), stdout kept as bytes; stdout and
        stderr drained as they come (no window stall on either); a transport that dies or a command past
        `timeout` raises instead of hanging. A board that sends more than `max_out` bytes of stdout fails the
        command (a hostile or broken board cannot fill the host's memory); only stderr's tail is kept. `_exec`
        and the SFTP-less transfers both go through here."""
        start = time.perf_counter()
        transport = self._ensure().get_transport()
        chan = transport.open_session(timeout=self.connect_timeout)
        chan.exec_command(command)
        pump = _ExecPump(self.name, command, transport, chan, start, timeout, max_out)
        try:
            pump.send_stdin(stdin)
            pump.wait_exit()
        except BaseException:
            chan.close()
            raise
        code = chan.recv_exit_status()
        chan.close()
        if code == -1:
            raise ConnectionLost(f"{self.name}: no exit status for {command[:80]!r} (connection lost)")
        return code, bytes(pump.out), pump.err.decode(errors="replace")

    def close(self) -> None:
        for obj in (self._sftp, self._client):
            try:
                if obj is not None:
                    obj.close()
            except Exception:  # noqa: BLE001 - closing a dead connection
                pass
        self._sftp = self._client = None

    def _retry(self, what: str, fn: Callable[[], T]) -> T:
        """Call `fn`, reconnecting with exponential backoff when the connection is lost."""
        import paramiko

        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except (HostKeyError, AuthError, FileNotFoundError, PermissionError, FileExistsError, IsADirectoryError, NotADirectoryError):
                raise  # answers, not transport failures
            except (ConnectionLost, paramiko.SSHException, EOFError, OSError) as exc:
                self.close()
                if attempt == self.retries:
                    raise ConnectionLost(f"{self.name}: {what} failed after {self.retries + 1} attempts: {type(exc).__name__}: {exc}") from exc
                log.warning("%s: %s: connection lost (%s: %s); retry %d/%d in %.1fs", self.name, what, type(exc).__name__, exc, attempt + 1, self.retries, delay)
                self.reconnects += 1
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    # -- primitives -----------------------------------------------------------------------------------
    def workdir(self) -> str:
        if self._abs_workdir is None:
            wd = self._workdir_setting
            if not wd.startswith("/"):
                home = self._retry("resolve home", lambda: self._sftp_client().normalize(".") if self.has_sftp else self._exec("pwd", self.connect_timeout * 3).stdout.strip())
                wd = posixpath.join(home, wd)
            self._abs_workdir = wd.rstrip("/")
        return self._abs_workdir

    def python(self) -> list[str]:
        return shlex.split(self._python)

    def run(self, argv: list[str], timeout: float | None = None) -> RunResult:
        """Run `argv` on the device; each element is shell-quoted, so nothing in a name runs as a command."""
        command = shell_command(argv)
        return self._retry(f"run {argv[0]}", lambda: self._exec(command, timeout))

    def _exec(self, command: str, timeout: float | None) -> RunResult:
        """Run one command; stdout and stderr are drained as they come (no window stall on either), and a
        transport that dies or a command past `timeout` raises instead of hanging."""
        start = time.perf_counter()
        code, out, err = self._exec_bytes(command, b"", timeout)
        return RunResult(code, out.decode(errors="replace"), err, time.perf_counter() - start)

    def exists(self, remote: str) -> bool:
        if not self.has_sftp:
            return self._retry("stat", lambda: self._exec(shell_command(["test", "-e", remote]), self.connect_timeout * 3).returncode == 0)

        def check() -> bool:
            try:
                self._sftp_client().stat(remote)
                return True
            except FileNotFoundError:  # paramiko raises IOError(ENOENT), which Python makes this subclass
                return False

        return self._retry("stat", check)

    def _makedirs(self, sftp: Any, path: str) -> None:
        parts: list[str] = []
        while path not in ("", "/"):
            try:
                sftp.stat(path)
                break
            except IOError:
                parts.append(path)
                path = posixpath.dirname(path)
        for p in reversed(parts):
            try:
                sftp.mkdir(p)
            except IOError:
                sftp.stat(p)  # created meanwhile is fine; anything else raises

    def push(self, local: Path, remote: str) -> None:
        """Upload to a temporary sibling, then rename over `remote`: a dropped upload leaves no partial tree."""
        local = Path(local)
        tmp = f"{posixpath.dirname(remote)}/.{posixpath.basename(remote)}.{uuid.uuid4().hex[:8]}.part"  # one name for every attempt

        def upload() -> None:
            if not self.has_sftp:
                return self._push_tar(local, remote, tmp)
            sftp = self._sftp_client()
            self._makedirs(sftp, posixpath.dirname(remote))
            if self.exists(tmp):  # what an attempt cut off by a dropped connection left
                self._exec(shell_command(["rm", "-rf", "--", tmp]), self.connect_timeout * 3)
            if local.is_dir():
                for dirpath, _dirs, files in os.walk(local):
                    rel = Path(dirpath).relative_to(local).as_posix()
                    rdir = tmp if rel == "." else f"{tmp}/{rel}"
                    sftp.mkdir(rdir)
                    for f in files:
                        sftp.put(str(Path(dirpath) / f), f"{rdir}/{f}")
            else:
                sftp.put(str(local), tmp)
            if self.exists(remote):
                self._exec(shell_command(["rm", "-rf", "--", remote]), self.connect_timeout * 3)
            sftp.posix_rename(tmp, remote)
            return None

        try:
            self._retry(f"push {local.name}", upload)
        except BaseException:
            try:  # the retry budget is spent (or the run was interrupted): leave nothing half-uploaded behind
                self._exec(shell_command(["rm", "-rf", "--", tmp]), self.connect_timeout * 3)
            except Exception:  # noqa: BLE001 - the board is unreachable; the next push of this file starts clean
                pass
            raise

    def _push_tar(self, local: Path, remote: str, tmp: str) -> None:
        """`push` without SFTP: a tar archive of `local` (its top entry named as the temporary sibling) streamed
        into `tar -x` on the board, then renamed over `remote` as the SFTP path does."""
        import io
        import tarfile

        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            tar.add(str(local), arcname=posixpath.basename(tmp))
        parent = posixpath.dirname(remote) or "."
        script = 'mkdir -p "$1" && rm -rf -- "$2" && tar -x -f - -C "$1" && rm -rf -- "$3" && mv -- "$2" "$3"'
        payload = buf.getvalue()
        code, _, err = self._exec_bytes(shell_command(["sh", "-c", script, "sh", parent, tmp, remote]), payload, _transfer_timeout(len(payload), self.connect_timeout))
        if code != 0:
            raise DeviceError(f"{self.name}: push of {local.name} over the exec channel failed (exit {code}): {err[-500:]}")

    def _pull_tar(self, remote: str, local: Path, max_bytes: int | None = None) -> None:
        """`pull` without SFTP: `tar -c` of `remote` on the board, read from the exec channel and unpacked here
        (members checked: nothing outside `local`, no links, no devices, no sparse members, their sizes within
        `max_bytes`). The stream is capped by the host's bound (`max_bytes` plus tar's headers), never by the
        board's own `du` (which is used only to size the timeout, where the host gave no bound)."""
        import io
        import tarfile

        if max_bytes is None:
            size = self._exec(shell_command(["du", "-s", "-k", remote]), self.connect_timeout * 3).stdout.split()
            nbytes = min(int(size[0]) * 1024 if size and size[0].isdigit() else 0, MAX_COMMAND_OUTPUT)
            cap = 2 * nbytes + (16 << 20)
        else:
            nbytes, cap = max_bytes, max_bytes + (1 << 20)  # tar's 512-byte headers and padding on top
        code, out, err = self._exec_bytes(shell_command(["tar", "-c", "-f", "-", "-C", posixpath.dirname(remote) or "/", posixpath.basename(remote)]),
                                          timeout=_transfer_timeout(nbytes, self.connect_timeout), max_out=cap)
        if code != 0:
            if "No such file" in err or "not found" in err.lower():
                raise FileNotFoundError(f"{self.name}: {remote}: no such file on the board")
            raise DeviceError(f"{self.name}: pull of {remote} over the exec channel failed (exit {code}): {err[-500:]}")
        name = posixpath.basename(remote)
        local.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=local.parent) as tmp_s:
            with tarfile.open(fileobj=io.BytesIO(out), mode="r:") as tar:
                total = 0
                for m in tar.getmembers():
                    parts = Path(m.name).parts
                    if not parts or parts[0] != name or ".." in parts or m.name.startswith("/") or not (m.isfile() or m.isdir()) or m.issparse():
                        raise BadAnswer(f"{self.name}: pull of {remote}: the board sent an unexpected archive member {m.name!r}"
                                        f"{' (sparse)' if m.issparse() else ''}")  # a JobFailed: the job fails and its folder is removed
                    total += m.size
                    if max_bytes is not None and total > max_bytes:
                        raise BadAnswer(f"{self.name}: pull of {remote}: the archive's members hold more than {max_bytes:,} bytes; refused")
                tar.extractall(tmp_s, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))  # members checked above either way
            got = Path(tmp_s) / name
            if local.is_dir() and not local.is_symlink():
                shutil.rmtree(local)
            elif local.exists():
                local.unlink()
            os.replace(got, local)

    def pull(self, remote: str, local: Path, max_bytes: int | None = None) -> None:
        local = Path(local)
        got = [0]

        def count(done: int, _total: int, start: int) -> None:  # SFTP's progress callback: stop a stream past the bound
            if max_bytes is not None and start + done > max_bytes:
                raise BadAnswer(f"{self.name}: pull of {remote}: more than {max_bytes:,} bytes; refused")

        def download(sftp: Any, src: str, dst: Path) -> None:
            st = sftp.stat(src)
            if stat.S_ISDIR(st.st_mode):
                dst.mkdir(parents=True, exist_ok=True)
                for entry in sftp.listdir_attr(src):
                    download(sftp, f"{src}/{entry.filename}", dst / entry.filename)
            else:
                if max_bytes is not None and got[0] + (st.st_size or 0) > max_bytes:
                    raise BadAnswer(f"{self.name}: pull of {remote}: {src} holds {st.st_size:,} bytes, over the {max_bytes:,} this answer can need; refused")
                dst.parent.mkdir(parents=True, exist_ok=True)
                start = got[0]
                sftp.get(src, str(dst), callback=lambda done, total: count(done, total, start))
                got[0] += dst.stat().st_size

        if not self.has_sftp:
            self._retry(f"pull {posixpath.basename(remote)}", lambda: self._pull_tar(remote, local, max_bytes))
            return

        def attempt() -> None:
            got[0] = 0
            download(self._sftp_client(), remote, local)

        self._retry(f"pull {posixpath.basename(remote)}", attempt)

    def cleanup(self, remote: str) -> None:
        try:
            self.run(["rm", "-rf", "--", remote], timeout=60)
        except DeviceError as exc:  # best effort: a leftover job dir costs disk, not correctness
            log.warning("%s: could not remove %s: %s", self.name, remote, exc)

    # -- jobs -----------------------------------------------------------------------------------------
    def run_agent(self, remote_job: str, timeout: float | None) -> RunResult:
        """Run the agent; if the connection drops mid-job, reconnect, then pull a finished result or stop the
        stale agent (its pid file) and run the job again, so nothing is lost and nothing is counted twice."""
        command = shell_command([*self.python(), self.agent(), "run", remote_job])
        attempts = 0

        def attempt() -> RunResult:
            nonlocal attempts
            attempts += 1
            if attempts > 1:  # the previous attempt lost the connection
                if self.exists(f"{remote_job}/result.json"):
                    return RunResult(0, "", "", 0.0)
                self.stop_job(remote_job)
            return self._exec(command, timeout)

        return self._retry(f"job {posixpath.basename(remote_job)}", attempt)

    def session(self, artifact_dir: str | Path, job: dict[str, Any], timeout: float | None = 600) -> "SSHSession":
        """One `agent serve` process on the board for `artifact_dir`, over one exec channel (see `SSHSession`)."""
        return SSHSession(self, artifact_dir, job, timeout)


def _transfer_timeout(nbytes: int, connect_timeout: float) -> float:
    """A tar transfer's time limit: a minute, plus a second per MB (a 1 MB/s floor for a slow link)."""
    return max(60.0, connect_timeout * 6) + nbytes / 1e6


def _coalesce(chunks: Sequence[Any], limit: int = 1 << 20) -> list[Any]:
    """Runs of small chunks joined into one buffer (one SSH packet stream, not a packet per array header)."""
    out: list[Any] = []
    small: list[bytes] = []
    size = 0
    for c in chunks:
        n = memoryview(c).nbytes
        if n >= limit:
            if small:
                out.append(b"".join(small))
                small, size = [], 0
            out.append(c)
        else:
            small.append(bytes(c))
            size += n
            if size >= limit:
                out.append(b"".join(small))
                small, size = [], 0
    if small:
        out.append(b"".join(small))
    return out


class SSHSession(PersistentSession):
    """The agent on the board behind one exec channel. stdout carries the frames, stderr is drained into a
    bounded tail. A lost connection (`ConnectionLost`) goes through the device's `_retry`: reconnect with
    backoff, stop the old agent's process group if it still runs, start a new agent, send the request again
    (counted in `resends`); answers are matched by id. A timeout kills the agent's process group on the board."""

    def __init__(self, device: SSHDevice, artifact_dir: str | Path, job: dict[str, Any], timeout: float | None = 600) -> None:
        self._chan: Any = None
        self._conn: Any = None  # the SSHClient the channel belongs to
        self._stale = False  # a dropped connection may have left an agent running on the board
        self._stale_pgid: int | None = None
        self._stderr = bytearray()
        super().__init__(device, artifact_dir, job, timeout)

    # -- connection state -------------------------------------------------------------------------------
    def _connected(self) -> bool:
        dev = self.device
        if self._chan is None or self._conn is None or dev._client is not self._conn:
            return False
        transport = self._conn.get_transport()
        return transport is not None and transport.is_active()

    def _lost(self, what: str) -> ConnectionLost:
        return ConnectionLost(f"{self.device.name}: connection lost while the session agent {what}")

    def _drain_stderr(self) -> None:
        while self._chan.recv_stderr_ready():
            self._stderr += self._chan.recv_stderr(65536)
        if len(self._stderr) > 4 * STDERR_TAIL:
            del self._stderr[: -STDERR_TAIL]

    # -- transport primitives ---------------------------------------------------------------------------
    def _spawn(self) -> None:
        dev = self.device
        if self._stale:  # the agent of a dropped connection may still be computing
            dev.kill_agents(self.job_path, self._stale_pgid)
            self._stale, self._stale_pgid = False, None
        self._close_channel()
        client = dev._ensure()
        chan = client.get_transport().open_session(timeout=dev.connect_timeout)
        try:  # small request frames must not wait for delayed ACKs (Nagle): ~40 ms a round trip otherwise
            client.get_transport().sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass
        chan.exec_command("exec " + shell_command([*dev.python(), dev.agent(), "serve", self.job_path]))  # no shell left between
        self._chan, self._conn, self._stderr = chan, client, bytearray()

    def _send(self, chunks: Sequence[Any], deadline: float | None) -> None:
        for chunk in _coalesce(chunks):
            view = memoryview(chunk).cast("B")
            off = 0
            while off < len(view):
                self._check_deadline(deadline)
                if not self._connected():
                    raise self._lost("was sent a request")
                if self._chan.closed or self._chan.exit_status_ready():
                    raise EOFError("the agent's channel closed")
                self._chan.settimeout(0.5)
                try:
                    off += self._chan.send(view[off : off + (1 << 20)])
                except socket.timeout:
                    pass  # the window is full: the agent is busy reading; check the deadline and go on
                except (OSError, EOFError) as exc:
                    raise self._lost(f"was sent a request ({type(exc).__name__}: {exc})") from exc
                self._drain_stderr()

    def _readinto(self, view: memoryview, deadline: float | None) -> None:
        got = 0
        while got < len(view):
            self._check_deadline(deadline)
            self._drain_stderr()
            self._chan.settimeout(0.2)
            try:
                data = self._chan.recv(min(len(view) - got, 1 << 20))
            except socket.timeout:
                if not self._connected():
                    raise self._lost("was computing") from None
                continue
            except (OSError, EOFError) as exc:
                raise self._lost(f"was answering ({type(exc).__name__}: {exc})") from exc
            if not data:
                self._eof()
            view[got : got + len(data)] = data
            got += len(data)

    def _eof(self) -> None:
        """The channel ended: the agent exited (an exit status, or the transport still up) -> EOFError; the
        connection dropped -> ConnectionLost (retried)."""
        give_up = time.monotonic() + 1.0
        while time.monotonic() < give_up:  # paramiko closes the channels a moment before the transport
            if not self._connected():
                raise self._lost("was running")
            if self._chan.exit_status_ready() and self._chan.recv_exit_status() != -1:  # -1: paramiko's "none came"
                raise EOFError("the agent's output ended")
            time.sleep(0.05)
        raise EOFError("the agent's output ended")  # the transport is up: the agent died (a signal sends no status)

    @staticmethod
    def _check_deadline(deadline: float | None) -> None:
        if deadline is not None and time.monotonic() > deadline:
            raise DeviceTimeout("deadline passed")

    def _alive(self) -> bool:
        return self._connected() and not self._chan.closed and not self._chan.exit_status_ready()  # exit_status_ready: ended, whatever the status

    def _release(self) -> None:
        self._close_channel()  # the agent reads EOF and exits

    def _close_channel(self) -> None:
        chan, self._chan = self._chan, None
        if chan is not None:
            try:
                chan.close()
            except Exception:  # noqa: BLE001 - closing a dead channel
                pass

    def _terminate(self, grace: float = 0.0) -> str:
        chan, hello = self._chan, self.hello
        if chan is None:
            return ""
        code: int | None = None
        end = time.monotonic() + grace
        while self._connected() and not chan.exit_status_ready() and time.monotonic() < end:
            self._drain_stderr()
            time.sleep(0.05)
        if chan.exit_status_ready() and chan.recv_exit_status() != -1:
            code = chan.recv_exit_status()
        else:
            self.device.kill_agents(self.job_path, hello.get("pgid") if hello else None)
        try:
            self._drain_stderr()
        except Exception:  # noqa: BLE001 - the transport may be gone
            pass
        self._close_channel()
        how = "still running: killed its process group" if code is None else f"exited {code}"
        return f" (agent {how}; stderr:\n{self._stderr[-STDERR_TAIL:].decode(errors='replace')})"

    # -- a request that survives a dropped connection -----------------------------------------------------
    def _exchange(self, rid: int, op: str, chunks: Sequence[Any], size: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        attempts = 0
        base = super()._exchange

        def attempt() -> tuple[dict[str, Any], dict[str, np.ndarray]]:
            nonlocal attempts
            attempts += 1
            if attempts > 1:  # the previous attempt lost the connection: a new agent, the request again
                if self._chan is not None:
                    self._stale, self._stale_pgid = True, self.hello.get("pgid") if self.hello else None
                if self.in_flight == rid:
                    self.resends += 1
                    log.warning("%s: resending %s request %d after a lost connection", self.device.name, op, rid)
                self.hello, self.in_flight = None, None
                self._close_channel()
            return base(rid, op, chunks, size)

        return self.device._retry(f"session {op} request {rid}", attempt)
