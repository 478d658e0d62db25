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

# Package-relative paths of the device side's own modules; the runtimes' are added from their registry.
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
    "runtimes/__init__.py",
    "runtimes/trtexec.py",
)


def agent_modules() -> tuple[str, ...]:
    """Package-relative paths of everything the device side imports (a test runs the archive without torch):
    CORE_MODULES, then the module of every class in each registered runtime's hierarchy (fault -> onnxruntime
    -> base), so a newly registered runtime is shipped without being listed here."""
    from edgecam.runtimes import RUNTIMES, runtime_class

    paths = list(CORE_MODULES)
    for name in RUNTIMES:
        for klass in reversed(runtime_class(name).__mro__):
            top, _, rest = klass.__module__.partition(".")
            rel = rest.replace(".", "/") + ".py"
            if top == "edgecam" and rel not in paths:
                paths.append(rel)
    return tuple(paths)


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
        for rel in agent_modules():
            info = zipfile.ZipInfo(f"edgecam/{rel}", _FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, (root / rel).read_bytes())
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
