"""TensorRT's `trtexec` on the board: run it on an engine and read its JSON exports into latency columns.

Device-side (standard library only, Python >= 3.8). The three exports and what edgecam reads from them:

- `--exportTimes`: one record per inference with enqueue, host-to-device, compute and device-to-host start / end
  times (`startEnqMs`, `endEnqMs`, `h2dMs`, `computeMs`, `d2hMs`, `latencyMs`): `read_times` gives p50 / mean of
  each phase, the enqueue phase being `endEnqMs - startEnqMs`.
- `--exportProfile`: a `{"count": N}` record (profiled runs), then one record per engine layer with `averageMs`
  (`read_profile`).
- `--exportLayerInfo` (needs an engine built with detailed profiling verbosity; the engine inspector prints the
  same JSON): per layer its inputs' and outputs' "Format/Datatype" and, for weighted layers, `Weights.Type`
  (`layer_summary`: which precision each layer computes in).

The parsers are tested on excerpts of real trtexec exports recorded by NVIDIA (tests/unit/runtimes/data/trtexec);
running trtexec itself (`profile_engine`) is verified only on a board with TensorRT.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from typing import Any, Dict, List, Optional, Sequence

PRECISION_WORDS = ("FP32", "FP16", "BF16", "FP8", "FP4", "INT8", "INT4", "INT32", "INT64", "BOOL", "UINT8")

#: the latency phases read from --exportTimes (column suffixes)
PHASES = ("h2d", "compute", "d2h", "enqueue", "latency")


def layer_precision(fmt: str) -> str:
    """The precision named in a TensorRT "Format/Datatype" or weights "Type" string ("Thirty-two wide channel
    vectorized row major Int8 format" -> "int8", "Float" -> "fp32", "Half" -> "fp16"; "unknown" if none is)."""
    words = fmt.upper().replace(".", " ").replace(",", " ").split()
    found = next((w.lower() for w in words if w in PRECISION_WORDS), None)
    if found is not None:
        return found
    return "fp32" if "FLOAT" in words else "fp16" if "HALF" in words else "unknown"


def _load(path: str) -> Any:
    with open(path) as f:
        try:
            return json.load(f)
        except ValueError as e:
            raise ValueError("%s is not trtexec JSON: %s" % (path, e)) from None


def _percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), without numpy."""
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _phase_ms(record: Dict[str, Any], phase: str) -> float:
    if phase == "enqueue":
        return float(record["endEnqMs"]) - float(record["startEnqMs"])
    return float(record[phase + "Ms"])


def read_times(path: str) -> Dict[str, Any]:
    """Summary of an `--exportTimes` file: `inferences`, and `<phase>_p50_ms` / `<phase>_mean_ms` for h2d, compute,
    d2h, enqueue and latency (trtexec's own end-to-end figure per inference)."""
    records = _load(path)
    if not isinstance(records, list) or not records or not all(isinstance(r, dict) for r in records):
        raise ValueError("%s: expected trtexec --exportTimes output (a list of inference records)" % path)
    out: Dict[str, Any] = {"inferences": len(records)}
    for phase in PHASES:
        try:
            values = [_phase_ms(r, phase) for r in records]
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError("%s: an inference record lacks a number for %r (%s)" % (path, phase, e)) from None
        out[phase + "_p50_ms"] = _percentile(values, 50)
        out[phase + "_mean_ms"] = sum(values) / len(values)
    return out


def read_profile(path: str) -> Dict[str, Any]:
    """Summary of an `--exportProfile` file: `profiled_runs`, `layers` [{name, average_ms, percentage}] slowest
    first, and `sum_average_ms` (the per-layer means added up: GPU time per inference, as trtexec profiles it)."""
    records = _load(path)
    if not isinstance(records, list):
        raise ValueError("%s: expected trtexec --exportProfile output (a list)" % path)
    try:
        runs = next((int(r["count"]) for r in records if isinstance(r, dict) and "count" in r), None)
        layers = [{"name": str(r["name"]), "average_ms": float(r.get("averageMs", 0.0)), "percentage": float(r.get("percentage", 0.0))}
                  for r in records if isinstance(r, dict) and "name" in r]
    except (TypeError, ValueError) as e:
        raise ValueError("%s: a profile record holds no number where trtexec writes one (%s)" % (path, e)) from None
    layers.sort(key=lambda d: -d["average_ms"])
    return {"profiled_runs": runs, "layers": layers, "sum_average_ms": sum(d["average_ms"] for d in layers)}


def layer_compute_precision(layer: Dict[str, Any]) -> str:
    """The precision a layer computes in: its weights' type where it has weights (an int8 convolution writing
    FP16 still ran int8 kernels), else its first input's format (a Reformat writing Int8 is a float -> int8 cast)."""
    weights = layer.get("Weights")
    if isinstance(weights, dict) and weights.get("Type"):
        return layer_precision(str(weights["Type"]))
    tensors = layer.get("Inputs") or layer.get("Outputs") or []
    first = tensors[0] if tensors and isinstance(tensors[0], dict) else {}
    return layer_precision(str(first.get("Format/Datatype", "")))


def layer_summary(info: Any) -> Dict[str, Any]:
    """From `--exportLayerInfo` JSON (or the engine inspector's): `layers`, `compute_precisions` {precision:
    count}, `int8_layers` (names of the layers that computed in INT8) and `bindings`. Raises ValueError when the
    engine was built without detailed profiling verbosity (layers are then bare names)."""
    layers = info.get("Layers") if isinstance(info, dict) else None
    if not isinstance(layers, list):
        raise ValueError("expected trtexec --exportLayerInfo JSON with a 'Layers' list")
    if layers and not all(isinstance(layer, dict) for layer in layers):
        raise ValueError("the layer information has names only: build the engine with detailed profiling verbosity")
    counts: Dict[str, int] = {}
    int8: List[str] = []
    for layer in layers:
        p = layer_compute_precision(layer)
        counts[p] = counts.get(p, 0) + 1
        if p == "int8":
            int8.append(str(layer.get("Name", "")))
    return {"layers": len(layers), "compute_precisions": counts, "int8_layers": int8, "bindings": list(info.get("Bindings") or [])}


def read_layer_info(path: str) -> Dict[str, Any]:
    """`layer_summary` of an `--exportLayerInfo` file."""
    try:
        return layer_summary(_load(path))
    except ValueError as e:
        raise ValueError("%s: %s" % (path, e)) from None


def command(executable: str, engine: str, input_name: str, shape: Sequence[int], out_prefix: str, iterations: int, warmup_ms: int) -> List[str]:
    """The trtexec command line that times `engine` at `shape` and writes the three exports next to `out_prefix`."""
    dims = "x".join(str(int(d)) for d in shape)
    return [executable, "--loadEngine=%s" % engine, "--shapes=%s:%s" % (input_name, dims), "--iterations=%d" % iterations, "--duration=0",
            "--warmUp=%d" % warmup_ms, "--separateProfileRun", "--exportTimes=%s.times.json" % out_prefix,
            "--exportProfile=%s.profile.json" % out_prefix, "--exportLayerInfo=%s.layers.json" % out_prefix]


def profile_engine(engine: str, input_name: str, shape: Sequence[int], iterations: int = 50, warmup_ms: int = 200,
                   executable: str = "trtexec", timeout_s: float = 240.0) -> Dict[str, Any]:
    """Run trtexec on a built engine and read its exports: {"times", "profile", "layers", "command"}, an export
    that does not read as `<name>_error` instead. Raises FileNotFoundError when trtexec is not on PATH (JetPack
    puts it in /usr/src/tensorrt/bin), RuntimeError with trtexec's last output lines when it fails or runs past
    `timeout_s` (well inside the job's own timeout, so the job's timings survive a hung trtexec)."""
    path = shutil.which(executable) or (executable if os.path.isfile(executable) else None)
    if path is None:
        raise FileNotFoundError("trtexec not found (%r; on JetPack it is /usr/src/tensorrt/bin/trtexec)" % executable)
    prefix = os.path.splitext(engine)[0] + ".trtexec"
    exports = {"times": (prefix + ".times.json", read_times), "profile": (prefix + ".profile.json", read_profile),
               "layers": (prefix + ".layers.json", read_layer_info)}
    for export, _reader in exports.values():
        if os.path.exists(export):
            os.remove(export)  # an earlier run's export is never read as this one's
    cmd = command(path, engine, input_name, shape, prefix, iterations, warmup_ms)
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise RuntimeError("trtexec ran past %.0f s" % timeout_s) from None
    if proc.returncode != 0:
        raise RuntimeError("trtexec failed (exit %d): %s" % (proc.returncode, " | ".join(proc.stdout.strip().splitlines()[-5:])))
    out: Dict[str, Any] = {"command": " ".join(cmd[1:])}
    for name, (export, reader) in exports.items():
        try:
            out[name] = reader(export)
        except (OSError, ValueError) as e:
            out[name + "_error"] = str(e)[:300]
    return out


def latency_columns(trtexec: Optional[Dict[str, Any]]) -> Dict[str, float]:
    """The latency table's trtexec columns (`trt_<phase>_p50_ms`) from a runtime's recorded trtexec summary."""
    times = (trtexec or {}).get("times") if isinstance(trtexec, dict) else None
    if not isinstance(times, dict):
        return {}
    out = {}
    for phase in PHASES:
        value = times.get(phase + "_p50_ms")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):  # a device's answer, checked
            out["trt_%s_p50_ms" % phase] = float(value)
    return out
