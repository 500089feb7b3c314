"""Every TensorRT version branch in one place, chosen by feature detection (hasattr), not version strings.

| topic                   | 8.5 / 8.6                      | 10.x                  | 11.x and TensorRT-RTX        |
|-------------------------|--------------------------------|-----------------------|------------------------------|
| network flags           | EXPLICIT_BATCH                 | none needed           | strongly typed, no flags     |
| FP16 / INT8             | BuilderFlag.FP16 / INT8        | same (deprecated 10.12)| FP16 ONNX / Q/DQ ONNX       |
| implicit INT8 calibrator| yes                            | deprecated            | removed                      |
| layer precision         | layer.precision + constraints  | same                  | removed                      |
| workspace               | set_memory_pool_limit          | same                  | same                         |
| device memory           | device_memory_size             | device_memory_size_v2 | device_memory_size_v2        |
| parser errors by node   | node index (older parsers)     | node name + operator  | node name + operator         |
| supports_model_v2       | no                             | yes                   | yes                          |
(docs/platform-notes.md, "TensorRT API by version"). `FOUNDRY_EDGE_TRT_MODULE=tensorrt_rtx` (or `module=`) loads
TensorRT-RTX in place of TensorRT, for parser and builder checks on machines without TensorRT.
"""

from __future__ import annotations

import importlib
import os
from typing import Iterable, List, Optional, Set

from foundry_edge.errors import FoundryError, MissingDependencyError

ENV_MODULE = "FOUNDRY_EDGE_TRT_MODULE"
GRAPH_CHECK_MODULES = ("tensorrt", "tensorrt_rtx")  # either parser can check a graph
# Layer kinds whose FP16 results go wrong first: LayerNorm/softmax reductions overflow, argmax decisions flip.
FP32_LAYER_TYPES = ("NORMALIZATION", "SOFTMAX", "REDUCE", "TOPK")


def import_tensorrt(module: Optional[str] = None):
    """The TensorRT Python module: `module`, else $FOUNDRY_EDGE_TRT_MODULE, else `tensorrt`."""
    name = module or os.environ.get(ENV_MODULE) or "tensorrt"
    if not name.startswith("tensorrt") or not name.replace("_", "").isalnum():  # never import arbitrary code
        raise FoundryError(f"expected a TensorRT Python module (tensorrt, tensorrt_rtx), got {name!r}: "
                           f"pass --trt-module tensorrt or tensorrt_rtx, or fix {ENV_MODULE}")
    try:
        trt = importlib.import_module(name)
    except ImportError as exc:
        raise MissingDependencyError(
            f"expected the TensorRT Python module {name!r}, could not import it ({exc}): on Jetson use a venv "
            "made with `python3 -m venv --system-site-packages` so JetPack's TensorRT is visible; for graph "
            f"checks only, set {ENV_MODULE}=tensorrt_rtx") from None
    missing = [attr for attr in ("Builder", "OnnxParser", "Logger", "Runtime") if not hasattr(trt, attr)]
    if missing:
        raise FoundryError(f"expected a TensorRT Python module, {name!r} is not one (it has no "
                           f"{', '.join(missing)}): pass --trt-module tensorrt or tensorrt_rtx")
    return trt


def find_tensorrt():
    """The first importable of GRAPH_CHECK_MODULES, for parser checks; None when neither is installed."""
    for name in GRAPH_CHECK_MODULES:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def module_name(trt) -> str:
    return trt.__name__.split(".")[0]


def version(trt) -> str:
    return getattr(trt, "__version__", "unknown")


def strongly_typed_only(trt) -> bool:
    """True where precision comes from the ONNX itself (TensorRT 11, TensorRT-RTX): no FP16/INT8 flags."""
    return not hasattr(trt.BuilderFlag, "FP16")


def has_implicit_calibrators(trt) -> bool:
    return hasattr(trt, "IInt8EntropyCalibrator2") and hasattr(trt.BuilderFlag, "INT8")


def create_network(trt, builder):
    """An empty network for the ONNX parser: explicit batch on 8.x, default flags elsewhere."""
    flags = 0
    creation = getattr(trt, "NetworkDefinitionCreationFlag", None)
    if hasattr(creation, "EXPLICIT_BATCH") and not hasattr(creation, "STRONGLY_TYPED"):  # 8.x only
        flags = 1 << int(creation.EXPLICIT_BATCH)
    return builder.create_network(flags)


def parser_errors(parser) -> List[str]:
    """The parser's errors as "node (op): message"; older parsers give only the node index."""
    errors = []
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        where = error.node_name() if hasattr(error, "node_name") else f"node {error.node()}"
        op = f" ({error.node_operator()})" if hasattr(error, "node_operator") else ""
        errors.append(f"{where}{op}: {error.desc()}")
    return errors


def refused_node_indices(parser, data: bytes, path: str) -> Optional[List[int]]:
    """ONNX node indices that `supports_model_v2` refuses (TensorRT >= 10, RTX); None where the model is
    supported or the parser predates supports_model_v2. Pass a parser that has not parsed yet
    (after a parse supports_model_v2 misreports: docs/platform-notes.md, "TensorRT Python API quirks")."""
    if not hasattr(parser, "supports_model_v2") or parser.supports_model_v2(data, path):
        return None
    return [j for i in range(parser.num_subgraphs) if not parser.is_subgraph_supported(i)
            for j in parser.get_subgraph_nodes(i)]


def set_workspace(trt, config, mib: int) -> None:
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(mib) << 20)
    else:
        config.max_workspace_size = int(mib) << 20


def set_opt_level(trt, config, level: int) -> None:
    if not hasattr(config, "builder_optimization_level"):
        raise FoundryError(f"--opt-level needs TensorRT >= 8.6, found {version(trt)}: drop --opt-level")
    config.builder_optimization_level = int(level)


def load_timing_cache(config, data: bytes):
    """Attach a timing cache (empty bytes start a new one); returns it so the caller keeps it alive."""
    cache = config.create_timing_cache(data)
    config.set_timing_cache(cache, False)
    return cache


def timing_cache_bytes(config) -> bytes:
    return bytes(config.get_timing_cache().serialize())


def set_dla(trt, builder, config, core: int, gpu_fallback: bool) -> None:
    cores = getattr(builder, "num_DLA_cores", 0)
    if core >= cores:
        raise FoundryError(f"expected a DLA core {core} on this device, found {cores} DLA cores: "
                           "drop --dla-core (only Jetson Xavier/Orin AGX and NX have DLAs)")
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = int(core)
    if gpu_fallback:
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)


def set_precision_flags(trt, builder, config, precision: str) -> None:
    """Weakly typed TensorRT (<= 10): FP16/INT8 builder flags, refused where the GPU lacks fast kernels."""
    if precision == "fp32":
        return
    fast = getattr(builder, "platform_has_fast_" + ("fp16" if precision == "fp16" else "int8"), True)
    if not fast:
        raise FoundryError(f"expected a GPU with fast {precision.upper()} kernels, this one has none: "
                           "build --precision fp32 (or fp16 for INT8)")
    config.set_flag(trt.BuilderFlag.FP16)  # INT8 engines keep FP16 for the layers INT8 cannot take
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)


def keep_layers_fp32(trt, network, config, onnx_names: Iterable[str]) -> List[str]:
    """Pin sensitive layers to FP32 (layer.precision + PREFER_PRECISION_CONSTRAINTS); returns their names.

    A layer is pinned if its type is in FP32_LAYER_TYPES or it comes from one of `onnx_names` (the ONNX
    nodes the caller keeps in FP32, e.g. the assignment logits: calibration.engine_inputs.fp32_node_names).
    """
    names: Set[str] = set(onnx_names)
    kinds = {getattr(trt.LayerType, t) for t in FP32_LAYER_TYPES if hasattr(trt.LayerType, t)}
    floating = {trt.float32, trt.float16}
    pinned = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type not in kinds and layer.name not in names:
            continue
        outputs = [layer.get_output(j) for j in range(layer.num_outputs)]
        if not outputs or any(out.dtype not in floating for out in outputs):
            continue
        layer.precision = trt.float32
        for j in range(layer.num_outputs):
            layer.set_output_type(j, trt.float32)
        pinned.append(layer.name)
    if pinned:
        config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
    return pinned


def layer_profiler(trt):
    """An IProfiler summing each layer's ms (`.ms[layer_name]`) over the calls it sees. The same API in
    TensorRT 8.5 to 11: the context calls report_layer_time once per layer per execute_v2/enqueueV3, after
    the work completes; layers keep their network names unless the engine was built with profiling
    verbosity NONE (then they are decimal indices and nothing is attributed)."""

    class LayerTimes(trt.IProfiler):
        def __init__(self):
            trt.IProfiler.__init__(self)
            self.ms: dict = {}

        def report_layer_time(self, layer_name, ms):
            self.ms[layer_name] = self.ms.get(layer_name, 0.0) + ms

    return LayerTimes()


def engine_device_memory(engine) -> Optional[int]:
    for attr in ("device_memory_size_v2", "device_memory_size"):
        if hasattr(engine, attr):
            return int(getattr(engine, attr))
    return None


def io_tensor_names(engine):
    """(input names, output names) of an engine, in engine order (the name-based API, 8.5+)."""
    trt_mode = type(engine.get_tensor_mode(engine.get_tensor_name(0)))
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt_mode.INPUT]
    return inputs, [n for n in names if n not in inputs]


def numpy_dtype(trt, dtype) -> str:
    """TensorRT DataType -> numpy dtype name."""
    import numpy as np

    return np.dtype(trt.nptype(dtype)).name
