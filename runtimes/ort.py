"""ONNX Runtime: the CPU provider, and the CUDA / TensorRT execution providers where installed.

`provider` reports what the session actually runs on (`session.get_providers()[0]`), not what was asked:
onnxruntime-gpu lists CUDA even without a GPU and silently falls back to the CPU, so a fallback is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

from foundry_edge.errors import FoundryError, require
from foundry_edge.contracts.tensors import TensorSpec, numpy_dtype_name
from foundry_edge.runtimes.base import Runtime

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
        # FP16 graphs with a dynamic batch crash ORT_ENABLE_ALL (docs/platform-notes.md, "ONNX Runtime on this
        # project's CPUs").
        self.optimization = optimization or ("extended" if self.info.precision == "fp16" else "all")
        super().__init__(self.info.preprocessing)
        self.name = runtime
        self.class_names, self.precision = self.info.class_names, self.info.precision
        self.num_supertokens = self.info.num_supertokens
        self.session = None

    def load_impl(self) -> None:
        self.session = make_session(self.path, PROVIDERS[self.runtime], optimization=self.optimization,
                                    threads=self.threads)
        wanted = PROVIDERS[self.runtime][0]
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


def make_session(path: str | Path, providers: Sequence[str] = ("CPUExecutionProvider",), *,
                 optimization: str = "all", threads: Optional[int] = None, profiling: bool = False):
    """The one place an `onnxruntime.InferenceSession` is made (OrtRuntime, export validation, the accuracy
    report, operator profiling), so provider checks and load errors read the same everywhere.

    `providers`: in order of preference, the first must be installed; `optimization`: one of OPT_LEVELS
    ("disabled" runs the graph as written); `threads`: intra-op threads (None: ORT's default);
    `profiling`: ORT's own profiler (session.end_profiling() gives the trace file).
    """
    if optimization not in OPT_LEVELS:
        raise FoundryError(f"expected an optimisation level in {OPT_LEVELS}, got {optimization!r}")
    ort = require("onnxruntime", "cpu" if list(providers) == ["CPUExecutionProvider"] else "gpu")
    if providers[0] not in ort.get_available_providers():
        raise FoundryError(f"expected ONNX Runtime with {providers[0]}, found {ort.get_available_providers()} "
                           f"(onnxruntime {ort.__version__}): install 'foundry-edge[gpu]' on a CUDA machine "
                           "or use --runtime ort-cpu")
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(
        ort.GraphOptimizationLevel, "ORT_" + ("DISABLE_ALL" if optimization == "disabled"
                                              else f"ENABLE_{optimization.upper()}"))
    if threads:
        options.intra_op_num_threads = threads
    options.enable_profiling = profiling
    try:
        return ort.InferenceSession(str(path), options, providers=list(providers))
    except _session_errors(ort) as exc:
        raise FoundryError(f"expected an ONNX model ONNX Runtime can load at {path}, found "
                           f"{str(exc).splitlines()[0]}: re-export it with `foundry-edge export`") from None


def _session_errors(ort) -> tuple:
    """ONNX Runtime's errors for a file it cannot load (not a protobuf, no graph, an unknown op)."""
    state = ort.capi.onnxruntime_pybind11_state
    names = ("InvalidProtobuf", "InvalidArgument", "InvalidGraph", "NoSuchFile", "NoModel", "NotImplemented", "Fail")
    return tuple(getattr(state, name) for name in names if hasattr(state, name))


def _spec(value) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else (d or f"{value.name}_dim{i}") for i, d in enumerate(value.shape))
    return TensorSpec(value.name, numpy_dtype_name(value.type), shape)
