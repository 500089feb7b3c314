"""What an ONNX file says about itself: its input and output specs and its precision.

Format-only reading (onnx, no runtime): the manifest check compares a manifest with these, and a model
without a manifest is described by them.
"""

from __future__ import annotations

from pathlib import Path

from foundry_edge.contracts.tensors import TensorSpec
from foundry_edge.errors import FoundryError


def read_onnx(path: str | Path):
    """A user's ONNX file -> onnx.ModelProto (external data not loaded); a corrupt or empty file is a FoundryError."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise FoundryError(f"expected an ONNX model at {path}, could not read it ({exc.strerror}): check the path") from None
    return parse_onnx(data, path)


def parse_onnx(data: bytes, path: str | Path):
    """ONNX bytes read from `path` -> onnx.ModelProto; a corrupt or empty model is a FoundryError."""
    import onnx

    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf's DecodeError and friends, for a file that is not ONNX
        raise FoundryError(f"expected an ONNX model in {path}, could not parse it ({exc}): re-export it") from None
    if not model.graph.node:
        raise FoundryError(f"expected an ONNX model in {path}, found one with an empty graph: re-export it")
    return model


def graph_specs(graph):
    """(inputs, outputs) of a graph as TensorSpecs; initializers listed as inputs are not inputs."""
    initializers = {init.name for init in graph.initializer}
    return [_spec(v) for v in graph.input if v.name not in initializers], [_spec(v) for v in graph.output]


def _spec(value) -> TensorSpec:
    import onnx

    tensor = value.type.tensor_type
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
    dims = []
    for axis, dim in enumerate(tensor.shape.dim):
        dims.append(dim.dim_value if dim.HasField("dim_value") else (dim.dim_param or f"{value.name}_dim{axis}"))
    return TensorSpec(value.name, dtype, tuple(dims))


def onnx_precision(graph) -> str:
    """'int8' for a Q/DQ graph, 'fp16' for FP16 weights, else 'fp32'."""
    import onnx

    if any(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in graph.node):
        return "int8"
    if any(init.data_type == onnx.TensorProto.FLOAT16 for init in graph.initializer):
        return "fp16"
    return "fp32"
