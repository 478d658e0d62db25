"""One device of the inventory, validated (`DeviceSpec`), and the transports by URL scheme (`DEVICES`, lazy
"module:Class" entries): below `devices/base.py` and `devices/inventory.py`, which both use them, so that neither
imports the other to name a spec."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any, Mapping, Optional

from edgecam.errors import ConfigError
from edgecam.registry import Registry
from edgecam.specs import fold_settings, frozen_settings, refuse_foreign_settings, require_positive

DEVICES: Registry[str] = Registry("device scheme")
DEVICES.add_lazy("local", "edgecam.devices.local:LocalDevice")
DEVICES.add_lazy("ssh", "edgecam.devices.ssh:SSHDevice")
DEVICES.add_lazy("adb", "edgecam.devices.adb:AdbDevice")


def _device_settings() -> dict[str, dict[str, str]]:
    """Registered URL scheme -> the settings its device class declares."""
    return {scheme: DEVICES.load(scheme).settings_help for scheme in DEVICES}


@dataclass(frozen=True)
class DeviceSpec:
    """One device of the inventory; every field but `name` and `url` has a working default. Settings of one
    transport (SSH's `key_file`, adb's `benchmark_model`) are declared and validated by its device class
    (`Device.settings_help` / `check_settings`), written beside the common ones in the `[[devices]]` entry, held
    in `settings` with the transport's defaults filled in, and read as attributes (`spec.retries`)."""

    name: str
    url: str = "local"
    runtimes: tuple[str, ...] = ()
    threads: Optional[int] = None
    cores: Optional[int] = None
    python: Optional[str] = None
    workdir: Optional[str] = None
    tegrastats: bool = True
    emulated: Optional[bool] = None  # latency from an emulator, not hardware; None: as the device's probe says
    notes: str = ""
    settings: Mapping[str, Any] | tuple[tuple[str, Any], ...] = ()  # the transport's own, validated by its class

    @classmethod
    def spec_for_table(cls, table: dict[str, Any], path: str, build: Any) -> tuple[type, dict[str, Any]]:
        """The hook `build_spec` calls: every key but the common ones is a transport's own setting."""
        return cls, fold_settings(table, path, {f.name for f in fields(cls)} - {"settings"}, _device_settings())

    def __post_init__(self) -> None:
        if self.scheme not in DEVICES:
            raise ConfigError(
                f"devices.{self.name}.url: unknown scheme {self.scheme!r} in {self.url!r}; known: {', '.join(DEVICES.names())} "
                "(local, ssh://user@host[:port] or adb://SERIAL)"
            )
        require_positive(self, f"devices.{self.name}", ("threads", "cores"))
        from edgecam.runtimes import RUNTIMES

        for rt in self.runtimes:
            if rt not in RUNTIMES:
                raise ConfigError(f"devices.{self.name}.runtimes: unknown runtime {rt!r}; known: {', '.join(RUNTIMES.names())}")
        given = dict(self.settings)
        refuse_foreign_settings(given, f"devices.{self.name}", "device", self.scheme, _device_settings())
        try:
            checked = DEVICES.load(self.scheme).check_settings(given)
        except ValueError as exc:
            raise ConfigError(f"devices.{self.name}.{exc}") from exc
        object.__setattr__(self, "settings", frozen_settings(checked))

    def __getattr__(self, key: str) -> Any:
        """A transport setting as an attribute (`spec.key_file`); only called when `key` is not a field."""
        for name, value in self.__dict__.get("settings", ()):
            if name == key:
                return value
        raise AttributeError(f"device {self.__dict__.get('name')!r} ({self.__dict__.get('url')}) has no setting {key!r}")

    def replace(self, **changes: Any) -> "DeviceSpec":
        """A copy with `changes` applied, to common fields and transport settings alike (`retries=4`)."""
        own = {f.name for f in fields(self)}
        settings = {**dict(self.settings), **{k: v for k, v in changes.items() if k not in own}}
        return dataclasses.replace(self, **{"settings": settings, **{k: v for k, v in changes.items() if k in own}})

    @property
    def scheme(self) -> str:
        return self.url.split("://", 1)[0] if "://" in self.url else self.url

    def is_emulated(self, info: dict[str, object]) -> bool:
        """Whether this device's latency comes from an emulated CPU: `emulated` when the inventory sets it,
        else the probe's finding (`agent.emulation`; an Android emulator over adb)."""
        return self.emulated if self.emulated is not None else bool(info.get("emulated"))

    def public(self) -> dict[str, object]:
        """What a run manifest records: everything but where the key lives (no secrets in manifests)."""
        secret = DEVICES.load(self.scheme).secret_settings
        common = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "settings"}
        return {**common, **{k: v for k, v in self.settings if k not in secret}}
