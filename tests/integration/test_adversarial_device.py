"""A hostile device through whole runs (issue 36, classes 1-3 of the 2026-12-05 audit): the device's `python` is
tests/hostile_agent.py, which runs the real agent and rewrites its answers, so every check is the one SSH and adb
reach (result.json and outputs.npz pulled from the job folder, the probe's line, the session's frames).

- class 1, answers used before they are validated: a session answer without its arrays, a frame header or a
  result.json or a probe nested 200,000 deep: a failed job (or a refused probe) with the reason, the run goes on;
- class 2, memory a device chooses: a deflate bomb as outputs.npz (1 GiB of zeros in 1 MB) on the local
  transport, a sparse 1 GiB result.json over SSH without SFTP (tar): refused, and the host's peak RSS stays within
  1.5x a clean run's (measured in a fresh process per run);
- class 3, device text printed raw: escapes in an error and in probe facts reach neither the terminal nor
  failed.csv, and a 300,000-character error costs no more than a short one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import pytest

TESTS = Path(__file__).resolve().parents[1]
ESC = "\x1b"

CONFIG = """\
name = "hostile"
[data]
limit = 8
[train]
epochs = {epochs}
[export]
formats = ["onnx"]
precisions = ["fp32"]
[[models]]
name = "tinycnn"
[[runtimes]]
name = "onnxruntime"
threads = 1
[bench]
warmup = 1
iterations = 5
memory = false
[explain]
methods = ["gradcampp", "eigencam", "scorecam"]
faithfulness = false
shard_size = 4
bootstrap = 100
"""


@pytest.fixture(scope="module")
def setup(trained_tinycnn: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The experiment (the session's tinycnn, cached: nothing trains), the hostile launcher and the npz bomb."""
    root = tmp_path_factory.mktemp("hostile")
    root.chmod(0o755)
    config = root / "hostile.toml"
    config.write_text(CONFIG.format(epochs=trained_tinycnn.cfg.train.epochs))
    launcher = root / "python"
    launcher.write_text(f"#!/bin/sh\nexec {sys.executable} {TESTS / 'hostile_agent.py'} \"$@\"\n")
    launcher.chmod(0o755)
    bomb = root / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z, z.open("logits.npy", "w", force_zip64=True) as f:
        np.lib.format.write_array_header_2_0(f, {"descr": "<f4", "fortran_order": False, "shape": (1, 1 << 28)})
        zeros = bytes(16 << 20)
        for _ in range(64):  # 1 GiB of float32 zeros
            f.write(zeros)
    inventory = root / "devices.toml"
    inventory.write_text(f'[[devices]]\nname = "evil"\nurl = "local"\npython = "{launcher}"\nworkdir = "{root / "board"}"\n')
    return {"root": root, "config": config, "launcher": launcher, "bomb": bomb, "inventory": inventory}


def _run(setup: dict[str, Path], out: Path, mode: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """`edgecam run` on the hostile device in this process: (exit status, everything printed)."""
    from edgecam.cli import main

    monkeypatch.setenv("EDGECAM_HOSTILE", mode)
    monkeypatch.setenv("EDGECAM_HOSTILE_BOMB", str(setup["bomb"]))
    rc = main(["run", str(setup["config"]), "--out", str(out), "--device", "evil", "--devices", str(setup["inventory"])])
    cap = capsys.readouterr()
    return rc, cap.out + cap.err


def _failed(out: Path) -> pd.DataFrame:
    from edgecam.bench import outputs as files

    return pd.read_csv(out / files.FAILED)


@pytest.mark.parametrize("mode, reason", [
    ("serve-noarrays", "the answer holds [], not ['features', 'logits']"),
    ("serve-deep", "bad frame header: JSON nested deeper than 64 levels"),
])
def test_a_session_answer_without_its_arrays_or_nested_too_deep_fails_its_shard(setup: dict[str, Path], mode: str, reason: str, tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from edgecam.bench import outputs as files

    rc, printed = _run(setup, tmp_path / "run", mode, monkeypatch, capsys)
    assert rc == 1 and "Traceback" not in printed, printed[-3000:]
    failed = _failed(tmp_path / "run")
    explain = failed[failed["job"].str.startswith("explain")]
    assert len(explain) == 2 and explain["error"].str.contains(reason, regex=False).all(), failed.to_dict("records")  # both shards, with the reason
    assert (tmp_path / "run" / files.REPORT).exists() and (tmp_path / "run" / files.BENCH).exists()  # the run finished its files
    assert pd.read_csv(tmp_path / "run" / files.BENCH)["ok"].all()  # the timing pass (one-shot jobs) was honest


def test_a_result_json_nested_too_deep_fails_its_job(setup: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from edgecam.bench import outputs as files

    rc, printed = _run(setup, tmp_path / "run", "result-deep", monkeypatch, capsys)
    assert rc == 1 and "Traceback" not in printed and "RecursionError" not in printed, printed[-3000:]
    bench = pd.read_csv(tmp_path / "run" / files.BENCH)
    assert not bench["ok"].any() and bench["error"].str.contains("result.json is not usable JSON").all() and "nested deeper than 64" in bench["error"][0]
    assert (tmp_path / "run" / files.MANIFEST).exists() and (tmp_path / "run" / files.REPORT).exists()  # the run finished, its failure listed


def test_device_text_reaches_neither_the_terminal_nor_failed_csv_raw_and_a_huge_error_costs_nothing(
        setup: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """An error of escapes, markup, HTML and 300,000 characters from every session answer (the audit's run sat
    in rich's highlighter for over 5 minutes on one such line)."""
    t0 = time.monotonic()
    rc, printed = _run(setup, tmp_path / "run", "serve-errtext", monkeypatch, capsys)
    took = time.monotonic() - t0
    assert rc == 1 and "Traceback" not in printed
    assert ESC not in printed and "\x07" not in printed and "\x9b" not in printed
    assert "\\x1b]0;PWNED-TITLE\\x07\\x1b[2J" in printed  # shown, as text
    failed = _failed(tmp_path / "run")
    errors = failed.loc[failed["job"].str.startswith("explain"), "error"]
    assert len(errors) == 2 and not errors.str.contains(ESC).any() and errors.str.contains("characters cut").all()
    assert errors.str.len().max() < 8000  # capped, head and tail kept
    assert took < 120, f"the run took {took:.0f} s"  # what the same run takes without the errors, with room for a shared machine


def test_probe_facts_with_escapes_are_shown_as_text_and_a_deep_probe_is_refused(setup: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from edgecam.cli import main

    monkeypatch.setenv("EDGECAM_HOSTILE", "probe-escapes")
    assert main(["devices", "--devices", str(setup["inventory"]), "probe", "evil"]) == 0
    printed = capsys.readouterr().out
    assert "EVIL CPU" in printed and ESC not in printed and "\u202e" not in printed
    assert "\\x1b[8mhidden" in printed and "\\u202e" in printed
    monkeypatch.setenv("EDGECAM_HOSTILE", "probe-deep")
    assert main(["devices", "--devices", str(setup["inventory"]), "probe", "evil"]) == 2
    cap = capsys.readouterr()
    assert "nested deeper than 64 levels" in cap.err and "Traceback" not in cap.out + cap.err


# -- memory: a hostile device cannot take the host above 1.5x a clean run's peak RSS ----------------------------
PEAK = textwrap.dedent("""\
    import resource, sys
    from edgecam.cli import main
    rc = main(sys.argv[2:])
    open(sys.argv[1], "w").write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
    sys.exit(rc)
""")


def _peak_rss_mb(setup: dict[str, Path], out: Path, inventory: Path, device: str, mode: str) -> tuple[int, float, str]:
    """(exit status, host peak RSS in MB, output) of `edgecam run` in a fresh process: the host alone (agents are
    its children, not counted)."""
    peak = out.with_suffix(".peak")
    env = {**os.environ, "EDGECAM_HOSTILE": mode, "EDGECAM_HOSTILE_BOMB": str(setup["bomb"])}
    proc = subprocess.run([sys.executable, "-c", PEAK, str(peak), "run", str(setup["config"]), "--out", str(out), "--device", device, "--devices", str(inventory)],
                          capture_output=True, text=True, env=env, timeout=600)
    return proc.returncode, int(peak.read_text()) / 1024, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def nosftp_board() -> Iterator[Path]:
    """The loopback sshd without SFTP (pulls are tar streams) whose `tar` makes sparse members of a hostile job: the inventory of
    two devices on it, "nosftp" (the real agent) and "nosftp-sparse" (tests/hostile_agent.py, result-sparse)."""
    import shutil
    import tempfile

    from sshd_server import start_sshd

    root = Path(tempfile.mkdtemp(prefix="edgecam-hostile-board-"))
    root.chmod(0o755)  # the board's user reads its launchers here
    (root / "bin").mkdir(mode=0o755)
    tar = root / "bin" / "tar"
    tar.write_text('#!/bin/sh\n# edgecam pulls with `tar -c -f - -C DIR NAME`: a folder the hostile agent marked gets sparse members\n'
                   '[ -e "$5/.hostile-sparse" ] && exec /usr/bin/tar --sparse "$@"\nexec /usr/bin/tar "$@"\n')
    shutil.copyfile(TESTS / "hostile_agent.py", root / "hostile_agent.py")
    srv = start_sshd(root / "sshd", env={"PATH": f"{root / 'bin'}:/usr/local/bin:/usr/bin:/bin"}, sftp=False)
    workdir = srv.home / f"edgecam-hostile-{root.name}"  # this test's own: nothing from an earlier run on the board's home
    try:
        entries = []
        for name, mode in (("nosftp", ""), ("nosftp-sparse", "result-sparse")):
            launcher = root / f"python-{name}"
            launcher.write_text(f"#!/bin/sh\nEDGECAM_HOSTILE='{mode}' exec {srv.python} {root / 'hostile_agent.py'} \"$@\"\n")
            entries.append(f'[[devices]]\nname = "{name}"\nurl = "{srv.url}"\nkey_file = "{srv.key_file}"\nknown_hosts = "{srv.known_hosts}"\npython = "{launcher}"\n'
                           f'workdir = "{workdir}"\n')
        for p in root.iterdir():
            if p.is_file():
                p.chmod(0o755)
        tar.chmod(0o755)
        inv = root / "devices.toml"
        inv.write_text("\n".join(entries))
        yield inv
    finally:
        srv.stop()
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="the loopback board's user and its sshd need root")
def test_a_device_cannot_make_the_host_allocate_what_it_chooses(setup: dict[str, Path], nosftp_board: Path, tmp_path: Path) -> None:
    """The npz bomb (local transport) and the sparse result.json over a tar pull (SSH without SFTP), each against
    a clean run on the same transport: the job is refused with the reason, and the host's peak RSS stays within
    1.5x (before: +1 GiB for the bomb; 3.22 vs 1.25 GB for the sparse member in the audit)."""
    from edgecam.bench import outputs as files

    figures = {}
    for name, inventory, device, mode, reason in [
        ("npz bomb, local", setup["inventory"], "evil", "outputs-bomb", "the answer can hold at most"),
        ("sparse tar member, ssh", nosftp_board, "nosftp", "result-sparse", "unexpected archive member"),
    ]:
        rc0, clean, said0 = _peak_rss_mb(setup, tmp_path / f"{device}-clean", inventory, device, "")
        hostile_device = device if device == "evil" else f"{device}-sparse"  # the board's environment is its sshd's: the mode is in its launcher
        rc1, hostile, said1 = _peak_rss_mb(setup, tmp_path / f"{device}-hostile", inventory, hostile_device, mode)
        assert rc0 == 0, said0[-3000:]
        assert rc1 == 1 and "Traceback" not in said1, said1[-3000:]
        bench = pd.read_csv(tmp_path / f"{device}-hostile" / files.BENCH)
        assert pd.read_csv(tmp_path / f"{device}-clean" / files.BENCH)["ok"].all()
        assert not bench["ok"].any() and bench["error"].str.contains(reason, regex=False).all(), bench["error"].tolist()
        figures[name] = (clean, hostile)
        assert hostile <= 1.5 * clean, f"{name}: host peak {hostile:.0f} MB vs {clean:.0f} MB clean"
    print("\nhost peak RSS, clean vs hostile run: " + "; ".join(f"{k}: {c:.0f} vs {h:.0f} MB ({h / c:.2f}x)" for k, (c, h) in figures.items()))
