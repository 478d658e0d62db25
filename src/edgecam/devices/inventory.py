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
from pathlib import Path

from edgecam.devices.base import Device, device_class
from edgecam.devices.spec import DeviceSpec
from edgecam.errors import ConfigError, EdgecamError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


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
    from edgecam.specs import build_spec

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
