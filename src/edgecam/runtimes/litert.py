"""LiteRT (TFLite) adapter, torch-free: `ai_edge_litert.interpreter.Interpreter`, falling back to
`tflite_runtime.interpreter` (what older boards have). Threads configurable; XNNPACK on by default and
switchable (`xnnpack=False`); integer inputs / outputs (de)quantised with the tensor's own scale and zero
point, so callers always feed and get float32."""

from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from edgecam.runtimes.base import Runtime, contract_input, contract_outputs


def _interpreter_module() -> Any:
    """The `interpreter` module of the first of `LiteRtRuntime.modules` that imports."""
    import importlib

    for package in LiteRtRuntime.modules:
        try:
            return importlib.import_module(package + ".interpreter")
        except ImportError:
            continue
    raise ImportError("LiteRT: none of %s is installed (pip install ai-edge-litert)" % ", ".join(LiteRtRuntime.modules))


def load_interpreter(path: str, threads: Optional[int] = None, xnnpack: bool = True) -> Any:
    """An allocated Interpreter; without XNNPACK, the builtin kernels only."""
    mod = _interpreter_module()
    kwargs: Dict[str, Any] = {"model_path": path}
    if threads:
        kwargs["num_threads"] = int(threads)
    if not xnnpack:
        kwargs["experimental_op_resolver_type"] = mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interp = mod.Interpreter(**kwargs)
    interp.allocate_tensors()
    return interp


def _quantize(x: np.ndarray, detail: Dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    if dtype == np.float32:
        return x.astype(np.float32)
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(dtype)


def _dequantize(q: np.ndarray, detail: Dict[str, Any]) -> np.ndarray:
    if np.dtype(detail["dtype"]) == np.float32:
        return np.asarray(q, dtype=np.float32)
    scale, zero = detail["quantization"]
    return ((q.astype(np.float32) - zero) * scale).astype(np.float32)


class LiteRtRuntime(Runtime):
    """One .tflite model through its signature runner; batches run one sample at a time (batch 1 graphs)."""

    name = "litert"
    format = "tflite"
    modules = ("ai_edge_litert", "tflite_runtime")  # packages with an `interpreter` module, tried in this order

    def _load(self) -> None:
        self.xnnpack = bool(self.options.get("xnnpack", True))
        self.interp = load_interpreter(self.model_path, self.threads, self.xnnpack)
        self.contract: Dict[str, Any] = dict(self.manifest.get("contract") or {})
        if self.contract:  # a model file another toolchain made (issue 34): its outputs by tensor name, not a signature
            self.in_detail = self.interp.get_input_details()[0]
            outs = {d["name"]: d for d in self.interp.get_output_details()}
            self.out_tensors = {key: outs[name] for key, name in self.manifest["output_names"].items()}
            self.batch = int(self.in_detail["shape"][0])
            return
        self.signature = self.manifest.get("signature", "serving_default")
        self.runner = self.interp.get_signature_runner(self.signature)
        self.in_details = self.runner.get_input_details()
        self.in_name = next(iter(self.in_details))
        self.out_details = self.runner.get_output_details()
        self.out_names = dict(self.manifest.get("output_names") or {"logits": "output_0", "features": "output_1"})
        self.batch = int(self.in_details[self.in_name]["shape"][0])

    def run(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        x = np.asarray(next(iter(feeds.values())), dtype=np.float32)
        if self.contract:
            return self._run_tensors(contract_input(x, self.contract, quantize=False))
        detail = self.in_details[self.in_name]
        chunks: Dict[str, list] = {k: [] for k in self.out_names}
        for i in range(0, len(x), self.batch):
            raw = self.runner(**{self.in_name: _quantize(x[i : i + self.batch], detail)})
            for key, tname in self.out_names.items():
                chunks[key].append(_dequantize(raw[tname], self.out_details[tname]))
        return {k: np.concatenate(v) for k, v in chunks.items()}

    def _run_tensors(self, x: np.ndarray) -> Dict[str, np.ndarray]:
        """One batch through the interpreter's own input and output tensors (the outputs graph surgery added)."""
        chunks: Dict[str, list] = {k: [] for k in self.out_tensors}
        for i in range(0, len(x), self.batch):
            self.interp.set_tensor(self.in_detail["index"], _quantize(x[i : i + self.batch], self.in_detail))
            self.interp.invoke()
            for key, detail in self.out_tensors.items():
                chunks[key].append(_dequantize(self.interp.get_tensor(detail["index"]), detail))
        return contract_outputs({k: np.concatenate(v) for k, v in chunks.items()}, self.contract)

    def describe(self) -> Dict[str, Any]:
        d = super().describe()
        d.update({"xnnpack": self.xnnpack, "interpreter": _interpreter_module().__name__})
        return d

    def close(self) -> None:
        self.__dict__.pop("runner", None)
        self.__dict__.pop("interp", None)

    @classmethod
    def version(cls) -> str:
        import importlib

        for dist in cls.modules:
            try:
                return "%s %s" % (dist, getattr(importlib.import_module(dist), "__version__", "?"))
            except ImportError:
                continue
        return "not installed"
