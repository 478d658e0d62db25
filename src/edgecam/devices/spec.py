"""One device of the inventory, validated (`DeviceSpec`), and the transports by URL scheme (`DEVICES`, lazy
"module:Class" entries): below `devices/base.py` and `devices/inventory.py`, which both use them, so that neither
imports the other to name a spec."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from edgecam.errors import ConfigError
from edgecam.registry import Registry

DEVICES: Registry[str] = Registry("device scheme")
DEVICES.add_lazy("local", "edgecam.devices.local:LocalDevice")
DEVICES.add_lazy("ssh", "edgecam.devices.ssh:SSHDevice")
DEVICES.add_lazy("adb", "edgecam.devices.adb:AdbDevice")


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
