"""AdbDevice against a stand-in `adb`: a real executable that records its argv and acts like adb on this machine.

The stand-in treats the host as the device: `shell` hands the joined words to `/bin/sh -c` (as adbd hands them
to the device's sh) and exits with the command's status (adb's shell protocol), `push`/`pull` copy files with
adb's rules, `get-state`/`features` answer as a healthy Android 7+ device. Device paths live under tmp_path.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from processes import all_gone, live_pids

from edgecam.devices.adb import AdbDevice, AdbNotFound, shell_command
from edgecam.devices.base import DeviceError, DeviceTimeout, JobFailed, device_class
from edgecam.devices.benchmark_model import benchmark_argv
from edgecam.errors import EdgecamError

SERIAL = "emulator-5554"

FAKE_ADB = r'''#!{python}
"""Stand-in for the adb client: logs argv, then behaves like adb against this machine."""
import json, os, shutil, subprocess, sys

with open(os.environ["FAKE_ADB_LOG"], "a") as log:
    log.write(json.dumps(sys.argv) + "\n")
args = sys.argv[1:]
serial = None
if args[:1] == ["-s"]:
    serial, args = args[1], args[2:]
if serial != os.environ["FAKE_ADB_SERIAL"]:
    sys.stderr.write("adb: device '%s' not found\n" % serial)
    sys.exit(1)
cmd, rest = args[0], args[1:]


def copy(src, dst):
    if os.path.isdir(dst):  # adb: an existing directory receives the source as a child
        dst = os.path.join(dst, os.path.basename(src.rstrip("/")))
    if os.path.isdir(src):
        shutil.copytree(src, dst)
    else:
        os.makedirs(os.path.dirname(dst) or "/", exist_ok=True)
        shutil.copy2(src, dst)


if cmd == "get-state":
    state = os.environ.get("FAKE_ADB_STATE", "device")
    if state != "device":
        sys.stderr.write("error: device %s.\n" % state)
        sys.exit(1)
    print("device")
elif cmd == "features":
    print(os.environ.get("FAKE_ADB_FEATURES", "shell_v2\ncmd\nstat_v2\nls_v2\nfixed_push_mkdir"))
elif cmd == "shell":
    if rest[:1] == ["-T"]:  # no PTY: stdin and stdout are the stream (shell_v2), as the session uses them
        rest = rest[1:]
    env = dict(os.environ, PATH=os.environ["FAKE_DEVICE_BIN"] + os.pathsep + os.environ["PATH"])
    sys.exit(subprocess.run(["/bin/sh", "-c", " ".join(rest)], cwd=os.environ["FAKE_DEVICE_CWD"], env=env).returncode)
elif cmd in ("push", "pull"):
    src, dst = rest
    if not os.path.exists(src):
        sys.stderr.write("adb: error: failed to stat remote object '%s': No such file or directory\n" % src)
        sys.exit(1)
    copy(src, dst)
    print("%s: 1 file %sed." % (src, cmd))
else:
    sys.stderr.write("adb: unknown command %s\n" % cmd)
    sys.exit(1)
'''

FAKE_GETPROP = """#!/bin/sh
cat <<'EOF'
[ro.build.version.release]: [14]
[ro.build.version.sdk]: [34]
[ro.kernel.qemu]: [1]
[ro.product.cpu.abi]: [x86_64]
[ro.product.manufacturer]: [Google]
[ro.product.model]: [sdk_gphone64_x86_64]
EOF
"""

# Real benchmark_model output, TF Lite v2.4.0 on a Xiaomi Mi11: github.com/lp6m/yolov5s_android, benchmark/README.md.
TF24_OUTPUT = """\
count=50 first=249042 curr=250889 min=247067 max=254474 avg=249684 std=1442
Inference timings in us: Init: 16242, First inference: 360262, Warmup (avg): 304586, Inference (avg): 249684
Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
Peak memory footprint (MB): init=4.92969 overall=138.809
"""
# Same source, a failed run (tail).
TF24_FAILURE = """\
ERROR: Restored original execution plan after delegate application failure.
Failed to apply NNAPI delegate.
Benchmarking failed.
"""


def _executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


class FakeAdb:
    """The stand-in's files: its path, its argv log, and the directories it uses as the device."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.path = _executable(root / "host-bin" / "adb", FAKE_ADB.replace("{python}", sys.executable))
        self.log = root / "adb-argv.jsonl"
        self.device_bin = root / "device-bin"
        self.cwd = root / "device-cwd"
        self.cwd.mkdir()
        _executable(self.device_bin / "getprop", FAKE_GETPROP)
        self.workdir = root / "dev ice" / "edgecam"  # a space in every device path
        for key, value in {"FAKE_ADB_LOG": self.log, "FAKE_ADB_SERIAL": SERIAL, "FAKE_DEVICE_BIN": self.device_bin, "FAKE_DEVICE_CWD": self.cwd}.items():
            monkeypatch.setenv(key, str(value))

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def device(self, **kwargs: Any) -> AdbDevice:
        return AdbDevice(SERIAL, workdir=str(self.workdir), adb=str(self.path), **kwargs)


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeAdb:
    return FakeAdb(tmp_path, monkeypatch)


def test_awkward_remote_path_is_quoted_for_the_shell_and_verbatim_for_sync(fake: FakeAdb, tmp_path: Path) -> None:
    dev = fake.device()
    adb = [str(fake.path), "-s", SERIAL]
    remote = f"{fake.workdir}/run 1/it's a \"model\"; touch PWNED #.bin"
    quoted = "'" + f"{fake.workdir}/run 1/it" + "'\"'\"'" + "s a \"model\"; touch PWNED #.bin'"
    assert shlex.quote(remote) == quoted  # what the remote shell receives, spelled out
    local = tmp_path / "model.bin"
    local.write_bytes(b"weights; not a command\n")

    dev.push(local, remote)
    calls = fake.calls()
    assert calls[0] == adb + ["get-state"] and calls[1] == adb + ["features"]
    assert calls[2] == adb + ["shell", "mkdir -p " + shlex.quote(f"{fake.workdir}/run 1")]
    tmp = calls[3][-1]
    assert calls[3] == adb + ["push", str(local.resolve()), tmp] and tmp.startswith(remote + ".edgecam-part-")
    assert calls[4] == adb + ["shell", f"rm -rf {quoted} && mv {shlex.quote(tmp)} {quoted}"]
    assert Path(remote).read_bytes() == local.read_bytes()

    assert dev.exists(remote) is True
    assert fake.calls()[-1] == adb + ["shell", f"test -e {quoted}"]
    assert dev.exists(remote + ".missing") is False

    res = dev.run(["cat", remote])
    assert fake.calls()[-1] == adb + ["shell", f"cat {quoted}"]
    assert res.returncode == 0 and res.stdout == "weights; not a command\n"

    back = tmp_path / "back" / "model.bin"
    dev.pull(remote, back)
    pull = fake.calls()[-1]
    assert pull[:5] == adb + ["pull", remote] and pull[5] != str(back)  # remote verbatim; lands beside, then renamed
    assert back.read_bytes() == local.read_bytes()
    assert not (fake.cwd / "PWNED").exists()  # the `; touch PWNED` never ran
    assert [c[3] for c in fake.calls()].count("get-state") == 1  # state and features checked once


def test_directory_round_trip_and_cleanup(fake: FakeAdb, tmp_path: Path) -> None:
    dev = fake.device()
    src = tmp_path / "job"
    (src / "sub dir").mkdir(parents=True)
    (src / "job.json").write_text('{"a": 1}')
    (src / "sub dir" / "x y.npy").write_bytes(b"\x93NUMPY")
    remote = f"{dev.workdir()}/jobs/k e y"
    dev.push(src, remote)
    dev.push(src, remote)  # again: replaced, not nested
    assert sorted(p.name for p in Path(remote).iterdir()) == ["job.json", "sub dir"]
    back = tmp_path / "back"
    back.mkdir()
    (back / "stale").write_text("old")
    dev.pull(remote, back)
    assert sorted(p.name for p in back.iterdir()) == ["job.json", "sub dir"]
    assert (back / "sub dir" / "x y.npy").read_bytes() == b"\x93NUMPY"
    dev.cleanup(remote)
    assert not Path(remote).exists()
    with pytest.raises(DeviceError, match="No such file"):
        dev.pull(remote, tmp_path / "gone")


def test_run_returns_the_remote_exit_status_and_separate_streams(fake: FakeAdb) -> None:
    dev = fake.device()
    res = dev.run(["sh", "-c", "echo out; echo err >&2; exit 7"])
    assert fake.calls()[-1][3:] == ["shell", "sh -c 'echo out; echo err >&2; exit 7'"]
    assert (res.returncode, res.stdout, res.stderr) == (7, "out\n", "err\n")
    assert dev.run(["true"]).returncode == 0
    assert shell_command(["printf", "%s|", "a b", "", "$HOME", "`id`"]) == "printf '%s|' 'a b' '' '$HOME' '`id`'"
    assert dev.run(["printf", "%s|", "a b", "", "$HOME", "`id`"]).stdout == "a b||$HOME|`id`|"
    with pytest.raises(ValueError):
        dev.run(["-x"])


def test_device_without_shell_protocol_is_refused(fake: FakeAdb, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_ADB_FEATURES", "cmd\nstat_v2")
    with pytest.raises(DeviceError, match="shell_v2"):
        fake.device().run(["true"])


def test_unauthorized_device_gets_a_hint(fake: FakeAdb, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_ADB_STATE", "unauthorized")
    with pytest.raises(DeviceError, match="Allow USB debugging"):
        fake.device().exists("/data/local/tmp")


def test_wrong_serial_names_the_device(fake: FakeAdb) -> None:
    dev = AdbDevice("0123456789ABCDEF", workdir=str(fake.workdir), adb=str(fake.path))
    with pytest.raises(DeviceError, match="0123456789ABCDEF.*not found"):
        dev.run(["true"])


def test_info_from_getprop_and_proc(fake: FakeAdb) -> None:
    facts = fake.device(benchmark_model="/data/local/tmp/benchmark_model").info()
    assert facts["kind"] == "adb" and facts["serial"] == SERIAL and facts["name"] == f"adb:{SERIAL}"
    assert facts["model"] == "sdk_gphone64_x86_64" and facts["manufacturer"] == "Google"
    assert facts["abi"] == "x86_64" and facts["arch"] == "x86_64"
    assert facts["os"] == "Android 14 (API 34)" and facts["sdk"] == 34 and facts["emulator"] is True
    assert facts["ram_bytes"] > 0 and facts["cores"] >= 1 and facts["kernel"]  # this host's /proc stands in
    assert facts["benchmark_model"] == "/data/local/tmp/benchmark_model" and facts["python"] is None
    dev = fake.device()
    dev.info()
    n = len(fake.calls())
    dev.info()
    assert len(fake.calls()) == n  # read once per device


def test_benchmark_pushes_once_runs_the_binary_and_parses(fake: FakeAdb, tmp_path: Path) -> None:
    out = tmp_path / "bm-output.txt"
    out.write_text(TF24_OUTPUT)
    binary = _executable(fake.workdir.parent / "tools" / "benchmark_model", f"#!/bin/sh\ncat {shlex.quote(str(out))}\n")
    model = tmp_path / "my model.tflite"
    model.write_bytes(b"TFL3 fake flatbuffer")
    dev = fake.device(benchmark_model=str(binary))

    result = dev.benchmark(model, threads=4, runs=50, warmup=5)
    assert result.inference_avg_ms == pytest.approx(249.684) and result.inference_count == 50
    assert result.memory_overall_mb == pytest.approx(138.809)
    pushes = [c for c in fake.calls() if c[3] == "push"]
    assert len(pushes) == 1
    remote = pushes[0][5].rsplit(".edgecam-part-", 1)[0]
    assert remote.startswith(f"{fake.workdir}/models/") and remote.endswith("/my model.tflite")
    expected = benchmark_argv(str(binary), remote, 4, 50, 5)
    assert fake.calls()[-1][3:] == ["shell", shell_command(expected) + " 2>&1"]

    dev.benchmark(model, threads=None, runs=10, warmup=1, use_xnnpack=None, env={"LD_LIBRARY_PATH": "/data/local/tmp/lib"})
    assert len([c for c in fake.calls() if c[3] == "push"]) == 1  # content-addressed: not pushed again
    assert fake.calls()[-1][4] == shell_command(["env", "LD_LIBRARY_PATH=/data/local/tmp/lib", *benchmark_argv(str(binary), remote, None, 10, 1, use_xnnpack=None)]) + " 2>&1"


def test_benchmark_failures_are_reported(fake: FakeAdb, tmp_path: Path) -> None:
    out = tmp_path / "failure.txt"
    out.write_text(TF24_FAILURE)
    failing = _executable(fake.workdir.parent / "tools" / "bm-fail", f"#!/bin/sh\ncat {shlex.quote(str(out))}\nexit 1\n")
    model = tmp_path / "m.tflite"
    model.write_bytes(b"TFL3")
    with pytest.raises(JobFailed, match=r"exited 1[\s\S]*Benchmarking failed\."):
        fake.device(benchmark_model=str(failing)).benchmark(model, 1, 5, 1)
    silent = _executable(fake.workdir.parent / "tools" / "bm-silent", "#!/bin/sh\necho STARTING!\n")
    with pytest.raises(JobFailed, match="no inference timings"):
        fake.device(benchmark_model=str(silent)).benchmark(model, 1, 5, 1)
    with pytest.raises(DeviceError, match="not executable"):
        fake.device(benchmark_model=f"{fake.workdir}/nope").benchmark(model, 1, 5, 1)
    with pytest.raises(DeviceError, match="no benchmark_model binary configured"):
        fake.device().benchmark(model, 1, 5, 1)


def test_missing_adb_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(AdbNotFound, match=r"apt-get install adb") as info:
        AdbDevice(SERIAL, adb=str(tmp_path / "no-such-adb"))
    assert isinstance(info.value, EdgecamError) and isinstance(info.value, DeviceError)
    monkeypatch.setenv("PATH", str(tmp_path))  # no adb on PATH
    with pytest.raises(EdgecamError, match=r"apt-get install adb"):
        AdbDevice(SERIAL)


def test_registered_and_opened_from_the_inventory(fake: FakeAdb, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgecam.devices.inventory import DeviceSpec, open_device

    assert device_class("adb") is AdbDevice
    monkeypatch.setenv("PATH", str(fake.path.parent) + os.pathsep + os.environ["PATH"])
    dev = open_device(DeviceSpec("phone", url=f"adb://{SERIAL}", settings={"benchmark_model": "/data/local/tmp/benchmark_model"}))
    assert isinstance(dev, AdbDevice)
    assert dev.name == "phone" and dev.info()["name"] == "phone"  # the inventory's name, not adb:SERIAL
    assert (dev.serial, dev.workdir(), dev.benchmark_model) == (SERIAL, "/data/local/tmp/edgecam", "/data/local/tmp/benchmark_model")
    with pytest.raises(DeviceError, match="Python"):
        dev.python()
    with pytest.raises(DeviceError, match="absolute"):
        AdbDevice(SERIAL, workdir="relative/dir", adb=str(fake.path))


def test_a_command_past_its_timeout_raises_device_timeout(fake: FakeAdb, tmp_path: Path) -> None:
    """A hung phone fails the job with the error every device raises on timeout, not TimeoutExpired (which the
    sweep does not catch)."""
    dev = fake.device(name="pixel")
    job = f"{fake.workdir}/jobs/abc123"
    with pytest.raises(DeviceTimeout, match=r"pixel: `adb shell sh -c 'sleep 5' .*jobs/abc123'?` timed out after 0\.5 s") as info:
        dev.run(["sh", "-c", "sleep 5", job], timeout=0.5)  # the job directory, last, as in an agent run
    assert isinstance(info.value, JobFailed) and isinstance(info.value, DeviceError) and isinstance(info.value, EdgecamError)
    assert dev.run(["true"], timeout=30).returncode == 0  # the device stays usable

    hang = _executable(fake.workdir.parent / "tools" / "bm-hang", "#!/bin/sh\nsleep 5\n")
    model = tmp_path / "m.tflite"
    model.write_bytes(b"TFL3")
    with pytest.raises(DeviceTimeout, match=r"pixel: benchmark_model did not finish within 0\.5 s \(m\.tflite\)"):
        fake.device(name="pixel", benchmark_model=str(hang)).benchmark(model, 1, 5, 1, timeout=0.5)


def test_session_streams_through_one_agent_over_adb_shell_T(fake: FakeAdb, trained_tinycnn, tmp_path: Path) -> None:
    """The adb session is one `adb shell -T 'exec PY agent serve JOB'` per artifact (shell_v2 without a PTY carries
    the frames byte for byte; tests/integration/test_adb_board.py checks it against a real adbd): every request
    goes to the same agent, a bad one is refused without ending it, and the answers are the local session's."""
    import numpy as np

    from edgecam.devices.adb import AdbSession
    from edgecam.devices.local import LocalDevice

    art = trained_tinycnn.artifacts["fp32"]
    x = trained_tinycnn.data.test_x[:4]
    job = {"runtime": "onnxruntime", "runtime_options": {"threads": 1}, "output_batch_size": 8}
    with LocalDevice(workdir=str(tmp_path / "local")).session(art, job) as local:
        ref = local.forward(x, outputs=None)
        ref_cam = local.scorecam(x, ref["features"][:, :5])
    dev = fake.device(python=sys.executable)
    with dev.session(art, job) as s:
        assert isinstance(s, AdbSession) and s.streaming
        out = s.forward(x, outputs=None)
        with pytest.raises(JobFailed, match="unknown op 'explode'"):
            s.request("explode")
        cam = s.scorecam(x, ref["features"][:, :5])
        assert s.starts == 1 and s.calls == 3
    for k in ref:
        np.testing.assert_allclose(out[k], ref[k], atol=1e-6)
    np.testing.assert_allclose(cam, ref_cam, atol=1e-6)
    assert not any((fake.workdir / "jobs").iterdir())  # the session's job folder removed from the device
    serves = [c for c in fake.calls() if c[3] == "shell" and any(" serve " in a for a in c[4:])]
    assert len(serves) == 1 and serves[0][4] == "-T" and serves[0][5].startswith("exec ")


@pytest.mark.timeout(180)
def test_a_timed_out_job_or_request_is_stopped_on_the_phone(fake: FakeAdb, trained_tinycnn) -> None:
    """Killing `adb shell` does not stop the command on the phone (the stand-in behaves the same: its `sh`
    outlives it). On a timeout the host stops the agent's whole process group through the job's pid file
    (one-shot jobs) or the job folder in its command line (the streaming session), helper process included,
    and the job folder with its inputs is removed."""
    from edgecam.runtimes.fault import HELPER_MARK

    dev = fake.device(python=sys.executable)
    art = trained_tinycnn.artifacts["fp32"]
    x = trained_tinycnn.data.test_x[:2]
    job = {"runtime": "fault", "runtime_options": {"fault": "hang-child"}, "mode": "forward", "output_batch_size": 8}
    assert live_pids(HELPER_MARK) == []
    with pytest.raises(DeviceTimeout, match="timed out after 5 s"):
        dev.run_job(art, x, job, timeout=5)
    assert all_gone(HELPER_MARK) and all_gone(f"{fake.workdir}/jobs/")
    assert not any((fake.workdir / "jobs").iterdir())

    with dev.session(art, job, timeout=5) as s:
        with pytest.raises(DeviceTimeout, match="timed out after 5 s"):
            s.forward(x, outputs=None)
    assert all_gone(HELPER_MARK) and all_gone(f"{fake.workdir}/jobs/")
    assert not any((fake.workdir / "jobs").iterdir())
