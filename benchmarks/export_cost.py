"""Export cost (suite item 6): seconds per artifact, per model, format and precision, the way a sweep builds
them (`edgecam.bench.sweep.build_artifact`, digits-demo recipe: QAT fine-tuning for int16 / int8 ONNX,
ai-edge-quantizer calibration for TFLite) into a fresh, empty cache directory ($EDGECAM_CACHE_DIR, read by
`edgecam.cache.cache_dir` on every call), so that nothing is reused. The trained fp32 models come from the
normal cache; only the exports are timed.

    .venv/bin/python benchmarks/export_cost.py [--models tinycnn] [--formats onnx tflite]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from typing import Iterator, Sequence

from _common import Row, Setup, print_rows, setup

PRECISIONS = ("fp32", "int16", "int8")


@contextlib.contextmanager
def fresh_cache() -> Iterator[str]:
    """$EDGECAM_CACHE_DIR pointed at a new empty directory for the duration (restored afterwards)."""
    old = os.environ.get("EDGECAM_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="edgecam-export-cache-") as tmp:
        os.environ["EDGECAM_CACHE_DIR"] = tmp
        try:
            yield tmp
        finally:
            if old is None:
                os.environ.pop("EDGECAM_CACHE_DIR", None)
            else:
                os.environ["EDGECAM_CACHE_DIR"] = old


def run_items(s: Setup, formats: Sequence[str] = ("onnx", "tflite"), precisions: dict[str, Sequence[str]] | None = None) -> list[Row]:
    """Item 6: one row per model and format, seconds per artifact (mean over its precisions, each in the
    detail); `precisions[model]` limits a model's precisions (default: fp32, int16, int8)."""
    from edgecam.bench.deploy import build_artifact
    from edgecam.exporters import exporter_class

    rows = []
    with fresh_cache():
        for m in s.models.values():
            for fmt in formats:
                exporter = exporter_class(fmt)()
                secs = {}
                for precision in (precisions or {}).get(m.name, PRECISIONS):
                    t = time.perf_counter()
                    _, built = build_artifact(m.model, m.spec, m.layer, m.meta["sha256"], fmt, precision, s.cfg, s.data, exporter)
                    secs[precision] = time.perf_counter() - t
                    if not built:
                        raise RuntimeError(f"{m.name} {fmt} {precision}: the artifact came from the cache; the export cost was not measured")
                mean = sum(secs.values()) / len(secs)
                rows.append(Row("6", f"export s per artifact, {m.name} {fmt}", mean, "s", "", None, ", ".join(f"{p} {v:.1f} s" for p, v in secs.items()) + " (fresh cache)"))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["tinycnn", "mobilenet_v2"])
    ap.add_argument("--formats", nargs="+", default=["onnx", "tflite"])
    args = ap.parse_args()
    print_rows(run_items(setup(args.models), args.formats), "Export cost")


if __name__ == "__main__":
    main()
