"""ONNX Runtime: the CPU provider, and the CUDA / TensorRT execution providers where installed.

`provider` reports what the session actually runs on (`session.get_providers()[0]`), not what was asked:
onnxruntime-gpu lists CUDA even without a GPU and silently falls back to the CPU, so a fallback is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import numpy as np

from foundry_edge.errors import FoundryError, require
from foundry_edge.runtimes.base import Runtime, TensorSpec, numpy_dtype_name

PROVIDERS = {
    "ort-cpu": ["CPUExecutionProvider"],
    "ort-cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "ort-trt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
OPT_LEVELS = ("disabled", "basic", "extended", "all")


class OrtRuntime(Runtime):
    """An `onnxruntime.InferenceSession` over an ONNX file, with the manifest's grouping."""

    name = "ort"

    def __init__(self, onnx_path: str | Path, runtime: str = "ort-cpu", optimization: Optional[str] = None,
                 threads: Optional[int] = None):
        from foundry_edge.runtimes.model_info import read_model_info

        if runtime not in PROVIDERS:
            raise FoundryError(f"expected one of {sorted(PROVIDERS)} for ONNX Runtime, got {runtime!r}")
        if optimization not in OPT_LEVELS + (None,):
            raise FoundryError(f"expected an optimisation level in {OPT_LEVELS}, got {optimization!r}")
        self.path, self.runtime, self.threads = Path(onnx_path), runtime, threads
        self.info = read_model_info(self.path)
        # FP16 graphs with a dynamic batch crash ORT_ENABLE_ALL at session creation (research/this-machine.md).
        self.optimization = optimization or ("extended" if self.info.precision == "fp16" else "all")
        super().__init__(self.info.preprocessing)
        self.name = runtime
        self.class_names, self.precision = self.info.class_names, self.info.precision
        self.num_supertokens = self.info.num_supertokens
        self.session = None

    def load_impl(self) -> None:
        ort = require("onnxruntime", "gpu" if self.runtime != "ort-cpu" else "cpu")
        wanted = PROVIDERS[self.runtime][0]
        if wanted not in ort.get_available_providers():
            raise FoundryError(f"expected ONNX Runtime with {wanted}, found {ort.get_available_providers()} "
                               f"(onnxruntime {ort.__version__}): install 'foundry-edge[gpu]' on a CUDA machine "
                               "or use --runtime ort-cpu")
        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(
            ort.GraphOptimizationLevel, "ORT_" + ("DISABLE_ALL" if self.optimization == "disabled"
                                                  else f"ENABLE_{self.optimization.upper()}"))
        if self.threads:
            options.intra_op_num_threads = self.threads
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=PROVIDERS[self.runtime])
        except _session_errors(ort) as exc:
            raise FoundryError(f"expected an ONNX model ONNX Runtime can load at {self.path}, found "
                               f"{str(exc).splitlines()[0]}: re-export it with `foundry-edge export`") from None
        self.provider = self.session.get_providers()[0]
        if self.provider != wanted:
            raise FoundryError(f"asked ONNX Runtime for {wanted} but the session runs on {self.provider}: "
                               "check the GPU and its CUDA/TensorRT libraries, or use --runtime ort-cpu")
        self.inputs = [_spec(v) for v in self.session.get_inputs()]
        self.outputs = [_spec(v) for v in self.session.get_outputs()]

    def infer_impl(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        names = [spec.name for spec in self.outputs]
        return dict(zip(names, self.session.run(names, feed)))

    def close_impl(self) -> None:
        self.session = None


def _session_errors(ort) -> tuple:
    """ONNX Runtime's errors for a file it cannot load (not a protobuf, no graph, an unknown op)."""
    state = ort.capi.onnxruntime_pybind11_state
    names = ("InvalidProtobuf", "InvalidArgument", "InvalidGraph", "NoSuchFile", "NoModel", "NotImplemented", "Fail")
    return tuple(getattr(state, name) for name in names if hasattr(state, name))


def _spec(value) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else (d or f"{value.name}_dim{i}") for i, d in enumerate(value.shape))
    return TensorSpec(value.name, numpy_dtype_name(value.type), shape)
