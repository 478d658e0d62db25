"""Pipeline throughput (suite item 4): a whole `edgecam.bench.sweep.run` (what `edgecam run` calls) on the
quickstart config, in this process, under a stack-sampling profiler; images/s per variant and the share of
the run's wall time in runtime vs CAM vs metrics vs I/O. Target: metrics + I/O < 10% of the total.

Why a sampler and not cProfile's cumulative times: the stages nest (a Score-CAM or a Deletion curve calls
the device; a metric calls numpy), so cumulative times double-count. Every `interval` seconds a thread
takes the main thread's stack (`sys._current_frames`) and charges the time since the previous sample to
one category, found by walking the stack from the innermost frame outwards:

- runtime: the first edgecam frame is in `edgecam/devices/`, `edgecam/runtimes/` or is a `DeviceSession`
  method (the agent subprocess runs while the host waits there: the device's time, transport included);
- I/O: a pandas-io / pyarrow / json / numpy-npz / PIL / matplotlib-backend frame below it, an edgecam
  function named `write*` / `_write*` (results files, the dissimilar-CAM and grid figures), or
  `edgecam/cache.py`, `bench/store.py` (the resumable job store), `bench/report.py` (report.html);
- CAM: `edgecam/explain/cams.py` (and the package CAMs it calls), the host forward that picks the
  reference CAM's classes (`bench/explain.py:_host_pred`);
- metrics: `edgecam/explain/` (metrics, saliency, localisation, faithfulness, activations),
  `bench/results.py`, `bench/stats.py`, and the explain stage's row building (`bench/explain.py`);
- setup: data, model training / loading, export (`edgecam/data/`, `models/train.py`, `exporters/`, and
  `sweep.py`'s `load_data`, `normalise`, `prepare_model`, `build_artifact`); a model's own `forward`
  (`models/__init__.py`) never decides: it counts for its caller (a CAM, the accuracy check, QAT);
- other: the rest (the sweep's own bookkeeping, module imports, the GIL hand-over).

A hook in `sweep.run` reporting per-stage times (it records only "run <variant>" and "CAMs + metrics") would
make this exact; until then the sampler is the evidence.

    .venv/bin/python benchmarks/pipeline.py [--limit 100]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

from _common import Row, check, print_rows

CATEGORIES = ("runtime", "CAM", "metrics", "I/O", "setup", "other")
IO_LIBS = ("/pandas/io/", "/pyarrow/", "/json/", "/numpy/lib/_npyio_impl.py", "/numpy/lib/npyio.py", "/numpy/lib/format.py", "/PIL/", "/matplotlib/backends/", "/zipfile")
IO_MODULES = ("/edgecam/cache.py", "/edgecam/bench/store.py", "/edgecam/bench/report.py")
SETUP_MODULES = ("/edgecam/data/", "/edgecam/models/train.py", "/edgecam/exporters/")
SETUP_FUNCTIONS = ("load_data", "normalise", "prepare_model", "build_artifact")  # bench/sweep.py
MODEL_DEFINITIONS = "/edgecam/models/__init__.py"  # a model's forward counts for whoever calls it


def classify(frame: FrameType | None) -> tuple[str, str]:
    """(category, deciding frame as "file:function") of a sample: see the module docstring. Walks from the
    innermost frame outwards."""
    io_below = False
    innermost = f"{frame.f_code.co_filename.rsplit('/', 1)[-1]}:{frame.f_code.co_name}" if frame is not None else "-"
    while frame is not None:
        path = frame.f_code.co_filename.replace("\\", "/")
        if path.startswith("<frozen importlib"):
            return "other", "imports"
        where = f"{path.rsplit('/edgecam/', 1)[-1]}:{getattr(frame.f_code, 'co_qualname', frame.f_code.co_name)}"
        if "/edgecam/" in path and MODEL_DEFINITIONS not in path:
            if "/edgecam/devices/" in path or "/edgecam/runtimes/" in path or ":DeviceSession" in where:
                return "runtime", where
            if any(s in path for s in IO_MODULES) or io_below or frame.f_code.co_name.lstrip("_").startswith("write"):
                return "I/O", where
            if "/edgecam/explain/cams.py" in path or ":_host_pred" in where:  # the reference CAM's targets
                return "CAM", where
            if "/edgecam/explain/" in path or any(s in path for s in ("/edgecam/bench/results.py", "/edgecam/bench/stats.py", "/edgecam/bench/explain.py")):
                return "metrics", where
            if any(s in path for s in SETUP_MODULES) or frame.f_code.co_name in SETUP_FUNCTIONS:
                return "setup", where
        elif any(s in path for s in IO_LIBS):
            io_below = True
        frame = frame.f_back
    return "other", innermost


class Sampler:
    """Samples the calling thread's stack every `interval` s from a daemon thread; time-weighted, so a
    sample delayed by a long GIL hold still accounts for the whole interval."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.seconds: Counter[str] = Counter()
        self.where: Counter[tuple[str, str]] = Counter()  # (category, deciding frame) -> seconds
        self.samples = 0
        self._target = threading.get_ident()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        last = time.perf_counter()
        while not self._stop.wait(self.interval):
            frame = sys._current_frames().get(self._target)
            now = time.perf_counter()
            try:
                cat, where = classify(frame)
            except Exception as exc:  # noqa: BLE001 - never let one odd frame end the sampling
                cat, where = "other", f"unclassified ({type(exc).__name__})"
            self.seconds[cat] += now - last
            self.where[(cat, where)] += now - last
            self.samples += 1
            last = now
            del frame

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def shares(self) -> dict[str, float]:
        total = sum(self.seconds.values()) or 1.0
        return {c: self.seconds.get(c, 0.0) / total for c in CATEGORIES}

    def top(self, categories: tuple[str, ...], n: int = 6) -> str:
        """The `n` frames that took most time in `categories`, with their share of the whole run."""
        total = sum(self.seconds.values()) or 1.0
        items = sorted(((s, k) for k, s in self.where.items() if k[0] in categories), reverse=True)[:n]
        return ", ".join(f"{where} ({cat}) {100 * s / total:.1f}%" for s, (cat, where) in items)


def profile_run(cfg: Any, limit: int, out_dir: Path) -> tuple[dict[str, Any], Sampler, float]:
    """`sweep.run(cfg)` on `limit` images under the sampler; (its manifest, the sampler, wall seconds)."""
    from edgecam.bench.sweep import run

    t = time.perf_counter()
    with Sampler() as sampler:
        result = run(cfg, out_dir, limit=limit, log=lambda msg: None)
    return result["manifest"], sampler, time.perf_counter() - t


def pipeline_cfg() -> Any:
    """The quickstart experiment (configs/quickstart.toml), as `make run` runs it."""
    from edgecam.config import default_config_path, load_config

    return load_config(default_config_path())


def per_model_rows(manifest: dict[str, Any], n_img: int) -> list[Row]:
    """Images/s per variant of each model: its variants x images over its stage times in the manifest
    (train / export / run / CAMs + metrics entries that name the model)."""
    rows = []
    stages = manifest.get("stages_s", {})
    for model in manifest.get("models", {}):
        keys = [k for k, v in manifest["variants"].items() if k.startswith(f"{model}-") and not v.get("error")]
        secs = sum(v for k, v in stages.items() if f" {model}" in k and not k.startswith("device session calls"))
        if keys and secs > 0:
            rows.append(Row("4", f"pipeline images/s per variant, {model} ({len(keys)} variants)", n_img * len(keys) / secs, "img/s", "", None,
                            f"{n_img} images x {len(keys)} variants in {secs:.1f} s of this model's stages"))
    return rows


def run_items(limit: int = 100, cfg: Any = None) -> tuple[list[Row], list[str]]:
    """Item 4: one profiled run of `cfg` (the quickstart by default); rows (throughput, time shares), notes."""
    cfg = cfg or pipeline_cfg()
    with tempfile.TemporaryDirectory(prefix="edgecam-bench-") as tmp:
        manifest, sampler, wall = profile_run(cfg, limit, Path(tmp) / "run")
    variants = [k for k, v in manifest["variants"].items() if not v.get("error")]
    n_img = int(manifest["images"])
    shares = sampler.shares()
    share_txt = ", ".join(f"{c} {100 * shares[c]:.1f}%" for c in CATEGORIES)
    mi = shares["metrics"] + shares["I/O"]
    rows = [Row("4", f"pipeline images/s per variant, whole run ({len(variants)} variants)", n_img * len(variants) / wall, "img/s", "", None,
                f"{n_img} images x {len(variants)} variants in {wall:.1f} s (`sweep.run`, {cfg.name} config)")]
    rows += per_model_rows(manifest, n_img)
    rows.append(Row("4", "pipeline share of time in metrics + I/O", 100 * mi, "%", "< 10%", check(mi, "<", 0.10), f"{share_txt}; {sampler.samples} stack samples"))
    stages = manifest.get("stages_s", {})
    notes = [f"item 4 top frames in metrics and I/O (share of the run): {sampler.top(('metrics', 'I/O'))}",
             f"item 4 top frames overall: {sampler.top(CATEGORIES)}",
             "item 4 stage times from the run's manifest (s): " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items() if not k.startswith("device session calls"))]
    return rows, notes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=100, help="test images per variant")
    args = ap.parse_args()
    rows, notes = run_items(args.limit)
    print_rows(rows, "Pipeline throughput")
    print("\n".join(notes))


if __name__ == "__main__":
    main()
