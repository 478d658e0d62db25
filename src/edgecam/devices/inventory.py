"""Device inventory: `devices.toml` -> frozen `DeviceSpec`s -> connected `Device`s.

    [[devices]]
    name = "orin"
    url = "ssh://ubuntu@192.168.1.40"      # ssh://user@host:port | adb://SERIAL | local
    runtimes = ["onnxruntime", "litert"]    # what to run there (empty: every runtime of the config)
    threads = 4                             # runtime threads, unless the experiment sets them
    cores = 4                               # CPU budget: pin the agent to 4 cores (Linux affinity)
    python = "python3"
    emulated = false                        # optional: override the probe's finding (latency labelled emulated)
    notes = "Jetson Orin Nano 8GB, MAXN"

Looked up in: `--devices FILE`, $EDGECAM_DEVICES, ./devices.toml, ~/.config/edgecam/devices.toml. The
name "local" (this machine) is always defined unless a file redefines it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from edgecam.devices.base import DEVICES, Device, device_class
from edgecam.errors import ConfigError, EdgecamError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class DeviceSpec:
    """One device of the inventory; every field but `name` and `url` has a working default."""

    name: str
    url: str = "local"
    runtimes: tuple[str, ...] = ()
    threads: Optional[int] = None
    cores: Optional[int] = None
    python: Optional[str] = None
    workdir: Optional[str] = None
    key_file: Optional[str] = None
    known_hosts: Optional[str] = None
    host_key_check: bool = True
    passphrase_env: Optional[str] = None
    connect_timeout_s: float = 10.0
    retries: int = 3
    benchmark_model: Optional[str] = None
    tegrastats: bool = True
    emulated: Optional[bool] = None  # latency from an emulator, not hardware; None: as the device's probe says
    notes: str = ""

    def __post_init__(self) -> None:
        if self.scheme not in DEVICES:
            raise ConfigError(
                f"devices.{self.name}.url: unknown scheme {self.scheme!r} in {self.url!r}; known: {', '.join(DEVICES.names())} "
                "(local, ssh://user@host[:port] or adb://SERIAL)"
            )
        for key in ("threads", "cores"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"devices.{self.name}.{key}: expected a positive integer, got {value}")
        if self.retries < 0 or not 0 < self.connect_timeout_s <= 3600:
            raise ConfigError(f"devices.{self.name}: retries must be >= 0 and connect_timeout_s in (0, 3600] seconds, got {self.retries}, {self.connect_timeout_s}")
        from edgecam.runtimes import RUNTIMES

        for rt in self.runtimes:
            if rt not in RUNTIMES:
                raise ConfigError(f"devices.{self.name}.runtimes: unknown runtime {rt!r}; known: {', '.join(RUNTIMES.names())}")

    @property
    def scheme(self) -> str:
        return self.url.split("://", 1)[0] if "://" in self.url else self.url

    def is_emulated(self, info: dict[str, object]) -> bool:
        """Whether this device's latency comes from an emulated CPU: `emulated` when the inventory sets it,
        else the probe's finding (`agent.emulation`; an Android emulator over adb)."""
        return self.emulated if self.emulated is not None else bool(info.get("emulated"))

    def public(self) -> dict[str, object]:
        """What a run manifest records: everything but where the key lives (no secrets in manifests)."""
        return {k: v for k, v in self.__dict__.items() if k not in ("key_file", "passphrase_env")}


LOCAL = DeviceSpec("local")


def inventory_path(explicit: str | Path | None = None) -> Path | None:
    """The inventory file in effect (explicit path, $EDGECAM_DEVICES, ./devices.toml, user config), or None."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(f"device inventory not found: {path}")
        return path
    env = os.environ.get("EDGECAM_DEVICES")
    if env:
        if not Path(env).expanduser().is_file():
            raise ConfigError(f"EDGECAM_DEVICES points to {env}, which is not a file")
        return Path(env).expanduser()
    for candidate in (Path("devices.toml"), Path.home() / ".config" / "edgecam" / "devices.toml"):
        if candidate.is_file():
            return candidate
    return None


def load_inventory(path: str | Path | None = None) -> dict[str, DeviceSpec]:
    """Name -> DeviceSpec from the inventory file (plus the built-in "local"); errors name file and field."""
    from edgecam.config import build_spec

    devices = {"local": LOCAL}
    file = inventory_path(path)
    if file is None:
        return devices
    try:
        table = tomllib.loads(file.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: malformed TOML: {exc}") from exc
    unknown = sorted(set(table) - {"devices"})
    if unknown:
        raise ConfigError(f"{file}: unknown top-level key(s) {', '.join(unknown)}; expected [[devices]] tables")
    entries = table.get("devices", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{file}: devices: expected [[devices]] tables, got {type(entries).__name__}")
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        try:
            spec = build_spec(DeviceSpec, entry, f"devices[{i}]")
        except EdgecamError as exc:
            raise ConfigError(f"{file}: {exc}") from exc
        if spec.name in seen:
            raise ConfigError(f"{file}: devices[{i}]: duplicate device name {spec.name!r}")
        seen.add(spec.name)
        devices[spec.name] = spec
    return devices


def get_device_spec(name: str, path: str | Path | None = None) -> DeviceSpec:
    devices = load_inventory(path)
    if name not in devices:
        where = inventory_path(path)
        raise ConfigError(f"unknown device {name!r}; known devices: {', '.join(sorted(devices))} (inventory: {where or 'none found: create devices.toml'})")
    return devices[name]


def open_device(spec: DeviceSpec, local_workdir: str | None = None) -> Device:
    """Connect-on-demand Device for `spec`, made by the class registered for its URL scheme (SSH connects
    on first use); `local_workdir` is where a local device keeps its files when `spec` sets no workdir."""
    return device_class(spec.scheme).from_spec(spec, local_workdir)
