"""The agent as one self-contained zipapp, built from the installed package and named by its content hash.

Only the torch-free modules go in (the agent, the runtime adapters, tegrastats, the registry), so a board
needs nothing but Python >= 3.8, numpy and its runtime. The name carries the hash of the contents, so a
device that already holds `edgecam-agent-<hash>.pyz` is never sent it again, and a changed agent is.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import edgecam
from edgecam.cache import atomic_write_bytes, cache_dir

# Package-relative paths of the device side's own modules; the runtimes' are added: every module in runtimes/
# (the runtime tree is device-side by rule, helpers such as trtexec.py included) and the module of every class in
# a registered runtime's hierarchy.
CORE_MODULES = (
    "__init__.py",
    "errors.py",
    "registry.py",
    "perturb.py",
    "devices/__init__.py",
    "devices/agent.py",
    "devices/protocol.py",
    "devices/serve.py",
    "devices/tegrastats.py",
)


def agent_modules() -> tuple[str, ...]:
    """Package-relative paths of everything the device side imports (a test runs the archive without torch):
    CORE_MODULES, every module of runtimes/, then the module of every class in each registered runtime's
    hierarchy (fault -> onnxruntime -> base) that lives elsewhere, so a new runtime is shipped without being
    listed here."""
    from edgecam.runtimes import RUNTIMES, runtime_class

    root = Path(edgecam.__file__).parent
    paths = list(CORE_MODULES) + sorted(p.relative_to(root).as_posix() for p in (root / "runtimes").glob("*.py"))
    for name in RUNTIMES:
        for klass in reversed(runtime_class(name).__mro__):
            top, _, rest = klass.__module__.partition(".")
            rel = rest.replace(".", "/") + ".py"
            if top == "edgecam" and rel not in paths:
                paths.append(rel)
    return tuple(paths)


def plugin_modules() -> dict[str, Path]:
    """Archive path -> source file of every module outside edgecam that a registered runtime's class hierarchy
    lives in (a runtime registered from the user's own code with `RUNTIMES.add_lazy`), with its packages'
    `__init__.py`: the device imports it from the archive by the entry the job names (`runtime_entry`)."""
    import sys

    from edgecam.runtimes import RUNTIMES, runtime_class

    files: dict[str, Path] = {}
    for name in RUNTIMES:
        for klass in runtime_class(name).__mro__:
            parts = klass.__module__.split(".")
            if parts[0] in ("edgecam", "builtins"):
                continue
            for depth in range(1, len(parts) + 1):  # the module and every package above it
                source = Path(sys.modules[".".join(parts[:depth])].__file__ or "")
                package = source.name == "__init__.py"
                files["/".join(parts[:depth]) + ("/__init__.py" if package else ".py")] = source
    return files


MAIN = b"""import sys

if sys.argv[1:2] == ["serve"]:  # the persistent session (devices/serve.py); every other mode is devices/agent.py
    from edgecam.devices.serve import main
    sys.exit(main(sys.argv[2:]))
from edgecam.devices.agent import main

sys.exit(main(sys.argv[1:]))
"""

_FIXED_TIME = (2020, 1, 1, 0, 0, 0)  # reproducible archives: same sources -> same bytes -> same hash


def agent_archive_bytes() -> bytes:
    """The zipapp's bytes: `__main__.py` + the agent modules, with fixed timestamps and order."""
    root = Path(edgecam.__file__).parent
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(zipfile.ZipInfo("__main__.py", _FIXED_TIME), MAIN)
        sources = {f"edgecam/{rel}": root / rel for rel in agent_modules()}
        for arcname, source in {**sources, **dict(sorted(plugin_modules().items()))}.items():
            info = zipfile.ZipInfo(arcname, _FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, source.read_bytes())
    return buf.getvalue()


def build_agent_archive(directory: Path | None = None) -> Path:
    """Write (once) and return `edgecam-agent-<sha256[:16]>.pyz` under the cache."""
    data = agent_archive_bytes()
    digest = hashlib.sha256(data).hexdigest()[:16]
    directory = directory or cache_dir() / "agent"
    path = directory / f"edgecam-agent-{digest}.pyz"
    if not path.is_file():
        atomic_write_bytes(path, data)
    return path
