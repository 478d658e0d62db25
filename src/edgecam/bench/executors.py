"""Where a run's per-device work executes: in this process, one device after another (`inprocess`, the default),
or on a Ray cluster (`ray`, the `[ray]` extra), every device at once.

The unit both run is one device's whole run (`run_device`: `sweep.run` into that device's run directory, which
holds its job store, lock and report), so a fleet's results do not depend on the executor: the tests compare
them row for row. On Ray each device gets its own actor, placed on a node that offers the custom resource
`device_resource(name)` with capacity 1. Two timed jobs can then never share a board, and a board is only ever
driven by the node that declared it (the host on its network, started with
`ray start --resources='{"edgecam_device_NAME": 1}'`). An actor on another node than the driver runs into a
scratch directory there and sends the run directory back; the driver's run directory stays the one copy
(`RayExecutor`).

A device lost mid-run (the board gone past its connection retries, or the actor dead) is retried on the same
board, resuming from its job store, `retries` times; after that it is recorded as failed. It is never run on
another board under its name.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from edgecam.cache import stable_hash
from edgecam.errors import ConfigError
from edgecam.registry import Registry

if TYPE_CHECKING:
    from edgecam.config import RunConfig
    from edgecam.devices.inventory import DeviceSpec

#: retries of a device lost mid-run, on the same board (the first attempt is not counted)
DEFAULT_RETRIES = 1


def device_resource(name: str) -> str:
    """The Ray custom resource a device's actor needs (capacity 1 on the node that drives the board)."""
    return "edgecam_device_" + re.sub(r"[^A-Za-z0-9_]", "_", name)


@dataclass(frozen=True)
class DeviceRun:
    """One device's share of a run: the device and the run directory its results go to."""

    device: "DeviceSpec"
    out_dir: Path


@dataclass
class Outcome:
    """How one device's run ended: `ok` (it finished; `failed_jobs` may still list jobs that failed in it),
    wall time of the last attempt, attempts made, the node it ran on."""

    device: str
    ok: bool
    wall_s: float = 0.0
    attempts: int = 1
    error: str | None = None
    failed_jobs: list[str] = field(default_factory=list)
    node: str = "driver"
    address: str = ""  # the node's IP address (Ray)


def run_device(cfg: "RunConfig", run: DeviceRun, limit: int | None, resume: bool | None, log: Callable[[str], None]) -> dict[str, Any]:
    """One device's whole run (what every executor runs): its failed jobs and wall time."""
    from edgecam.bench.sweep import run as sweep_run

    t0 = time.perf_counter()
    out = sweep_run(cfg, run.out_dir, limit=limit, log=log, device_spec=run.device, resume=resume)
    return {"failed_jobs": [f["job"] for f in out["failed"]], "wall_s": time.perf_counter() - t0}


def _lost(exc: BaseException) -> bool:
    """Whether an attempt failed because the device went away (retried on the same board), not for a reason a
    retry cannot fix (bad config, refused run directory)."""
    from edgecam.devices.errors import DeviceError

    return isinstance(exc, (DeviceError, ConnectionError, TimeoutError))


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class InProcessExecutor:
    """Each device in turn, in this process (today's behaviour, and the reference the Ray executor must match)."""

    name = "inprocess"

    def __init__(self, retries: int = DEFAULT_RETRIES) -> None:
        self.retries = retries

    def run(self, cfg: "RunConfig", runs: list[DeviceRun], limit: int | None, resume: bool | None, log: Callable[[str], None]) -> list[Outcome]:
        outcomes = []
        for r in runs:
            attempt, again = 0, resume
            while True:
                attempt += 1
                t0 = time.perf_counter()
                try:
                    got = run_device(cfg, r, limit, again, _prefixed(log, r.device.name))
                    outcomes.append(Outcome(r.device.name, True, got["wall_s"], attempt, failed_jobs=got["failed_jobs"]))
                    break
                except Exception as exc:  # noqa: BLE001 - recorded per device; the other devices go on
                    if _lost(exc) and attempt <= self.retries:
                        log(f"[yellow]{r.device.name}: lost ({_error_text(exc)}); retrying on the same board, resuming its jobs[/yellow]")
                        again = True
                        continue
                    outcomes.append(Outcome(r.device.name, False, time.perf_counter() - t0, attempt, _error_text(exc)))
                    break
        return outcomes


def _prefixed(log: Callable[[str], None], name: str) -> Callable[[str], None]:
    """`log` with the device's name in front of each message (after the colour tag it may open with)."""

    def prefixed(message: str) -> None:
        tag = re.match(r"\[[a-z]+\]", message)
        log(f"{tag.group(0) if tag else ''}{name}: {message[tag.end() if tag else 0:]}")

    return prefixed


def pack_dir(path: Path) -> bytes:
    """A run directory as tar bytes (without its lock file), to move it between Ray nodes."""
    from edgecam.bench.store import LOCK_FILE

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        if path.is_dir():
            for child in sorted(path.iterdir()):
                if child.name != LOCK_FILE:
                    tar.add(child, arcname=child.name)
    return buf.getvalue()


def unpack_dir(data: bytes, path: Path) -> None:
    """Replace the contents of `path` (its lock file kept) by a `pack_dir` archive: extracted beside it first,
    so a bad archive leaves `path` as it was; members that would land outside it (absolute paths, `..`, links)
    are refused."""
    from edgecam.bench.store import LOCK_FILE

    path.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.incoming")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
            for member in tar.getmembers():
                if member.name.startswith("/") or ".." in Path(member.name).parts or not (member.isfile() or member.isdir()):
                    raise ValueError(f"archive member {member.name!r} is not a plain file or folder inside {path}: refused")
            tar.extractall(staging)  # members checked above (Python 3.10's tarfile may lack the "data" filter)
        for child in path.iterdir():
            if child.name != LOCK_FILE:
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        for child in staging.iterdir():
            child.rename(path / child.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class DeviceWorker:
    """The Ray actor of one device: runs that device's run on the node that offers its resource."""

    def run(self, cfg: "RunConfig", run: DeviceRun, limit: int | None, resume: bool | None, key: str, packed: bytes | None,
            threads: int) -> dict[str, Any]:
        """The device's run into `run.out_dir` (`packed` None: the driver's node), else into this node's scratch
        directory for `key`, seeded from `packed` (the driver's copy) and sent back packed. `threads`: the host
        stages' threads (torch's, and OMP_NUM_THREADS for what the actor starts). Errors come back as text, with
        `lost` telling whether a retry on the same board may help."""
        import ray
        import torch

        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)
        node = {"node": ray.get_runtime_context().get_node_id(), "address": ray.util.get_node_ip_address()}
        log = _prefixed(print, run.device.name)  # Ray forwards an actor's prints to the driver
        target = run if packed is None else DeviceRun(run.device, scratch_dir(key, run.device.name))
        if packed is not None and not (target.out_dir / "run.json").is_file():  # else a retry: the dead attempt's jobs are newer
            unpack_dir(packed, target.out_dir)
        try:
            got: dict[str, Any] = run_device(cfg, target, limit, resume, log)
        except Exception as exc:  # noqa: BLE001 - the finished jobs go back to the driver either way
            got = {"error": _error_text(exc), "lost": _lost(exc)}
        if packed is None:
            return {**got, **node, "packed": None}
        result = {**got, **node, "packed": pack_dir(target.out_dir)}
        shutil.rmtree(target.out_dir, ignore_errors=True)  # the driver's copy has it all now (only a killed actor leaves it)
        return result


def scratch_dir(driver_key: str, device: str) -> Path:
    """Where an actor on another node than the driver's runs a device (under edgecam's cache there): the same
    path for every attempt, so a retry after the actor died finds the jobs it had finished."""
    from edgecam.cache import cache_dir

    return cache_dir() / "fleet" / driver_key / device_resource(device)


def import_ray(local: bool = False) -> Any:
    """Ray, without usage reporting; for a cluster started here (`local`), one that binds loopback only (Ray
    reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 when it is imported; else it binds the machine's external address)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if local:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError as e:
        raise ConfigError("--executor ray needs Ray: pip install 'edgecam[ray]'") from e
    return ray


class RayExecutor:
    """Every device at once, one actor each, on a Ray cluster: the one at `address` (started with `ray start`),
    else a local one started here for this run (all CPUs, one resource per device, loopback only). `sync`:
    "auto" moves run directories only for actors on another node; "always" moves them for every actor (tests)."""

    name = "ray"

    def __init__(self, address: str | None = None, retries: int = DEFAULT_RETRIES, num_cpus: int | None = None, sync: str = "auto") -> None:
        if sync not in ("auto", "always"):
            raise ValueError(f"sync: expected 'auto' or 'always', got {sync!r}")
        if address is not None and address.startswith("ray://"):  # Ray Client: the driver's files would be the head's
            raise ConfigError(f"--address {address}: Ray Client (ray://) is not supported; run edgecam on a node of the cluster, --address HEAD:6379")
        self.address, self.retries, self.num_cpus, self.sync = address, retries, num_cpus, sync

    def _connect(self, ray: Any, names: list[str]) -> bool:
        """Join the cluster (or start one); True when this call started it. Every device's resource must be on
        offer, else ConfigError naming the `ray start` line that declares it."""
        started = False
        if not ray.is_initialized():
            if self.address:
                ray.init(address=self.address, logging_level="WARNING")
            else:
                ray.init(num_cpus=self.num_cpus or os.cpu_count(), resources={device_resource(n): 1 for n in names}, include_dashboard=False,
                         logging_level="WARNING", _node_ip_address="127.0.0.1")
            started = True
        have = ray.cluster_resources()
        missing = [n for n in names if have.get(device_resource(n), 0) < 1]
        if missing:
            if started:
                ray.shutdown()
            decl = ", ".join(f'"{device_resource(n)}": 1' for n in missing)
            raise ConfigError(f"the Ray cluster offers no resource for device(s) {', '.join(missing)}: on the host that reaches each board, "
                              f"`ray start --address=HEAD --resources='{{{decl}}}'`")
        return started

    def run(self, cfg: "RunConfig", runs: list[DeviceRun], limit: int | None, resume: bool | None, log: Callable[[str], None]) -> list[Outcome]:
        import contextlib
        import uuid

        from edgecam.bench.store import run_dir_lock

        ray = import_ray(local=self.address is None)
        started = self._connect(ray, [r.device.name for r in runs])
        worker = ray.remote(DeviceWorker)
        driver_node = ray.get_runtime_context().get_node_id()
        nodes = {n["NodeID"]: n for n in ray.nodes()}
        invocation = uuid.uuid4().hex[:12]  # a scratch directory is reused only by a retry of this invocation
        # host threads per actor: the user's OMP_NUM_THREADS, else the cluster's CPUs shared by the devices (Ray would
        # set 1 in a 0-CPU actor; all of them each would oversubscribe a host that runs several devices)
        threads = int(os.environ.get("OMP_NUM_THREADS") or max(1, int(ray.cluster_resources().get("CPU", 1)) // len(runs)))
        pending: dict[Any, tuple[DeviceRun, int, float, contextlib.ExitStack]] = {}
        outcomes: dict[str, Outcome] = {}
        try:
            def submit(r: DeviceRun, attempt: int, again: bool | None) -> None:
                actor = worker.options(resources={device_resource(r.device.name): 1}, num_cpus=0, max_restarts=0).remote()
                # where the actor lands is known only once it runs: move the directory unless this node is the only one offering the board
                here = all(nid == driver_node for nid, n in nodes.items() if n.get("Alive") and n.get("Resources", {}).get(device_resource(r.device.name)))
                held = contextlib.ExitStack()
                packed = None
                if not (here and self.sync == "auto"):
                    held.enter_context(run_dir_lock(r.out_dir))  # the driver's copy is the actor's until it comes back
                    packed = pack_dir(r.out_dir)
                key = stable_hash({"invocation": invocation, "out": str(r.out_dir.resolve())})
                pending[actor.run.remote(cfg, r, limit, again, key, packed, threads)] = (r, attempt, time.perf_counter(), held)

            for r in runs:
                submit(r, 1, resume)
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                r, attempt, t0, held = pending.pop(done[0])
                with held:
                    got, error, lost = self._collect(ray, done[0], r)
                name = r.device.name
                if error is None:
                    outcomes[name] = Outcome(name, True, got["wall_s"], attempt, failed_jobs=got["failed_jobs"], node=str(got["node"]), address=str(got["address"]))
                    log(f"{name}: finished on node {str(got['node'])[:12]} in {got['wall_s']:.0f} s")
                elif lost and attempt <= self.retries:
                    log(f"[yellow]{name}: lost ({error}); retrying on the same board, resuming its jobs[/yellow]")
                    submit(r, attempt + 1, True)
                else:
                    outcomes[name] = Outcome(name, False, time.perf_counter() - t0, attempt, error[:2000], node=str(got.get("node", "")), address=str(got.get("address", "")))
        finally:
            for _, _, _, held in pending.values():
                held.close()
            if started:
                ray.shutdown()
        return [outcomes[r.device.name] for r in runs]

    @staticmethod
    def _collect(ray: Any, ref: Any, r: DeviceRun) -> tuple[dict[str, Any], str | None, bool]:
        """An actor's answer as (result, error text or None, whether the device was lost: worth a retry); a
        moved run directory is written back into the driver's copy first."""
        try:
            got = ray.get(ref)
        except ray.exceptions.RayActorError as exc:  # the actor's process died (OOM, node lost)
            return {}, _error_text(exc), True
        except ray.exceptions.RayError as exc:  # an object lost, a task that failed in Ray itself
            return {}, _error_text(exc), False
        if got.get("packed") is not None:
            try:
                unpack_dir(got["packed"], r.out_dir)
            except (OSError, ValueError, tarfile.TarError) as exc:
                return got, f"its run directory could not be written back: {_error_text(exc)}", False
        return got, got.get("error"), bool(got.get("lost"))


EXECUTORS: Registry[Any] = Registry("executor")
EXECUTORS.add("inprocess", InProcessExecutor)
EXECUTORS.add("ray", RayExecutor)


def make_executor(name: str, address: str | None = None, retries: int = DEFAULT_RETRIES) -> Any:
    """The executor registered as `name`; `address` (a Ray cluster) only for ray."""
    cls = EXECUTORS.get(name)
    if address is not None and name != "ray":
        raise ConfigError(f"--address is a Ray cluster's address: it needs --executor ray (got --executor {name})")
    return cls(address=address, retries=retries) if name == "ray" else cls(retries=retries)

