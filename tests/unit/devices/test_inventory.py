"""devices.toml: valid entries, errors that name the file and field, lookup order, `edgecam devices`."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecam.cli import main
from edgecam.devices.adb import AdbDevice
from edgecam.devices.base import DEVICES, device_class
from edgecam.devices.inventory import DeviceSpec, get_device_spec, inventory_path, load_inventory, open_device
from edgecam.devices.local import LocalDevice
from edgecam.devices.ssh import SSHDevice, SSHTarget
from edgecam.errors import ConfigError, UnknownNameError

GOOD = """
[[devices]]
name = "orin"
url = "ssh://ubuntu@192.0.2.40:2222"
runtimes = ["onnxruntime", "litert"]
threads = 4
cores = 4
key_file = "~/.ssh/id_orin"
notes = "Jetson Orin Nano 8GB"

[[devices]]
name = "pixel"
url = "adb://emulator-5554"
benchmark_model = "/data/local/tmp/benchmark_model"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "devices.toml"
    path.write_text(text)
    return path


def test_inventory_loads_typed_specs_and_keeps_local(tmp_path: Path) -> None:
    devices = load_inventory(write(tmp_path, GOOD))
    assert sorted(devices) == ["local", "orin", "pixel"]
    orin = devices["orin"]
    assert orin.runtimes == ("onnxruntime", "litert") and orin.threads == 4 and orin.cores == 4 and orin.host_key_check
    assert orin.scheme == "ssh" and devices["pixel"].scheme == "adb"
    assert "key_file" not in orin.public() and orin.public()["url"] == orin.url


def test_emulated_is_the_probes_finding_unless_the_inventory_says() -> None:
    from edgecam.devices.inventory import DeviceSpec

    assert DeviceSpec("pi", "ssh://u@h").is_emulated({"emulated": True}) is True
    assert DeviceSpec("pi", "ssh://u@h").is_emulated({}) is False
    assert DeviceSpec("pi", "ssh://u@h", emulated=False).is_emulated({"emulated": True}) is False  # the user knows better
    assert DeviceSpec("vm", "ssh://u@h", emulated=True).is_emulated({"emulated": False}) is True


def test_ssh_spec_opens_an_unconnected_ssh_device(tmp_path: Path) -> None:
    device = open_device(get_device_spec("orin", write(tmp_path, GOOD)))
    assert isinstance(device, SSHDevice) and device._client is None  # connects on first use
    assert device.target == SSHTarget("ubuntu", "192.0.2.40", 2222) and device.key_file == str(Path.home() / ".ssh/id_orin")
    assert device.name == "orin" and device.retries == 3 and device.connect_timeout == 10.0
    local = open_device(DeviceSpec("bench-box"), local_workdir=str(tmp_path))
    assert isinstance(local, LocalDevice) and local.name == "bench-box" and local.workdir() == str(tmp_path)


def test_every_scheme_is_registered_with_its_device_class() -> None:
    assert DEVICES.names() == ["adb", "local", "ssh"]
    assert {s: device_class(s) for s in DEVICES} == {"adb": AdbDevice, "local": LocalDevice, "ssh": SSHDevice}
    assert all(device_class(s).kind == s for s in DEVICES)
    with pytest.raises(UnknownNameError, match="unknown device scheme 'telnet'; known device schemes: adb, local, ssh"):
        device_class("telnet")


class _Connection:
    closed = 0

    def close(self) -> None:
        type(self).closed += 1


def test_devices_are_context_managers_that_close(tmp_path: Path) -> None:
    with open_device(DeviceSpec("local"), local_workdir=str(tmp_path)) as local:
        assert isinstance(local, LocalDevice)
    local.close()  # the default close is a no-op, callable any number of times
    ssh = open_device(get_device_spec("orin", write(tmp_path, GOOD)))
    with ssh as entered:
        assert entered is ssh
        ssh._client = _Connection()  # stands in for a live paramiko client
    assert _Connection.closed == 1 and ssh._client is None


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('[[devices]]\nname = "a"\nurl = "ssh://h"\nthreds = 2\n', r"unknown key devices\[0\]\.threds; allowed keys"),
        ('[[devices]]\nname = "a"\nurl = "telnet://h"\n', r"devices\.a\.url: unknown scheme 'telnet' in 'telnet://h'; known: adb, local, ssh \(local, ssh://"),
        ('[[devices]]\nname = "a"\nurl = "ssh://h"\nthreads = "4"\n', r"devices\[0\]\.threads: expected int, got str"),
        ('[[devices]]\nname = "a"\nurl = "ssh://h"\nruntimes = ["tensorflow"]\n', r"unknown runtime 'tensorflow'; known: .*onnxruntime"),
        ('[[devices]]\nname = "a"\n[[devices]]\nname = "a"\n', r"duplicate device name 'a'"),
        ('[[devices]]\nname = "a"\ncores = 0\n', r"devices\.a\.cores: expected a positive integer"),
        ("[device]\nname = 1\n", r"unknown top-level key\(s\) device"),
        ("[[devices]\n", r"malformed TOML"),
    ],
)
def test_bad_inventory_names_file_and_field(tmp_path: Path, text: str, match: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=match) as err:
        load_inventory(path)
    assert str(path) in str(err.value)


def test_ssh_url_errors() -> None:
    with pytest.raises(Exception, match="passwords are not accepted"):
        SSHTarget.parse("ssh://u:secret@h")
    with pytest.raises(Exception, match=r"expected ssh://\[user@\]host"):
        SSHTarget.parse("ssh://")
    assert SSHTarget.parse("ssh://pi@raspberrypi.local") == SSHTarget("pi", "raspberrypi.local", 22)


def test_lookup_order_and_unknown_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EDGECAM_DEVICES", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert inventory_path() is None
    write(tmp_path, GOOD)
    assert inventory_path() == Path("devices.toml")
    other = tmp_path / "other.toml"
    other.write_text('[[devices]]\nname = "pi"\nurl = "ssh://pi@192.0.2.7"\n')
    monkeypatch.setenv("EDGECAM_DEVICES", str(other))
    assert sorted(load_inventory()) == ["local", "pi"]
    with pytest.raises(ConfigError, match=r"unknown device 'jetson'; known devices: local, pi"):
        get_device_spec("jetson")
    with pytest.raises(ConfigError, match="device inventory not found"):
        load_inventory(tmp_path / "missing.toml")


def test_cli_devices_list_and_probe_local(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGECAM_CACHE_DIR", str(tmp_path / "cache"))
    path = write(tmp_path, GOOD)
    assert main(["devices", "--devices", str(path), "list"]) == 0
    out = capsys.readouterr().out
    assert "orin" in out and "ssh://ubuntu@192.0.2.40:2222" in out and "Jetson Orin Nano 8GB" in out
    assert main(["devices", "--devices", str(path), "probe", "local", "--json"]) == 0
    import json

    facts = json.loads(capsys.readouterr().out)
    assert facts["runtimes"]["onnxruntime"] and facts["cores"] >= 1 and facts["kind"] == "local"
    assert main(["devices", "--devices", str(path), "probe", "nope"]) == 2
    assert "unknown device 'nope'" in capsys.readouterr().err


def test_transport_settings_belong_to_their_device_class() -> None:
    """SSH's settings are declared and validated by SSHDevice, adb's by AdbDevice (`Device.settings_help` /
    `check_settings`): another transport's setting is refused with whose it is, defaults are filled in, secrets
    stay out of the manifest's record, and `replace` routes a setting to the settings."""
    from edgecam.devices.spec import DeviceSpec
    from edgecam.errors import ConfigError
    from edgecam.specs import build_spec

    with pytest.raises(ConfigError, match=r"devices.phone.key_file: a ssh device option; device 'adb' takes benchmark_model"):
        build_spec(DeviceSpec, {"name": "phone", "url": "adb://emulator-5554", "key_file": "~/.ssh/id"}, "devices[0]")
    with pytest.raises(ConfigError, match=r"devices.orin.retries: expected an integer >= 0, got -1"):
        DeviceSpec("orin", url="ssh://u@127.0.0.1", settings={"retries": -1})
    orin = build_spec(DeviceSpec, {"name": "orin", "url": "ssh://u@127.0.0.1", "key_file": "~/.ssh/id", "passphrase_env": "P"}, "devices[0]")
    assert (orin.retries, orin.connect_timeout_s, orin.host_key_check, orin.key_file) == (3, 10.0, True, "~/.ssh/id")
    assert {"key_file", "passphrase_env"}.isdisjoint(orin.public()) and orin.public()["retries"] == 3
    again = orin.replace(retries=5, python="python3.12")
    assert (again.retries, again.python, again.key_file) == (5, "python3.12", "~/.ssh/id")
    with pytest.raises(AttributeError, match="has no setting 'key_file'"):
        DeviceSpec("here").key_file  # noqa: B018 - a local device has no SSH settings
