"""TensorRT adapter for the board (torch-free): builds the engine on the device from the pushed `tensorrt`
artifact (TensorRT's ONNX, `exporters/tensorrt.py`), caches the engine and a timing cache on the board, and
runs it with cuda-python's runtime API for the device buffers.

An engine is specific to its GPU and TensorRT version, so both are in the cache keys (`engine_key`,
`timing_cache_name`). Marking the CAM layer as an engine output can stop TensorRT fusing across it and change
results (NVIDIA/TensorRT#2232, #3258): `features` is exported at the CAM layer's output, a fusion boundary of
the network, and two engines are built: logits + features (the outputs the CAMs need, `run`) and logits only
(what a deployment runs, `run_timed`, the latency columns); the agent times both. The engines' outputs,
per-layer compute precisions, GPU memory and, with the `trtexec` option, trtexec's phase timings
(`runtimes/trtexec.py`) are recorded in `describe()`.

Verified only where `tensorrt` imports (a Jetson or a GPU machine with TensorRT): tests/hardware/test_tensorrt_live.py.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from typing import Any, Dict, List, Optional

import numpy as np

from edgecam.runtimes.base import Runtime
from edgecam.runtimes.trtexec import latency_columns, layer_summary, profile_engine

DEFAULT_MAX_BATCH = 32  # the agent forwards in batches of output_batch_size (32 by default)


def engine_key(artifact_sha256: str, trt_version: str, gpu: str, max_batch: int, outputs: List[str]) -> str:
    """The engine cache key: the artifact's content, TensorRT's version, the GPU, the profile and the outputs."""
    raw = json.dumps({"artifact": artifact_sha256, "tensorrt": trt_version, "gpu": gpu, "max_batch": max_batch, "outputs": sorted(outputs)}, sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def timing_cache_name(trt_version: str, gpu: str) -> str:
    """One timing cache per (TensorRT version, GPU): tactic timings carry over between models, not devices."""
    safe = "".join(c if c.isalnum() or c in "-." else "_" for c in "%s-%s" % (gpu, trt_version))
    return "timing-%s.cache" % safe


def _cudart() -> Any:
    """cuda-python's runtime module under either of its import paths (cuda-python >= 12.6 and older)."""
    try:
        from cuda.bindings import runtime as cudart  # type: ignore[import-not-found]
    except ImportError:
        try:
            from cuda import cudart  # type: ignore[import-not-found,no-redef]
        except ImportError as e:
            raise ImportError("the tensorrt runtime needs cuda-python for device buffers (pip install cuda-python)") from e
    return cudart


def _check(result: Any) -> Any:
    """Unwrap a cuda-python call's (error, value...) tuple, raising on a CUDA error."""
    err, rest = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
    if int(err) != 0:
        raise RuntimeError("CUDA error %s" % err)
    return rest[0] if len(rest) == 1 else rest


class TensorRtRuntime(Runtime):
    """TensorRT engines built on the device from the artifact's ONNX. Options: `max_batch` (the optimisation
    profile's largest batch, default 32), `cache_dir` (default ~/.cache/edgecam/tensorrt), `trtexec` (trtexec's
    path, or "trtexec" for the one on PATH: also time the logits-only engine with it, `profile`)."""

    name = "tensorrt"
    format = "tensorrt"
    modules = ("tensorrt",)
    times_logits_apart = True
    option_help = {"max_batch": "the engines' largest batch (default %d; larger batches run in pieces)" % DEFAULT_MAX_BATCH,
                   "trtexec": "also time the engine with this trtexec (\"trtexec\": the one on the board's PATH)"}
    program_options = ("trtexec",)

    @classmethod
    def check_options(cls, options: Dict[str, Any]) -> Dict[str, Any]:
        max_batch, trtexec = options.get("max_batch"), options.get("trtexec")
        if max_batch is not None and (not isinstance(max_batch, int) or isinstance(max_batch, bool) or not 1 <= max_batch <= 4096):
            raise ValueError("max_batch: expected an integer from 1 to 4096, got %r" % (max_batch,))
        if trtexec is not None and (not isinstance(trtexec, str) or not trtexec.strip()):
            raise ValueError("trtexec: expected trtexec's path (or \"trtexec\" for the one on the board's PATH), got %r" % (trtexec,))
        return {k: v for k, v in options.items() if v is not None}

    @classmethod
    def backend_columns(cls, result: Dict[str, Any]) -> Dict[str, float]:
        """The logits + features engine's p50 beside the timed logits-only one, trtexec's phase p50s
        (`trt_*_p50_ms`) and the engines' GPU memory (`gpu_mem_mb`)."""
        cols: Dict[str, float] = {}
        apart = result.get("samples_with_features_s")
        if apart:  # checked finite and positive by the host's `check_timing`
            cols["p50_with_features_ms"] = float(np.percentile(np.asarray(apart, dtype=np.float64) * 1e3, 50))
        profile = result.get("profile")
        cols.update(latency_columns(profile.get("trtexec") if isinstance(profile, dict) else None))
        described = result.get("runtime")
        gpu_mem = described.get("gpu_mem_mb") if isinstance(described, dict) else None
        if isinstance(gpu_mem, (int, float)) and not isinstance(gpu_mem, bool) and math.isfinite(gpu_mem):
            cols["gpu_mem_mb"] = float(gpu_mem)
        return cols

    def _load(self) -> None:
        reason = available_reason()
        if reason is not None:
            raise RuntimeError("the tensorrt runtime cannot run here: %s" % reason)
        import tensorrt as trt  # type: ignore[import-not-found]

        self.trt, self.cudart = trt, _cudart()
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.max_batch = int(self.options.get("max_batch") or DEFAULT_MAX_BATCH)
        self.cache_dir = str(self.options.get("cache_dir") or os.path.join(os.path.expanduser("~"), ".cache", "edgecam", "tensorrt"))
        os.makedirs(self.cache_dir, exist_ok=True)
        props = _check(self.cudart.cudaGetDeviceProperties(0))
        self.gpu = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
        free_before = self._free_bytes()
        self.stream = _check(self.cudart.cudaStreamCreate())
        self.buffers: Dict[str, Any] = {}
        self.capacity: Dict[str, int] = {}
        outputs = list(self.manifest.get("outputs") or ["logits", "features"])
        self.full = self._engine(outputs)
        self.logits_only = self._engine(["logits"]) if "logits" in outputs and len(outputs) > 1 else self.full
        self.input_name = self.full["input"]
        self.output_names = self.full["outputs"]
        self.gpu_mem_bytes = max(0, free_before - self._free_bytes())  # engines, contexts, stream (buffers come later)

    def _free_bytes(self) -> int:
        free, _total = _check(self.cudart.cudaMemGetInfo())
        return int(free)

    def _engine(self, outputs: List[str]) -> Dict[str, Any]:
        """Load (or build and cache) the engine whose outputs are `outputs`, with its execution context."""
        trt = self.trt
        sha = str(self.manifest.get("sha256") or hashlib.sha256(open(self.model_path, "rb").read()).hexdigest())
        path = os.path.join(self.cache_dir, engine_key(sha, trt.__version__, self.gpu, self.max_batch, outputs) + ".engine")
        cached = os.path.isfile(path)
        if not cached:
            plan = self._build(os.path.join(self.cache_dir, timing_cache_name(trt.__version__, self.gpu)), outputs)
            with open(path + ".tmp", "wb") as f:
                f.write(plan)
            os.replace(path + ".tmp", path)
        with open(path, "rb") as f:
            engine = trt.Runtime(self.logger).deserialize_cuda_engine(f.read())
        if engine is None:
            raise RuntimeError("TensorRT could not deserialize the engine %s" % path)
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inp = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        return {"engine": engine, "context": engine.create_execution_context(), "path": path, "cached": cached, "input": inp,
                "outputs": [n for n in names if n != inp]}

    def _build(self, timing_path: str, outputs: List[str]) -> bytes:
        """Parse the ONNX, keep only `outputs` as engine outputs, set the precision flags the artifact needs and
        build the serialized engine, reusing and updating the timing cache."""
        trt = self.trt
        builder = trt.Builder(self.logger)
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH) if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH") else 0)
        parser = trt.OnnxParser(network, self.logger)
        with open(self.model_path, "rb") as f:
            if not parser.parse(f.read()):
                raise RuntimeError("TensorRT's ONNX parser rejects %s: %s" % (self.model_path, "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))))
        for tensor in [network.get_output(i) for i in range(network.num_outputs)]:
            if tensor.name not in outputs:
                network.unmark_output(tensor)  # the logits-only engine: TensorRT may fuse across the CAM layer
        config = builder.create_builder_config()
        precision = str(self.manifest.get("precision_effective", "fp32"))
        if precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        elif precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)  # explicit quantization: the Q/DQ nodes decide (TensorRT 8.x needs the flag)
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # per-layer precisions in describe(), trtexec's layer info
        profile = builder.create_optimization_profile()
        inp = network.get_input(0)
        shape = tuple(inp.shape)[1:]
        # tactics tuned for batch 1, the shape latency is timed at; larger batches (output forwards) run, less tuned
        profile.set_shape(inp.name, (1,) + shape, (1,) + shape, (self.max_batch,) + shape)
        config.add_optimization_profile(profile)
        timing = config.create_timing_cache(open(timing_path, "rb").read() if os.path.isfile(timing_path) else b"")
        config.set_timing_cache(timing, ignore_mismatch=False)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise RuntimeError("TensorRT could not build an engine from %s" % self.model_path)
        with open(timing_path + ".tmp", "wb") as f:
            f.write(bytes(config.get_timing_cache().serialize()))
        os.replace(timing_path + ".tmp", timing_path)
        return bytes(plan)

    def _buffer(self, name: str, nbytes: int) -> Any:
        if self.capacity.get(name, -1) < nbytes:
            if name in self.buffers:
                _check(self.cudart.cudaFree(self.buffers[name]))
            self.buffers[name] = _check(self.cudart.cudaMalloc(nbytes))
            self.capacity[name] = nbytes
        return self.buffers[name]

    def _execute(self, eng: Dict[str, Any], feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        x = feeds.get(eng["input"])
        x = np.ascontiguousarray(next(iter(feeds.values())) if x is None else x, dtype=np.float32)
        if len(x) > self.max_batch:  # larger than the optimisation profile allows: in pieces
            parts = [self._execute(eng, {eng["input"]: x[i : i + self.max_batch]}) for i in range(0, len(x), self.max_batch)]
            return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        cudart, context, engine = self.cudart, eng["context"], eng["engine"]
        if not context.set_input_shape(eng["input"], x.shape):
            raise ValueError("the engine refuses input shape %s for %r" % (list(x.shape), eng["input"]))
        ptr = self._buffer(eng["input"], x.nbytes)
        _check(cudart.cudaMemcpyAsync(ptr, x.ctypes.data, x.nbytes, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))
        context.set_tensor_address(eng["input"], int(ptr))
        outs: Dict[str, np.ndarray] = {}
        for name in eng["outputs"]:
            out = np.empty(tuple(context.get_tensor_shape(name)), dtype=self.trt.nptype(engine.get_tensor_dtype(name)))
            outs[name] = out
            context.set_tensor_address(name, int(self._buffer(name, out.nbytes)))
        if not context.execute_async_v3(self.stream):
            raise RuntimeError("TensorRT execution failed")
        for name, out in outs.items():
            _check(cudart.cudaMemcpyAsync(out.ctypes.data, self.buffers[name], out.nbytes, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream))
        _check(cudart.cudaStreamSynchronize(self.stream))
        return {k: v.astype(np.float32, copy=False) for k, v in outs.items()}

    def run(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """The logits + features engine (what the CAMs need)."""
        return self._execute(self.full, feeds)

    def run_timed(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """The logits-only engine (what a deployment runs; the latency columns)."""
        return self._execute(self.logits_only, feeds)

    def layer_precisions(self, eng: Optional[Dict[str, Any]] = None) -> Dict[str, int]:
        """How many of an engine's layers compute at each precision (`trtexec.layer_summary` of the engine
        inspector's JSON, which is trtexec's --exportLayerInfo format; DETAILED verbosity)."""
        inspector = (eng or self.logits_only)["engine"].create_engine_inspector()
        return layer_summary(json.loads(inspector.get_engine_information(self.trt.LayerInformationFormat.JSON)))["compute_precisions"]

    def describe(self) -> Dict[str, Any]:
        d = super().describe()
        d.update({"gpu": self.gpu, "engine_cached": self.full["cached"], "max_batch": self.max_batch, "engine_outputs": self.output_names,
                  "timed_engine_outputs": self.logits_only["outputs"], "gpu_mem_mb": self.gpu_mem_bytes / 2**20})
        try:
            d["layer_precisions"] = self.layer_precisions()
            d["layer_precisions_with_features"] = self.layer_precisions(self.full)
        except Exception as e:  # the inspector's JSON varies between TensorRT versions: record why, do not fail the job
            d["layer_precisions_error"] = str(e)[:200]
        return d

    def profile(self) -> Dict[str, Any]:
        """With the `trtexec` option: trtexec's phase timings, layer profile and layer precisions of the
        logits-only engine ({"trtexec": ...}, or {"trtexec_error": why}); {} without it."""
        executable = self.options.get("trtexec")
        if not executable:
            return {}
        try:
            shape = [1] + [int(v) for v in tuple(self.logits_only["engine"].get_tensor_shape(self.input_name))[1:]]
            return {"trtexec": profile_engine(self.logits_only["path"], self.input_name, shape, executable=str(executable))}
        except Exception as e:  # trtexec missing or failing leaves the run's own timings intact
            return {"trtexec_error": str(e)[:300]}

    def close(self) -> None:
        for ptr in self.__dict__.pop("buffers", {}).values():
            self.cudart.cudaFree(ptr)
        if "stream" in self.__dict__:
            self.cudart.cudaStreamDestroy(self.__dict__.pop("stream"))
        self.__dict__.pop("logits_only", None)
        self.__dict__.pop("full", None)

    @classmethod
    def version(cls) -> str:
        import tensorrt as trt  # type: ignore[import-not-found]

        return str(trt.__version__)


def available_reason() -> Optional[str]:
    """None when this machine can run the tensorrt runtime, else why not (for skips and the probe)."""
    try:
        import tensorrt  # type: ignore[import-not-found]  # noqa: F401
    except ImportError as e:
        return "tensorrt does not import here (%s)" % e
    try:
        cudart = _cudart()
        if int(_check(cudart.cudaGetDeviceCount())) < 1:
            return "no CUDA device"
    except Exception as e:
        return str(e)
    return None
