"""Third-party noise kept off the terminal (`edgecam ... --verbose` shows it): what the libraries edgecam
imports print on their own, never edgecam's own messages.

Three kinds, three remedies, all undone when `third_party_quiet` exits:

- native log lines written straight to file descriptor 2 by C++ code, which neither Python's `logging` nor
  `sys.stderr` sees: `import litert_torch` loads `litert_converter.mlir`, whose TensorFlow / absl code prints
  "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR" and
  "I0000 ... port.cc:153] oneDNN custom operations are on ..." (TF_CPP_MIN_LOG_LEVEL does not reach that
  logger). The modules of `NOISY_IMPORTS` are imported with fd 2 pointed at a temporary file (a meta-path
  hook, so nothing is imported earlier than it is today); an import that fails writes what it printed back
  to stderr. TF_CPP_MIN_LOG_LEVEL=2 is set too (unless the user set it) for TensorFlow code that honours it;
  TF_ENABLE_ONEDNN_OPTS is left alone (it changes the numerics, not only the log).
- Python loggers of libraries (`THIRD_PARTY_LOGGERS`): raised to ERROR. torch's `_pytree` warning
  ("<enum 'KernelPreference'> ... register_constant() ... deprecated", logged when torchao is imported)
  goes through torch's own handler; torch resets its top logger's level when it is imported, so that level
  is raised again right after torch's import.
- Python warnings: those attributed to code outside edgecam are ignored; edgecam's own (a module of the
  `edgecam` package) are shown as Python shows them by default.

edgecam's own output is untouched: its log lines (the CLI's console), its `logging` warnings (the `edgecam.*`
loggers, printed by Python's last-resort handler) and its warnings. Device agents run in processes of their
own whose stderr the device layer captures (shown only in a failure's message); they inherit the
environment variables set here.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import logging
import os
import sys
import tempfile
import threading
import warnings
from typing import Any, Callable, Iterator, Sequence

#: top-level packages whose import writes native log lines to fd 2 (`litert_torch` -> `litert_converter.mlir`:
#: absl's InitializeLog warning, TensorFlow's oneDNN notice); every module under them is imported silenced
NOISY_IMPORTS: tuple[str, ...] = ("litert_torch", "litert_converter", "tensorflow", "tf_keras", "ai_edge_torch")
#: loggers of the libraries edgecam drives, raised to ERROR
THIRD_PARTY_LOGGERS: tuple[str, ...] = ("torch", "torch.utils._pytree", "torch.onnx", "torch.export", "torch._export", "torchao", "onnxscript", "onnx_ir",
                                        "absl", "tensorflow", "litert_torch", "ai_edge_quantizer", "ai_edge_litert", "onnxruntime", "jax", "matplotlib",
                                        "PIL", "h5py", "numexpr", "ray")
#: environment variables set for the run (and the device agents it starts) unless the user set them
QUIET_ENV: dict[str, str] = {"TF_CPP_MIN_LOG_LEVEL": "2"}
#: the package whose warnings always show
OWN_PACKAGE = "edgecam"

_lock = threading.Lock()
_depth = 0
_saved_fd: int | None = None
_sink: Any = None


def _enter_silence() -> bool:
    """Point fd 2 at a temporary file (the outermost caller only); True when this call did it."""
    global _depth, _saved_fd, _sink
    with _lock:
        _depth += 1
        if _depth > 1:
            return False
        try:
            sys.stderr.flush()
        except (AttributeError, OSError, ValueError):
            pass
        try:
            sink = tempfile.TemporaryFile(prefix="edgecam-quiet-")
            saved = os.dup(2)
        except OSError:  # no fd 2 (closed), no temporary directory: nothing is silenced, nothing breaks
            if "sink" in locals():
                sink.close()
            return False
        os.dup2(sink.fileno(), 2)
        _sink, _saved_fd = sink, saved
        return True


def _leave_silence(outermost: bool, failed: bool) -> None:
    """Give fd 2 back (the outermost caller); after a failure, what was printed meanwhile goes to stderr."""
    global _depth, _saved_fd, _sink
    with _lock:
        _depth -= 1
        if not outermost:
            return
        try:
            sys.stderr.flush()
        except (AttributeError, OSError, ValueError):
            pass
        assert _saved_fd is not None and _sink is not None
        os.dup2(_saved_fd, 2)
        os.close(_saved_fd)
        if failed:
            _sink.seek(0)
            captured = _sink.read()[-8000:]
            if captured:
                os.write(2, captured)
        _sink.close()
        _saved_fd, _sink = None, None


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """fd 2 to a temporary file for the block (native libraries' log lines); re-entrant. If the block raises,
    what was written meanwhile is written back to stderr (its last 8 KB), so that a failure keeps its story."""
    outermost = _enter_silence()
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        raise
    finally:
        _leave_silence(outermost, failed)


class _QuietLoader(importlib.abc.Loader):
    """A module's own loader, run with fd 2 silenced (`silence`) and / or followed by `after` callbacks; the
    module keeps its own loader once imported."""

    def __init__(self, loader: Any, silence: bool, after: Sequence[Callable[[], None]]) -> None:
        self._loader, self._silence, self._after = loader, silence, tuple(after)

    def create_module(self, spec: Any) -> Any:  # an extension module's native code runs here (dlopen, init)
        with native_stderr_silenced() if self._silence else contextlib.nullcontext():
            return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        try:
            with native_stderr_silenced() if self._silence else contextlib.nullcontext():
                self._loader.exec_module(module)
        finally:
            for obj in (module.__spec__, module):
                with contextlib.suppress(AttributeError, TypeError):
                    if obj is module:
                        module.__loader__ = self._loader
                    else:
                        obj.loader = self._loader
        for fn in self._after:
            fn()

    def __getattr__(self, name: str) -> Any:  # get_resource_reader, get_source, is_package ...
        return getattr(self._loader, name)


class QuietImports(importlib.abc.MetaPathFinder):
    """A meta-path finder that finds nothing itself: for a module under `noisy` it asks the other finders and
    wraps the loader they give in `_QuietLoader`; `after` maps a module name to callbacks run once it is imported."""

    def __init__(self, noisy: Sequence[str] = NOISY_IMPORTS, after: dict[str, list[Callable[[], None]]] | None = None) -> None:
        self.noisy = tuple(noisy)
        self.after = dict(after or {})
        self._busy = threading.local()

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        silence = fullname.partition(".")[0] in self.noisy
        after = self.after.get(fullname, [])
        busy = getattr(self._busy, "names", None)
        if busy is None:
            busy = self._busy.names = set()
        if not (silence or after) or fullname in busy:
            return None
        busy.add(fullname)
        try:
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
            else:
                return None
        finally:
            busy.discard(fullname)
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _QuietLoader(spec.loader, silence, after)
        return spec


def _raise_level(name: str, level: int, saved: dict[str, int]) -> None:
    logger = logging.getLogger(name)
    saved.setdefault(name, logger.level)
    if logger.getEffectiveLevel() < level or logger.level < level:
        logger.setLevel(level)


@contextlib.contextmanager
def third_party_quiet(verbose: bool = False, loggers: Sequence[str] = THIRD_PARTY_LOGGERS) -> Iterator[None]:
    """The libraries' own log lines, logger records and warnings off the terminal for the block (see the
    module's docstring); `verbose`: change nothing. Everything is put back on exit."""
    if verbose:
        yield
        return
    saved_env = {k: os.environ.get(k) for k in QUIET_ENV}
    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)
    levels: dict[str, int] = {}
    for name in loggers:
        _raise_level(name, logging.ERROR, levels)

    def relevel_torch() -> None:  # torch's import set its top logger back to WARNING: that is the level to restore
        torch_logger = logging.getLogger("torch")
        levels["torch"] = torch_logger.level
        torch_logger.setLevel(logging.ERROR)

    hook = QuietImports(after={"torch": [relevel_torch]})
    sys.meta_path.insert(0, hook)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore")
            warnings.filterwarnings("default", module=rf"{OWN_PACKAGE}(\.|$)")
            yield
    finally:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(hook)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
