"""Shared pieces of the benchmark suite: the trained models and artifacts every item uses, the result row
and the results table (printed with rich, written as Markdown to benchmarks/results/<machine>.md).

Models are tinycnn (configs/digits-demo.toml) and mobilenet_v2 with its digits recipe (`MOBILENET_DIGITS`),
trained by `edgecam.bench.prepare.prepare_model` into edgecam's cache ($EDGECAM_CACHE_DIR, else
~/.cache/edgecam): `make run` and `make bench` share tinycnn's checkpoint and artifacts. Item 6 (export cost) exports into a fresh
temporary cache instead, so that nothing is reused there.
"""

from __future__ import annotations

import os
import platform
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
THREADS = 2  # ORT intra-op threads and torch threads: the quickstart's runtimes use 2


def _mobilenet_digits() -> Any:
    from edgecam.config import ModelSpec

    # at 64x64 MobileNetV2 ends on a 2x2 map and learns slowly: its own recipe, with one +-4 px translated
    # copy of the training set (~52% -> ~90% top-1 in the same steps); the former quickstart's second model
    return ModelSpec("mobilenet_v2", epochs=6, lr=2.5e-3, batch_size=32, shift_copies=1)


@dataclass
class Row:
    """One line of the results table: a measured value (usually a ratio of two things timed side by side),
    its target, and whether the target is met (None: informational, no target)."""

    item: str
    measure: str
    value: float
    unit: str = "x"
    target: str = ""
    met: bool | None = None
    detail: str = ""

    def value_text(self) -> str:
        if not np.isfinite(self.value):
            return "n/a"
        digits = 3 if abs(self.value) < 10 else 1
        return f"{self.value:.{digits}f} {self.unit}".strip()

    def met_text(self) -> str:
        return "" if self.met is None else ("met" if self.met else "NOT met")


def check(value: float, op: str, bound: float) -> bool:
    """`value <op> bound` for op in <=, >=, <, >, "within" (|value - 1| <= bound)."""
    ops = {"<=": value <= bound, ">=": value >= bound, "<": value < bound, ">": value > bound, "within": abs(value - 1) <= bound}
    return bool(ops[op])


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), as the agent's probe reports it."""
    from edgecam.devices import agent

    return agent.cpu_model()


def machine_name() -> str:
    """Results file stem: $EDGECAM_BENCH_MACHINE, else the CPU model and logical CPU count, sanitised
    (`amd-epyc-2cpu`); the host name of a cloud VM ("vm", "localhost") says nothing about the hardware."""
    name = os.environ.get("EDGECAM_BENCH_MACHINE") or f"{cpu_model()}-{os.cpu_count()}cpu"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


def machine_line() -> str:
    """One line describing where the suite ran (CPU, cores, RAM, OS, Python, key library versions)."""
    import importlib.metadata as md

    from edgecam.devices.agent import os_name, ram_bytes

    ram = ram_bytes()
    vers = []
    for pkg in ("onnxruntime", "torch", "grad-cam", "ai-edge-litert"):
        try:
            vers.append(f"{pkg} {md.version(pkg)}")
        except md.PackageNotFoundError:
            pass
    ram_txt = f"{ram / 2**30:.0f} GiB RAM" if ram else "RAM unknown"
    return f"{cpu_model()}, {os.cpu_count()} logical CPUs, {ram_txt}, {os_name()}, Python {platform.python_version()}, {', '.join(vers)}"


def load_avg() -> str:
    """1 / 5 / 15-minute load averages: the suite measures side by side because this machine is shared."""
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


@dataclass
class Model:
    """A trained fp32 model, its CAM target layer and its fp32 ONNX artifact (cached)."""

    name: str
    model: Any
    layer: str
    meta: dict[str, Any]
    spec: Any
    onnx_fp32: Path  # the artifact directory (model file + manifest.json)

    @property
    def onnx_file(self) -> Path:
        """The fp32 ONNX model file inside the artifact directory."""
        return artifact_file(self.onnx_fp32)


def artifact_file(art_dir: Path) -> Path:
    """The model file of an artifact directory (its manifest's `file`)."""
    import json

    return art_dir / json.loads((art_dir / "manifest.json").read_text())["file"]


@dataclass
class Setup:
    """The digits config, its data and the models the items need."""

    cfg: Any
    data: Any
    models: dict[str, Model] = field(default_factory=dict)
    seconds: float = 0.0


def digits_config() -> Any:
    """configs/digits-demo.toml (tinycnn on digits-clutter) plus mobilenet_v2 with its digits recipe: the two
    models the suite has measured since it began (the quickstart itself now runs a pretrained model)."""
    from edgecam.config import load_config

    cfg = load_config(CONFIGS / "digits-demo.toml")
    return cfg.replace(models=(*cfg.models, _mobilenet_digits()))


def setup(names: Sequence[str] = ("tinycnn", "mobilenet_v2")) -> Setup:
    """The digits config (`digits_config`) + digits-clutter data; each named model trained (or read from
    the cache) and exported to fp32 ONNX (or read from the cache)."""
    import torch

    from edgecam.bench.deploy import build_artifact
    from edgecam.bench.prepare import prepare_model
    from edgecam.data.spec import load_data
    from edgecam.exporters.onnx import OnnxExporter

    t0 = time.perf_counter()
    torch.set_num_threads(THREADS)
    torch.set_flush_denormal(True)  # as sweep.run does: int16 activations sit near denormals
    cfg = digits_config()
    data = load_data(cfg.data)
    out = Setup(cfg, data)
    specs = {m.name: m for m in cfg.models}
    for name in names:
        mspec = specs[name]
        model, layer, meta = prepare_model(mspec, cfg, data)
        art, _ = build_artifact(model, mspec, layer, meta["sha256"], "onnx", "fp32", cfg, data, OnnxExporter())
        out.models[name] = Model(name, model.eval(), layer, meta, mspec, art)
    out.seconds = time.perf_counter() - t0
    return out


def config_from_toml(text: str) -> Any:
    """A validated `RunConfig` from TOML text (through a temporary file: `edgecam.config.load_config`)."""
    import tempfile

    from edgecam.config import load_config

    with tempfile.TemporaryDirectory(prefix="edgecam-bench-") as tmp:
        path = Path(tmp) / "config.toml"
        path.write_text(text)
        return load_config(path)


def print_rows(rows: Sequence[Row], title: str) -> None:
    """The rows as one rich table on stdout."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for col in ("#", "measure", "value", "target", "met", "detail"):
        table.add_column(col, justify="right" if col == "value" else "left", overflow="fold")
    for r in rows:
        table.add_row(r.item, r.measure, r.value_text(), r.target, r.met_text(), r.detail)
    Console(width=220).print(table)


def markdown_table(rows: Sequence[Row]) -> str:
    """The rows as a GitHub Markdown table."""
    lines = ["| # | measure | value | target | met | detail |", "|---|---|---:|---|---|---|"]
    for r in rows:
        cells = [r.item, r.measure, r.value_text(), r.target or "-", r.met_text() or "-", r.detail]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def write_results(rows: Sequence[Row], path: Path, header: str, notes: Sequence[str] = ()) -> Path:
    """Write the table (and notes) to `path` as Markdown, atomically."""
    from edgecam.cache import atomic_write_bytes

    body = [header, "", markdown_table(rows), ""]
    if notes:
        body += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    atomic_write_bytes(path, "\n".join(body).encode())
    return path


def p50_ms(samples_s: Sequence[float]) -> float:
    """Median of raw samples in seconds, in milliseconds (edgecam's own p50: `latency_stats`)."""
    from edgecam.bench.timing import latency_stats

    return latency_stats(samples_s)["p50_ms"]
