"""Stand-ins for TensorRT and cuda-python, so a plan runs on a machine without a GPU.

The Jetson path tests install them (`install()`) in subprocesses that must never import torch or
onnxruntime, to run `foundry-edge run/verify/profile` on a plan end to end. Device memory is host memory
(a device pointer is a ctypes buffer's address), so copies are memmoves and the engine computes its
outputs from the inputs bound to it. The engine's tensors and shape bounds come from the sidecar that
$ENGINE_ENV names, since the plan's own bytes are opaque here. Standard library and
numpy only: this file is loaded by path before anything else in the process.
"""

from __future__ import annotations

import ctypes
import enum
import importlib.machinery
import json
import os
import sys
import types

import numpy as np

ENGINE_ENV = "FAKE_TENSORRT_ENGINE"
VERSION = "10.3.0"
GPU = "Fake Orin (nvgpu)"
COMPUTE_CAPABILITY = (8, 7)
CUDA_VERSION = 12060  # 12.6
DEVICE_BYTES = 8 << 30


def device_section() -> dict:
    """The `device` section of a sidecar for a plan built on this fake device (it passes check_sidecar)."""
    return {"tensorrt_module": "tensorrt", "tensorrt": VERSION, "gpu": GPU,
            "compute_capability": ".".join(map(str, COMPUTE_CAPABILITY)), "cuda_runtime": "12.6", "cuda_driver": "12.6"}


# -- device memory: ctypes buffers kept alive by address ----------------------------------------------
_memory: dict = {}


def _malloc(nbytes: int) -> int:
    buffer = ctypes.create_string_buffer(int(nbytes))
    _memory[ctypes.addressof(buffer)] = buffer
    return ctypes.addressof(buffer)


def _free(ptr: int) -> tuple:
    del _memory[ptr]
    return (0,)


def _copy(dst: int, src: int, nbytes: int, kind, stream) -> tuple:
    """Host and device memory are one: every direction is a memmove."""
    ctypes.memmove(dst, src, nbytes)
    return (0,)


def _array(ptr: int, shape, dtype) -> np.ndarray:
    """A numpy view of device memory at `ptr`."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    return np.frombuffer((ctypes.c_char * nbytes).from_address(ptr), dtype).reshape(shape)


# -- cuda-python's runtime module (cuda.bindings.runtime): (error, *values) tuples ------------------------
def _module(name: str) -> types.ModuleType:
    """An empty module with a spec, so importlib.util.find_spec finds it in sys.modules."""
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    return module


def _cudart() -> types.ModuleType:
    rt = _module("cuda.bindings.runtime")
    rt.cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)
    rt.cudaGetDeviceCount = lambda: (0, 1)
    rt.cudaStreamCreate = lambda: (0, 1)
    rt.cudaStreamSynchronize = lambda stream: (0,)
    rt.cudaStreamDestroy = lambda stream: (0,)
    rt.cudaMalloc = lambda nbytes: (0, _malloc(nbytes))
    rt.cudaFree = _free
    rt.cudaMemcpyAsync = _copy
    rt.cudaMemGetInfo = lambda: (0, DEVICE_BYTES - sum(len(b) for b in _memory.values()), DEVICE_BYTES)
    major, minor = COMPUTE_CAPABILITY
    rt.cudaGetDeviceProperties = lambda device: (0, types.SimpleNamespace(name=GPU.encode(), major=major, minor=minor))
    rt.cudaRuntimeGetVersion = lambda: (0, CUDA_VERSION)
    rt.cudaDriverGetVersion = lambda: (0, CUDA_VERSION)
    return rt


# -- tensorrt: a runtime that deserializes any plan into the engine $ENGINE_ENV describes ---------------
class TensorIOMode(enum.Enum):
    INPUT = 1
    OUTPUT = 2


class DataType(enum.Enum):
    FLOAT = "float32"
    HALF = "float16"
    INT32 = "int32"
    INT64 = "int64"
    BOOL = "bool"


def nptype(dtype: DataType):
    return np.dtype(dtype.value).type


class Logger:
    WARNING = 2

    def __init__(self, severity=WARNING):
        self.severity = severity


class _BuildsNothing:
    """The fake runs plans; building one is TensorRT-RTX's job in these tests."""

    def __init__(self, *args, **kwargs):
        raise RuntimeError("the fake TensorRT only runs plans: build with tensorrt_rtx")


class IProfiler:
    def __init__(self):
        pass


# The ms per call the fake engine's layers report to a profiler, by the stage their names say.
LAYER_MS = {"grouping": 0.25, "mixed": 0.05, "network": 1.5, "unattributed": 0.02}


def _layers(node_stages: dict) -> list:
    """TensorRT-style layer names over the sidecar's node names: a pointwise fusion, a fusion across the cut,
    a Myelin region, a reformat that names no node."""
    grouping, network = node_stages.get("grouping") or [], node_stages.get("network") or []
    if len(grouping) < 2 or len(network) < 3:
        return [("Reformatting CopyNode for Input Tensor 0", LAYER_MS["unattributed"])]
    return [(f"PWN({grouping[0]}, PWN({grouping[1]}_1))", LAYER_MS["grouping"]),
            (f"{grouping[-1]} + {network[0]}", LAYER_MS["mixed"]),
            (f"{{ForeignNode[{network[1]}...{network[-1]}]}}", LAYER_MS["network"]),
            ("Reformatting CopyNode for Input Tensor 0", LAYER_MS["unattributed"])]


class Engine:
    """The engine a sidecar describes: its model's tensors, its first optimisation profile's shape bounds."""

    def __init__(self, sidecar: dict):
        model = sidecar["model"]
        self.layers = _layers(sidecar.get("onnx", {}).get("node_stages") or {})
        self.profile = (sidecar.get("profiles") or [{}])[0]
        self.inputs = {s["name"]: s for s in model["inputs"]}
        self.outputs = {s["name"]: s for s in model["outputs"]}
        self.specs = {**self.inputs, **self.outputs}
        self.names = list(self.specs)
        self.num_io_tensors = len(self.names)
        self.num_supertokens = model.get("num_supertokens") or 1
        self.device_memory_size_v2 = 1 << 20

    def get_tensor_name(self, index: int) -> str:
        return self.names[index]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return TensorIOMode.INPUT if name in self.inputs else TensorIOMode.OUTPUT

    def get_tensor_shape(self, name: str) -> tuple:
        return tuple(d if isinstance(d, int) else -1 for d in self.specs[name]["shape"])

    def get_tensor_dtype(self, name: str) -> DataType:
        return DataType(self.specs[name]["dtype"])

    def create_execution_context(self) -> "Context":
        return Context(self)


class Context:
    """Shapes, addresses and an enqueue that writes a deterministic function of the inputs to the outputs."""

    def __init__(self, engine: Engine):
        self.engine, self.shapes, self.addresses = engine, {}, {}
        self.profiler = None

    def set_input_shape(self, name: str, shape) -> bool:
        declared, bounds = self.engine.specs[name]["shape"], self.engine.profile.get(name)
        fits = len(shape) == len(declared) and all(not isinstance(d, int) or d == s for d, s in zip(declared, shape))
        if fits and bounds:
            fits = all(low <= s <= high for low, s, high in zip(bounds["min"], shape, bounds["max"]))
        if fits:
            self.shapes[name] = tuple(int(s) for s in shape)
        return fits

    def get_tensor_shape(self, name: str) -> tuple:
        if name in self.engine.inputs:
            return self.shapes[name]
        known = {d: s for n, shape in self.shapes.items() for d, s in zip(self.engine.inputs[n]["shape"], shape)}
        return tuple(d if isinstance(d, int) else known[d] for d in self.engine.outputs[name]["shape"])

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addresses[name] = ptr
        return True

    def execute_async_v3(self, stream: int) -> bool:
        level = sum(_array(self.addresses[n], self.shapes[n], self.engine.specs[n]["dtype"]).astype(np.float64)
                    .reshape(self.shapes[n][0], -1).mean(1) for n in self.engine.inputs)
        for name, spec in self.engine.outputs.items():
            shape = self.get_tensor_shape(name)
            out = _array(self.addresses[name], shape, spec["dtype"])
            index = np.arange(int(np.prod(shape[1:], dtype=np.int64))).reshape(shape[1:])
            if np.issubdtype(out.dtype, np.integer):  # assignments: every SuperToken used
                out[...] = index % self.engine.num_supertokens
            else:
                out[...] = level.reshape((-1,) + (1,) * (len(shape) - 1)) + 0.01 * index
        for name, ms in self.engine.layers if self.profiler is not None else ():
            self.profiler.report_layer_time(name, ms)
        return True


class Runtime:
    def __init__(self, logger: Logger):
        self.logger = logger

    def deserialize_cuda_engine(self, plan: bytes) -> Engine:
        with open(os.environ[ENGINE_ENV], encoding="utf-8") as fh:
            return Engine(json.load(fh))


def _tensorrt() -> types.ModuleType:
    trt = _module("tensorrt")
    trt.__version__ = VERSION
    trt.Logger, trt.Runtime, trt.DataType, trt.TensorIOMode, trt.nptype = Logger, Runtime, DataType, TensorIOMode, nptype
    trt.IProfiler = IProfiler
    trt.Builder = trt.OnnxParser = _BuildsNothing
    return trt


def install() -> None:
    """Put the fake `tensorrt` and `cuda.bindings.runtime` into sys.modules."""
    runtime = _cudart()
    bindings = _module("cuda.bindings")
    bindings.runtime = runtime
    cuda = _module("cuda")
    cuda.bindings = bindings
    sys.modules.update({"tensorrt": _tensorrt(), "cuda": cuda, "cuda.bindings": bindings,
                        "cuda.bindings.runtime": runtime})
