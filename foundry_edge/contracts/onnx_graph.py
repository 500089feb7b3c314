"""What an ONNX file says about itself: its input and output specs, its precision, which nodes group.

Format-only reading (onnx, no runtime): the manifest check compares a manifest with these, and a model
without a manifest is described by them.
"""

from __future__ import annotations

import math
from pathlib import Path

from foundry_edge.contracts.tensors import TensorSpec
from foundry_edge.errors import FoundryError

FLOAT_TYPES = (1, 10, 11, 16)  # float, float16, double, bfloat16


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


def grouping_nodes(graph) -> set:
    """Names of the nodes that group (normalisation, FPS, kNN, the gathers of neighbourhoods), found by
    structure: the nodes that depend on no learned weight (a float initializer with more than one value) and
    lead to or follow from a weight-free TopK (the kNN). Shape glue elsewhere and a TopK over learned logits
    (the assignment margin) are the network's; a graph without a kNN (host grouping) has none."""
    weights = {i.name for i in graph.initializer if i.data_type in FLOAT_TYPES and math.prod(i.dims) > 1}
    weighted, free = set(weights), {}
    for node in graph.node:  # ONNX lists nodes in topological order
        if any(name in weighted for name in node.input if name):
            weighted.update(node.output)
        else:
            free[node.name] = node
    producer = {out: node for node in free.values() for out in node.output}
    knn = [node for node in free.values() if node.op_type == "TopK"]
    grouping, todo = set(), list(knn)
    while todo:  # everything weight-free the kNN reads from
        node = todo.pop()
        if node.name not in grouping:
            grouping.add(node.name)
            todo += [producer[name] for name in node.input if name in producer]
    made = {out for node in knn for out in node.output}
    for node in free.values():  # and what follows from it without a weight (gathers, centring)
        if node.name not in grouping and any(name in made for name in node.input):
            grouping.add(node.name)
            made.update(node.output)
    return grouping
