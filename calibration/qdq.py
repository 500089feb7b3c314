"""Point clouds -> a symmetric Q/DQ INT8 ONNX that TensorRT 8.5 to 11 accepts (explicit quantization).

TensorRT wants int8 Q/DQ with zero points 0 and no bias quantization (docs/platform-notes.md, "INT8
and FP16"). ONNX Runtime's `quantize_static` gives that with QuantFormat.QDQ, QInt8 activations and
weights, per-channel weights and the extra options ActivationSymmetric / WeightSymmetric = True,
QuantizeBias = False. Only the inputs of Conv / MatMul / Gemm get Q/DQ by default: those are the layers
TensorRT runs in int8; Q/DQ around element-wise ops only adds rounding. NVIDIA ModelOpt, which places
Q/DQ by TensorRT's own fusion rules, is the optional backend (extra `modelopt`).

Flow: preprocess the graph (ORT's quant_pre_process) -> find the nodes that keep FP32 (graph.py) ->
activation ranges from the cache or a calibration run -> quantize -> verify -> write atomically.
"""

from __future__ import annotations

import inspect
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from foundry_edge.calibration import cache as range_cache
from foundry_edge.calibration.feeds import Feed, FeedReader, feeds_sha256
from foundry_edge.calibration.graph import Exclusions, ensure_node_names, find_exclusions, rename_inputs
from foundry_edge.errors import FoundryError, require
from foundry_edge.fileio import atomic_path, sha256_file

METHODS = ("minmax", "entropy", "percentile")
BACKENDS = ("ort", "modelopt")
QUANTIZED_OP_TYPES = ("Conv", "MatMul", "Gemm")


@dataclass
class QuantizeOptions:
    """What `quantize_int8` does; each field is one `foundry-edge calibrate` option."""

    method: str = "minmax"
    exclude: List[str] = field(default_factory=list)  # node-name globs or op types kept in FP32
    default_exclusions: bool = True
    op_types: Sequence[str] = QUANTIZED_OP_TYPES
    backend: str = "ort"
    cache_path: Optional[Path] = None
    only_nodes: Optional[List[str]] = None  # quantize just these (the sensitivity sweep)

    def validate(self) -> None:
        if self.method not in METHODS:
            raise FoundryError(f"expected --method one of {', '.join(METHODS)}, found {self.method!r}")
        if self.backend not in BACKENDS:
            raise FoundryError(f"expected --backend one of {', '.join(BACKENDS)}, found {self.backend!r}")
        if self.backend == "modelopt" and self.method == "percentile":
            raise FoundryError("ModelOpt calibrates with minmax or entropy, not percentile: "
                               "pass --method minmax|entropy or --backend ort")


@dataclass
class QuantizeResult:
    """The facts the output manifest records about the calibration."""

    path: Path
    method: str
    backend: str
    samples: int
    data_sha256: str
    cache: str  # "hit", "written" or "off"
    exclusions: Exclusions
    qdq_nodes: int

    def to_dict(self) -> dict:
        return {"method": self.method, "backend": self.backend, "samples": self.samples,
                "data_sha256": self.data_sha256, "cache": self.cache, "excluded": self.exclusions.to_dict(),
                "qdq_nodes": self.qdq_nodes, "activations": "int8 symmetric per-tensor",
                "weights": "int8 symmetric per-channel", "bias": "fp32"}


def quantize_int8(src: str | Path, dst: str | Path, feeds: Sequence[Feed], options: QuantizeOptions,
                  on_feed: Optional[Callable[[Feed], None]] = None) -> QuantizeResult:
    """FP32 ONNX + calibration feeds -> Q/DQ INT8 ONNX at `dst` (nothing written on failure)."""
    options.validate()
    onnx = require("onnx", "torch")
    with tempfile.TemporaryDirectory(prefix="foundry-calib-") as tmp:
        prepared = prepare_graph(Path(src), Path(tmp) / "prepared.onnx")
        exclusions = find_exclusions(onnx.load(str(prepared)), options.exclude, options.default_exclusions)
        data_hash = feeds_sha256(feeds)
        if options.backend == "modelopt":
            model, cache_state = _quantize_modelopt(prepared, feeds, options, exclusions, Path(tmp)), "off"
        else:
            ranges, cache_state = _ranges(Path(src), prepared, feeds, data_hash, options, on_feed, Path(tmp))
            model = _quantize_ort(prepared, ranges, options, exclusions, Path(tmp))
    problems = qdq_problems(model)
    if problems:
        raise RuntimeError(f"the quantizer wrote Q/DQ nodes TensorRT rejects: {problems[:3]}")
    drop_unused_opset_imports(model)
    with atomic_path(dst) as out:
        onnx.save(model, str(out))
    qdq = sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)
    return QuantizeResult(Path(dst), options.method, options.backend, sum(len(next(iter(f.values()))) for f in feeds),
                          data_hash, cache_state, exclusions, qdq)


def drop_unused_opset_imports(model) -> None:
    """Remove opset imports of domains no node uses (in place).

    ORT's quantizer adds `ai.onnx.ml` 5 and others; ONNX Runtime 1.16 (pyproject's minimum) refuses a
    file importing an ai.onnx.ml opset it does not know, though no node needs it.
    """
    used = {""} | {node.domain for node in _all_nodes(model.graph)}
    keep = [entry for entry in model.opset_import if entry.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(keep)


def _all_nodes(graph):
    """Every node of `graph` and of its subgraphs (Loop bodies)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _all_nodes(sub)


def prepare_graph(src: Path, dst: Path) -> Path:
    """ORT's quantization preprocessing (shape inference, constant folding), nodes named for exclusion.

    Symbolic shape inference is skipped: ONNX shape inference already types the dynamo exporter's graphs.
    """
    onnx = require("onnx", "torch")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    model = onnx.load(str(dst))
    ensure_node_names(model)
    scopes = {n.name: n.metadata_props for n in onnx.load(str(src)).graph.node if n.name}
    for node in model.graph.node:  # ORT's optimizer drops the exporter's name scopes; the sweep groups by them
        if not node.metadata_props and node.name in scopes:
            node.metadata_props.extend(scopes[node.name])
    onnx.save(model, str(dst))
    return dst


def _ranges(src: Path, prepared: Path, feeds, data_hash: str, options: QuantizeOptions, on_feed, tmp: Path):
    """Activation ranges from the cache when it matches, else from a calibration run (then cached)."""
    import onnxruntime

    key = range_cache.cache_key(sha256_file(src), data_hash, options.method)
    key["onnxruntime"] = onnxruntime.__version__  # its preprocessing names the calibrated tensors
    if options.cache_path is not None:
        cached = range_cache.load_ranges(options.cache_path, key)
        if cached is not None:
            return cached, "hit"
    ranges = calibrate_ranges(prepared, feeds, options.method, options.op_types, on_feed, tmp)
    if options.cache_path is None:
        return ranges, "off"
    range_cache.save_ranges(options.cache_path, key, ranges)
    return ranges, "written"


def calibrate_ranges(model_path: Path, feeds, method: str, op_types, on_feed, tmp: Path) -> Dict[str, tuple]:
    """Run the feeds through ORT's calibrator -> {tensor: (low, high)}, symmetric about 0."""
    import numpy as np
    from onnxruntime.quantization.calibrate import create_calibrator

    calibrator = create_calibrator(model_path, list(op_types), augmented_model_path=str(tmp / "augmented.onnx"),
                                   calibrate_method=_ort_method(method), extra_options={"symmetric": True})
    calibrator.collect_data(FeedReader(feeds, on_feed))
    data = calibrator.compute_data()
    return {name: (float(np.min(td.range_value[0])), float(np.max(td.range_value[1])))
            for name, td in data.data.items()}


def _ort_method(method: str):
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[method]


def _quantize_ort(prepared: Path, ranges, options: QuantizeOptions, exclusions: Exclusions, tmp: Path):
    """quantize_static with the ranges handed over as ORT's own calibration cache (no second calibration)."""
    import numpy as np
    import onnx
    import onnxruntime
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data

    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        raise FoundryError(f"onnxruntime {onnxruntime.__version__} cannot quantize from given ranges "
                           "(quantize_static has no calibration_cache_path): pip install -U onnxruntime")
    ort_cache = tmp / "ort-ranges.json"
    tensors = {name: TensorData(lowest=np.float32(lo), highest=np.float32(hi)) for name, (lo, hi) in ranges.items()}
    save_tensors_data(TensorsData(_ort_method(options.method), tensors), ort_cache)
    out = tmp / "int8.onnx"
    quantize_static(
        str(prepared), str(out), calibration_data_reader=None, quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(options.op_types), per_channel=True, reduce_range=False,
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
        nodes_to_quantize=options.only_nodes, nodes_to_exclude=sorted(exclusions.nodes),
        calibrate_method=_ort_method(options.method), calibration_cache_path=str(ort_cache),
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                       # Q/DQ on the inputs of the int8 layers only, as TensorRT places it: no rounding
                       # of their outputs (attention logits, grouped sums).
                       "OpTypesToExcludeOutputQuantization": list(options.op_types)},
    )
    model = onnx.load(str(out))
    unshare_dequantized(model, quantized=lambda node: node.op_type in options.op_types
                        and node.name not in exclusions.nodes)
    return model


def unshare_dequantized(model, quantized: Callable) -> int:
    """Give FP32 consumers of a quantized activation the FP32 tensor back; returns how many were rewired.

    ORT shares one Q/DQ pair among all consumers of a tensor, so an excluded kNN distance MatMul that
    reads the same centres as a quantized grouped mean would read them rounded to int8; a graph output
    (the centres) would be written rounded too, so outputs get an Identity of the FP32 tensor.
    """
    from onnx import helper

    producer = {out: node for node in model.graph.node for out in node.output}
    for output in model.graph.output:
        dq = producer.get(output.name)
        q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is None or q.op_type != "QuantizeLinear":
            continue
        inner = f"{output.name}_dequantized"
        rename_inputs(model.graph.node, output.name, inner)
        dq.output[0] = inner
        producer[inner] = dq
        model.graph.node.append(helper.make_node("Identity", [q.input[0]], [output.name], name=f"{output.name}_fp32"))
    rewired = 0
    for node in model.graph.node:
        if quantized(node):
            continue
        for index, name in enumerate(node.input):
            dq = producer.get(name)
            q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[index] = q.input[0]
                rewired += 1
    return rewired


def _quantize_modelopt(prepared: Path, feeds, options: QuantizeOptions, exclusions: Exclusions, tmp: Path):
    """ModelOpt's INT8 PTQ with the same exclusions, unquantized parts kept FP32 (not its FP16 default)."""
    import re

    import numpy as np
    import onnx

    quantization = require("modelopt.onnx.quantization", "modelopt")
    data = {name: np.concatenate([f[name] for f in feeds]) for name in feeds[0]}
    out = tmp / "int8.onnx"
    quantization.quantize(
        onnx_path=str(prepared), quantize_mode="int8", calibration_data=data,
        calibration_method={"minmax": "max", "entropy": "entropy"}[options.method], calibration_eps=["cpu"],
        op_types_to_quantize=list(options.op_types), nodes_to_quantize=options.only_nodes,
        nodes_to_exclude=[f"^{re.escape(n)}$" for n in sorted(exclusions.nodes)],
        high_precision_dtype="fp32", output_path=str(out),
    )
    return onnx.load(str(out))


def qdq_problems(model) -> List[str]:
    """What TensorRT would refuse in a Q/DQ graph: zero points that are not int8 zeros."""
    from onnx import TensorProto, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    problems = []
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        zero = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if zero is None:
            if node.op_type == "QuantizeLinear":  # without a zero point ONNX quantizes to uint8
                problems.append(f"{node.name}: no zero point (uint8 output)")
            continue
        if zero.data_type != TensorProto.INT8 or numpy_helper.to_array(zero).any():
            problems.append(f"{node.name}: zero point {TensorProto.DataType.Name(zero.data_type)} "
                            f"{numpy_helper.to_array(zero).ravel()[:4]}")
    return problems
