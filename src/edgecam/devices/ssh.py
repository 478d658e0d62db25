"""SSH devices (`ssh://user@host:port`): a Jetson, a Raspberry Pi or any Linux box, driven with paramiko.

paramiko rather than asyncssh or fabric: the Device interface is synchronous (push, run, pull), paramiko
gives SSH and SFTP in one blocking API with no event loop to host, reads OpenSSH's known_hosts and keys and
the user's ssh-agent, and is what fabric and Ansible are built on.

Security defaults: key authentication only (the user's agent or a key file; no passwords), strict host-key
checking against known_hosts (an explicit, logged opt-out), every remote argument quoted with `shlex`.
Reliability: connect / command timeouts, reconnect with exponential backoff on a lost connection; a job
whose result already exists on the device is pulled, a job cut off mid-run is stopped and run again.
"""

from __future__ import annotations

import logging
import os
import posixpath
import shlex
import stat
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar
from urllib.parse import urlsplit

from edgecam.devices.base import Device, DeviceError, DeviceTimeout, RunResult

if TYPE_CHECKING:
    from edgecam.devices.inventory import DeviceSpec

log = logging.getLogger(__name__)
T = TypeVar("T")


class HostKeyError(DeviceError):
    """The server's host key is unknown or has changed: refused, with how to trust it."""


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


def _shell_join(argv: list[str]) -> str:
    """One remote command line with every argument quoted: nothing in a file name runs as shell."""
    return " ".join(shlex.quote(str(a)) for a in argv)


def _known_hosts_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


class SSHDevice(Device):
    """A remote Linux device reached over SSH; the agent zipapp runs under its own Python."""

    kind = "ssh"

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
            raise DeviceError(f"{self.name}: authentication failed ({exc}); edgecam uses keys only: load one into ssh-agent or set key_file in devices.toml") from None
        except paramiko.SSHException as exc:
            client.close()
            if "not found in known_hosts" in str(exc):
                where = self.known_hosts or "~/.ssh/known_hosts"
                hk = shlex.quote(_known_hosts_name(self.target.host, self.target.port))
                raise HostKeyError(
                    f"{self.name}: the host key of {self.target.host}:{self.target.port} is not in {where}; refused (strict "
                    f"host-key checking). Check the key's fingerprint on the device, then trust it with "
                    f"`ssh-keyscan -p {self.target.port} {shlex.quote(self.target.host)} >> {where}` (or `ssh -p {self.target.port} "
                    f"{hk.strip('[]')}` once and answer yes); `host_key_check = false` in devices.toml turns the check off (insecure, logged)."
                ) from None
            raise ConnectionLost(f"{self.name}: SSH error: {exc}") from exc
        except (OSError, EOFError) as exc:
            client.close()
            raise ConnectionLost(f"{self.name}: cannot connect to {self.target.host}:{self.target.port}: {exc}") from exc
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(5)
        self._client = client

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
            except (HostKeyError, FileNotFoundError, PermissionError, FileExistsError, IsADirectoryError, NotADirectoryError):
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
                home = self._retry("resolve home", lambda: self._sftp_client().normalize("."))
                wd = posixpath.join(home, wd)
            self._abs_workdir = wd.rstrip("/")
        return self._abs_workdir

    def python(self) -> list[str]:
        return shlex.split(self._python)

    def run(self, argv: list[str], timeout: float | None = None) -> RunResult:
        """Run `argv` on the device; each element is shell-quoted, so nothing in a name runs as a command."""
        command = _shell_join(argv)
        return self._retry(f"run {argv[0]}", lambda: self._exec(command, timeout))

    def _exec(self, command: str, timeout: float | None) -> RunResult:
        """Run one command; stdout and stderr are drained as they come (no window stall on either), and a
        transport that dies or a command past `timeout` raises instead of hanging."""
        start = time.perf_counter()
        transport = self._ensure().get_transport()
        chan = transport.open_session(timeout=self.connect_timeout)
        chan.exec_command(command)
        out, err = bytearray(), bytearray()
        try:
            while True:
                busy = False
                while chan.recv_ready():
                    out += chan.recv(65536)
                    busy = True
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                    busy = True
                if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                if not transport.is_active() or (chan.closed and not chan.exit_status_ready()):
                    raise ConnectionLost(f"{self.name}: connection closed while running {command[:80]!r}")
                if timeout is not None and time.perf_counter() - start > timeout:
                    raise DeviceTimeout(f"{self.name}: command timed out after {timeout} s: {command[:200]}")
                if not busy:
                    time.sleep(0.01)
        except BaseException:
            chan.close()
            raise
        code = chan.recv_exit_status()
        chan.close()
        if code == -1:  # no exit status: the connection went away
            raise ConnectionLost(f"{self.name}: no exit status for {command[:80]!r} (connection lost)")
        return RunResult(code, out.decode(errors="replace"), err.decode(errors="replace"), time.perf_counter() - start)

    def exists(self, remote: str) -> bool:
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

        def upload() -> None:
            sftp = self._sftp_client()
            tmp = f"{posixpath.dirname(remote)}/.{posixpath.basename(remote)}.{uuid.uuid4().hex[:8]}.part"
            self._makedirs(sftp, posixpath.dirname(remote))
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
                self._exec(_shell_join(["rm", "-rf", "--", remote]), self.connect_timeout * 3)
            sftp.posix_rename(tmp, remote)

        self._retry(f"push {local.name}", upload)

    def pull(self, remote: str, local: Path) -> None:
        local = Path(local)

        def download(sftp: Any, src: str, dst: Path) -> None:
            if stat.S_ISDIR(sftp.stat(src).st_mode):
                dst.mkdir(parents=True, exist_ok=True)
                for entry in sftp.listdir_attr(src):
                    download(sftp, f"{src}/{entry.filename}", dst / entry.filename)
            else:
                dst.parent.mkdir(parents=True, exist_ok=True)
                sftp.get(src, str(dst))

        self._retry(f"pull {posixpath.basename(remote)}", lambda: download(self._sftp_client(), remote, local))

    def cleanup(self, remote: str) -> None:
        try:
            self.run(["rm", "-rf", "--", remote], timeout=60)
        except DeviceError as exc:  # best effort: a leftover job dir costs disk, not correctness
            log.warning("%s: could not remove %s: %s", self.name, remote, exc)

    # -- jobs -----------------------------------------------------------------------------------------
    def run_agent(self, remote_job: str, timeout: float | None) -> RunResult:
        """Run the agent; if the connection drops mid-job, reconnect, then pull a finished result or stop the
        stale agent (its pid file) and run the job again, so nothing is lost and nothing is counted twice."""
        command = _shell_join([*self.python(), self.agent(), "run", remote_job])
        attempts = 0

        def attempt() -> RunResult:
            nonlocal attempts
            attempts += 1
            if attempts > 1:  # the previous attempt lost the connection
                if self.exists(f"{remote_job}/result.json"):
                    return RunResult(0, "", "", 0.0)
                self._stop_stale_agent(remote_job)
            return self._exec(command, timeout)

        return self._retry(f"job {posixpath.basename(remote_job)}", attempt)

    def _stop_stale_agent(self, remote_job: str) -> None:
        pid_file = f"{remote_job}/agent.pid"
        if not self.exists(pid_file):
            return
        with self._sftp_client().open(pid_file) as f:
            text = f.read().decode().strip()
        if text.isdigit():
            self.run(["kill", "-9", text], timeout=30)  # a number we parsed; argv-quoted anyway
            log.warning("%s: stopped stale agent pid %s of %s", self.name, text, posixpath.basename(remote_job))
