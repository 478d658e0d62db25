"""ONNX Runtime adapter (torch-free): configurable providers and thread count."""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

from edgecam.runtimes.base import Runtime, contract_input, contract_outputs


class OnnxRuntime(Runtime):
    """`onnxruntime.InferenceSession` with explicit threads / providers / graph optimisation level."""

    name = "onnxruntime"
    format = "onnx"
    modules = ("onnxruntime",)

    def _load(self) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        if self.threads:
            so.intra_op_num_threads = int(self.threads)
            so.inter_op_num_threads = 1
        so.log_severity_level = 3
        # the job's option, else the artifact's own (low-bit QDQ graphs load only below "all" in ORT 1.32)
        level = str(self.options.get("graph_optimization") or self.manifest.get("runtime_options", {}).get("graph_optimization") or "all")
        levels = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }
        if level not in levels:
            raise ValueError("onnxruntime graph_optimization: expected one of %s, got %r" % (", ".join(levels), level))
        so.graph_optimization_level = levels[level]
        providers: List[str] = list(self.options.get("providers") or ["CPUExecutionProvider"])
        available = ort.get_available_providers()
        missing = [p for p in providers if p not in available]
        if missing:
            raise ValueError("onnxruntime providers %s are not available here; available: %s" % (missing, available))
        self.session = ort.InferenceSession(self.model_path, sess_options=so, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        # a model file another toolchain made (issue 34): its layout, integer input and fixed batch are its own
        self.contract: Dict[str, Any] = dict(self.manifest.get("contract") or {})
        if self.contract:
            self.output_names = ["logits", "features"]
        batch = self.session.get_inputs()[0].shape[0]
        self.batch = batch if isinstance(batch, int) and batch > 0 else 0

    def run(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        x = feeds.get(self.input_name)
        if x is None:
            x = next(iter(feeds.values()))
        if not self.contract:
            outs = self.session.run(self.output_names, {self.input_name: x})
            return dict(zip(self.output_names, outs))
        x = contract_input(x, self.contract, quantize=True)
        step = self.batch or len(x)
        parts = [self.session.run(self.output_names, {self.input_name: x[i : i + step]}) for i in range(0, len(x), step)]
        return contract_outputs({n: np.concatenate([p[k] for p in parts]) for k, n in enumerate(self.output_names)}, self.contract)

    def describe(self) -> Dict[str, Any]:
        d = super().describe()
        d["providers"] = self.session.get_providers()
        return d

    def close(self) -> None:
        self.__dict__.pop("session", None)

    @classmethod
    def version(cls) -> str:
        import onnxruntime

        return str(onnxruntime.__version__)
