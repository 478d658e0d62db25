"""The agent zipapp: reproducible, self-contained, torch-free; probe facts; CPU budgets; Jetson release."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from edgecam.devices.agent import cpu_model, emulation, parse_nv_tegra_release
from edgecam.devices.archive import agent_archive_bytes, agent_modules, build_agent_archive
from edgecam.devices.base import JobFailed
from edgecam.devices.local import LocalDevice


def test_archive_is_reproducible_and_named_by_content(tmp_path: Path) -> None:
    assert agent_archive_bytes() == agent_archive_bytes()
    a = build_agent_archive(tmp_path)
    assert build_agent_archive(tmp_path) == a and a.name.startswith("edgecam-agent-") and a.suffix == ".pyz"
    names = zipfile.ZipFile(a).namelist()
    assert "__main__.py" in names and all(f"edgecam/{m}" in names for m in agent_modules())
    # every registered runtime's module and the modules it builds on, found from the registry
    assert {"edgecam/runtimes/base.py", "edgecam/runtimes/onnxruntime.py", "edgecam/runtimes/fault.py", "edgecam/runtimes/litert.py", "edgecam/runtimes/null.py", "edgecam/runtimes/tensorrt.py"} <= set(names)
    assert {"edgecam/devices/serve.py", "edgecam/devices/protocol.py", "edgecam/perturb.py"} <= set(names)  # the persistent session
    assert not any("torch" in n or "explain" in n or "exporters" in n for n in names)


def test_archive_imports_without_torch_and_from_itself(tmp_path: Path) -> None:
    """Python's -I ignores the environment; the archive's modules must load without torch or the package."""
    pyz = build_agent_archive(tmp_path)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import edgecam, edgecam.devices.agent, edgecam.devices.tegrastats, edgecam.devices.serve, edgecam.perturb;"
        "from edgecam.runtimes import RUNTIMES, runtime_class;"
        "print(edgecam.__file__); print(sorted(runtime_class(n).__module__ for n in RUNTIMES));"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'pandas', 'onnxruntime', 'ai_edge_litert')))"
    )
    out = subprocess.run([sys.executable, "-I", "-c", code, str(pyz)], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0].startswith(str(pyz)) and out[2] == "[]"  # every runtime class loads; no backend is imported
    assert out[1] == str(sorted(f"edgecam.runtimes.{m}" for m in ("fault", "litert", "null", "onnxruntime", "tensorrt")))


def test_device_side_modules_parse_as_python_3_8() -> None:
    """Boards ship their own Python (a Jetson's 3.8): nothing newer than 3.8 syntax in what the archive runs,
    and no annotation evaluated at import (every module defers them)."""
    import ast

    import edgecam

    root = Path(edgecam.__file__).parent
    for rel in agent_modules():
        source = (root / rel).read_text()
        tree = ast.parse(source, filename=rel, feature_version=(3, 8))
        annotated = any(isinstance(n, ast.AnnAssign) or (isinstance(n, ast.arg) and n.annotation) or (isinstance(n, ast.FunctionDef) and n.returns) for n in ast.walk(tree))
        assert not annotated or "from __future__ import annotations" in source, rel  # `dict[str, X]` would fail at def time on 3.8


def test_probe_prints_facts_as_json(tmp_path: Path) -> None:
    pyz = build_agent_archive(tmp_path)
    facts = json.loads(subprocess.run([sys.executable, str(pyz), "probe"], capture_output=True, text=True, check=True).stdout)
    assert facts["runtimes"]["onnxruntime"] and set(facts["runtimes"]) == {"onnxruntime", "ai_edge_litert", "tflite_runtime", "tensorrt"}
    assert facts["cores"] >= 1 and facts["ram_bytes"] > 0 and facts["python"] == ".".join(map(str, sys.version_info[:3]))
    assert facts["emulated"] is False and "emulation" not in facts  # this x86 host runs its own code
    bad = subprocess.run([sys.executable, str(pyz), "--help"], capture_output=True, text=True)
    assert bad.returncode == 2 and "usage: agent run JOB_DIR | agent probe" in bad.stderr


X86_CPUINFO = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu vme sse2\n"
A76_CPUINFO = "processor\t: 0\nFeatures\t: fp asimd asimddp\nCPU implementer\t: 0x41\nCPU part\t: 0xd0b\n"
MAX_CPUINFO = "processor\t: 0\nFeatures\t: fp asimd sve\nCPU implementer\t: 0x00\nCPU part\t: 0x000\n"


@pytest.mark.parametrize(
    ("arch", "kernel", "cpuinfo", "why"),
    [
        ("aarch64", "x86_64\n", A76_CPUINFO, "aarch64 userland on an x86_64 kernel"),  # qemu-user with a board's cpuinfo
        ("aarch64", "", X86_CPUINFO, "lists x86 CPUs"),  # qemu-user on a kernel without /proc/sys/kernel/arch
        ("aarch64", "aarch64\n", MAX_CPUINFO, "implementer 0x00"),  # a full-system QEMU guest on the max CPU
        ("aarch64", "aarch64\n", A76_CPUINFO, None),  # a Raspberry Pi 5
        ("armv7l", "aarch64\n", A76_CPUINFO, None),  # 32-bit Raspberry Pi OS on a 64-bit kernel: native
        ("x86_64", "x86_64\n", X86_CPUINFO, None),
    ],
)
def test_emulation_is_told_by_the_kernels_architecture_or_the_cpu(arch: str, kernel: str, cpuinfo: str, why: str | None) -> None:
    found = emulation(arch, kernel, cpuinfo)
    assert (found is None) if why is None else (found is not None and why in found), found


def test_cpu_model_names_arm_cores_from_their_part_numbers() -> None:
    assert cpu_model(A76_CPUINFO) == "Cortex-A76 (0xd0b)"
    assert cpu_model(MAX_CPUINFO) == "ARM part 0x000"
    assert cpu_model("processor\t: 0\nmodel name\t: AMD EPYC 9B14\n") == "AMD EPYC 9B14"
    assert cpu_model("Hardware\t: BCM2835\nCPU implementer\t: 0x41\nCPU part\t: 0xd08\n") == "BCM2835"


def test_cpu_budget_pins_the_agent(trained_tinycnn, tmp_path: Path) -> None:
    dev = LocalDevice(workdir=str(tmp_path / "dev"))
    job = {"runtime": "onnxruntime", "runtime_options": {"threads": 1}, "warmup": 1, "iterations": 3, "mode": "run", "cores": 1}
    result, _ = dev.run_job(trained_tinycnn.artifacts["fp32"], trained_tinycnn.data.test_x[:2], job)
    assert result["cpu_budget"]["cores"] == 1 and len(result["cpu_budget"]["affinity"]) == 1
    with pytest.raises(JobFailed, match=r"CPU budget of 512 cores asked, but only \d+ CPUs"):
        dev.run_job(trained_tinycnn.artifacts["fp32"], trained_tinycnn.data.test_x[:2], {**job, "cores": 512})


@pytest.mark.parametrize(
    ("line", "l4t"),
    [
        # Jetson Nano, JetPack 4.6 (L4T 32.6.1) and AGX Orin, JetPack 5.1.2 (L4T 35.4.1): /etc/nv_tegra_release
        ("# R32 (release), REVISION: 6.1, GCID: 27863751, BOARD: t210ref, EABI: aarch64, DATE: Mon Jul 26 19:20:30 UTC 2021", "32.6.1"),
        ("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  1 19:57:35 UTC 2023", "35.4.1"),
    ],
)
def test_nv_tegra_release_parses_the_l4t_version(line: str, l4t: str) -> None:
    facts = parse_nv_tegra_release(line + "\n")
    assert facts is not None and facts["l4t"] == l4t and facts["board"] in ("t210ref", "t186ref")
    assert parse_nv_tegra_release("") is None and parse_nv_tegra_release("Ubuntu 22.04") is None
