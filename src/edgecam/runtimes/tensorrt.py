"""TensorRT adapter for the board (torch-free): builds the engine on the device from the pushed `tensorrt`
artifact (TensorRT's ONNX, `exporters/tensorrt.py`), caches the engine and a timing cache on the board, and
runs it with cuda-python's runtime API for the device buffers.

An engine is specific to its GPU and TensorRT version, so both are in the cache keys (`engine_key`,
`timing_cache_name`). Marking the CAM layer as an engine output can stop TensorRT fusing across it and change
results (NVIDIA/TensorRT#2232, #3258): `features` is exported at the CAM layer's output, a fusion boundary of
the network, and the engine's outputs and per-layer precisions are recorded in `describe()`.

Verified only where `tensorrt` imports (a Jetson or a GPU machine with TensorRT): tests/hardware/test_tensorrt_live.py.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Dict, List, Optional

import numpy as np

from edgecam.runtimes.base import Runtime

DEFAULT_MAX_BATCH = 32  # the agent forwards in batches of output_batch_size (32 by default)


def engine_key(artifact_sha256: str, trt_version: str, gpu: str, max_batch: int, outputs: List[str]) -> str:
    """The engine cache key: the artifact's content, TensorRT's version, the GPU, the profile and the outputs."""
    raw = json.dumps({"artifact": artifact_sha256, "tensorrt": trt_version, "gpu": gpu, "max_batch": max_batch, "outputs": sorted(outputs)}, sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def timing_cache_name(trt_version: str, gpu: str) -> str:
    """One timing cache per (TensorRT version, GPU): tactic timings carry over between models, not devices."""
    safe = "".join(c if c.isalnum() or c in "-." else "_" for c in "%s-%s" % (gpu, trt_version))
    return "timing-%s.cache" % safe


PRECISION_WORDS = ("FP32", "FP16", "BF16", "FP8", "FP4", "INT8", "INT4", "INT32", "INT64", "BOOL", "UINT8")


def layer_precision(fmt: str) -> str:
    """The precision named in one of the inspector's "Format/Datatype" strings ("unknown" if none is)."""
    words = fmt.upper().replace(".", " ").replace(",", " ").split()
    return next((w.lower() for w in words if w in PRECISION_WORDS), "float" if "FLOAT" in words else "half" if "HALF" in words else "unknown")


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
    """A TensorRT engine built on the device from the artifact's ONNX. Options: `max_batch` (the optimisation
    profile's largest batch, default 32), `cache_dir` (default ~/.cache/edgecam/tensorrt)."""

    name = "tensorrt"
    format = "tensorrt"
    modules = ("tensorrt",)

    def _load(self) -> None:
        reason = available_reason()
        if reason is not None:
            raise RuntimeError("the tensorrt runtime cannot run here: %s" % reason)
        import tensorrt as trt  # type: ignore[import-not-found]

        self.trt, self.cudart = trt, _cudart()
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.max_batch = int(self.options.get("max_batch") or DEFAULT_MAX_BATCH)
        cache_dir = str(self.options.get("cache_dir") or os.path.join(os.path.expanduser("~"), ".cache", "edgecam", "tensorrt"))
        os.makedirs(cache_dir, exist_ok=True)
        props = _check(self.cudart.cudaGetDeviceProperties(0))
        self.gpu = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
        outputs = list(self.manifest.get("outputs") or ["logits", "features"])
        sha = str(self.manifest.get("sha256") or hashlib.sha256(open(self.model_path, "rb").read()).hexdigest())
        path = os.path.join(cache_dir, engine_key(sha, trt.__version__, self.gpu, self.max_batch, outputs) + ".engine")
        self.engine_cached = os.path.isfile(path)
        if not self.engine_cached:
            plan = self._build(os.path.join(cache_dir, timing_cache_name(trt.__version__, self.gpu)))
            with open(path + ".tmp", "wb") as f:
                f.write(plan)
            os.replace(path + ".tmp", path)
        with open(path, "rb") as f:
            self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(f.read())
        if self.engine is None:
            raise RuntimeError("TensorRT could not deserialize the engine %s" % path)
        self.context = self.engine.create_execution_context()
        self.stream = _check(self.cudart.cudaStreamCreate())
        self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_name = next(n for n in self.names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_names = [n for n in self.names if n != self.input_name]
        self.buffers: Dict[str, Any] = {}
        self.capacity: Dict[str, int] = {}

    def _build(self, timing_path: str) -> bytes:
        """Parse the ONNX, set the precision flags the artifact needs and build the serialized engine, reusing
        and updating the timing cache."""
        trt = self.trt
        builder = trt.Builder(self.logger)
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH) if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH") else 0)
        parser = trt.OnnxParser(network, self.logger)
        with open(self.model_path, "rb") as f:
            if not parser.parse(f.read()):
                raise RuntimeError("TensorRT's ONNX parser rejects %s: %s" % (self.model_path, "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))))
        config = builder.create_builder_config()
        precision = str(self.manifest.get("precision_effective", "fp32"))
        if precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        elif precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)  # explicit quantization: the Q/DQ nodes decide (TensorRT 8.x needs the flag)
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # per-layer precisions in describe()
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

    def run(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        x = feeds.get(self.input_name)
        x = np.ascontiguousarray(next(iter(feeds.values())) if x is None else x, dtype=np.float32)
        if len(x) > self.max_batch:
            raise ValueError("batch %d exceeds the engine's max_batch %d (runtime option max_batch)" % (len(x), self.max_batch))
        cudart = self.cudart
        if not self.context.set_input_shape(self.input_name, x.shape):
            raise ValueError("the engine refuses input shape %s for %r" % (list(x.shape), self.input_name))
        ptr = self._buffer(self.input_name, x.nbytes)
        _check(cudart.cudaMemcpyAsync(ptr, x.ctypes.data, x.nbytes, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))
        self.context.set_tensor_address(self.input_name, int(ptr))
        outs: Dict[str, np.ndarray] = {}
        for name in self.output_names:
            out = np.empty(tuple(self.context.get_tensor_shape(name)), dtype=self.trt.nptype(self.engine.get_tensor_dtype(name)))
            outs[name] = out
            self.context.set_tensor_address(name, int(self._buffer(name, out.nbytes)))
        if not self.context.execute_async_v3(self.stream):
            raise RuntimeError("TensorRT execution failed")
        for name, out in outs.items():
            _check(cudart.cudaMemcpyAsync(out.ctypes.data, self.buffers[name], out.nbytes, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream))
        _check(cudart.cudaStreamSynchronize(self.stream))
        return {k: v.astype(np.float32, copy=False) for k, v in outs.items()}

    def layer_precisions(self) -> Dict[str, int]:
        """How many engine layers write their first output at each precision (the engine inspector's
        "Format/Datatype", e.g. "Thirty-two wide channel vectorized row major Int8 format"; DETAILED verbosity)."""
        inspector = self.engine.create_engine_inspector()
        info = json.loads(inspector.get_engine_information(self.trt.LayerInformationFormat.JSON))
        counts: Dict[str, int] = {}
        for layer in info.get("Layers", []):
            outs = layer.get("Outputs") if isinstance(layer, dict) else None
            fmt = str(outs[0].get("Format/Datatype", "")) if outs and isinstance(outs[0], dict) else ""
            counts[layer_precision(fmt)] = counts.get(layer_precision(fmt), 0) + 1
        return counts

    def describe(self) -> Dict[str, Any]:
        d = super().describe()
        d.update({"gpu": self.gpu, "engine_cached": self.engine_cached, "max_batch": self.max_batch, "engine_outputs": self.output_names})
        try:
            d["layer_precisions"] = self.layer_precisions()
        except Exception as e:  # the inspector's JSON varies between TensorRT versions: record why, do not fail the job
            d["layer_precisions_error"] = str(e)[:200]
        return d

    def close(self) -> None:
        for ptr in self.__dict__.pop("buffers", {}).values():
            self.cudart.cudaFree(ptr)
        if "stream" in self.__dict__:
            self.cudart.cudaStreamDestroy(self.__dict__.pop("stream"))
        self.__dict__.pop("context", None)
        self.__dict__.pop("engine", None)

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
