"""Export-only graph rewrites for older TensorRT, each naming the problem it avoids (export/targets.py
says which target needs which). They run on the simplified graph, before the checks, so every check
and the parity run see the rewritten file.

- "opset17": TensorRT 8.x documents ONNX opsets up to 17 and its Reduce importers take `axes` as an
  attribute; the dynamo exporter writes opset >= 18, where Reduce* ops take `axes` as an input.
- "decompose-layernorm": TensorRT 8.5 (JetPack 5.1) has no LayerNormalization importer.

`stamp_ir_version` runs after them on every export: the exporter stamps its own onnx's IR version (10),
which ONNX Runtime before 1.18 refuses to load; targets.py says which IR each opset gets.
"""

from __future__ import annotations

from foundry_edge.errors import FoundryError
from foundry_edge.export.targets import CONVERTED_OPSET

# Reduce ops whose axes became an input in opset 18; ReduceSum's did in opset 13 (an initializer is fine).
AXES_INPUT_FROM_18 = ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
                      "ReduceMin", "ReduceProd", "ReduceSumSquare")


def graphs(graph):
    """`graph` and every Loop / If / Scan body inside it, depth first."""
    import onnx

    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from graphs(sub)


def walk(graph):
    """Every node of `graph`, with those inside its bodies."""
    for g in graphs(graph):
        yield from g.node


def to_opset17(model):
    """ModelProto at opset 18-20 -> opset 17 with every Reduce* axes an attribute (ReduceSum: an input).

    onnx.version_converter moves constant axes into attributes (and refuses computed ones), but
    (onnx 1.23) keeps the opset-18 attribute `noop_with_empty_axes` on ReduceMean/ReduceMax/...,
    which opset 17 does not define, so onnx.checker and TensorRT refuse the node: dropped here.
    The "reduce axes" check and onnx.checker then verify the written file.
    """
    from onnx import version_converter

    try:
        converted = version_converter.convert_version(model, CONVERTED_OPSET)
    except RuntimeError as exc:  # e.g. a Reduce whose axes are computed: TensorRT 8.x cannot take it either
        raise FoundryError(f"onnx.version_converter cannot write this graph at opset 17 ({str(exc).strip()}): "
                           "export with --target trt10 (opset 18)") from None
    for node in walk(converted.graph):
        if node.op_type in AXES_INPUT_FROM_18:
            _drop_noop_with_empty_axes(node)
    return converted


def _drop_noop_with_empty_axes(node) -> None:
    """Remove the opset-18 attribute in place; a reduction it made a no-op has no opset-17 form."""
    noop = next((a for a in node.attribute if a.name == "noop_with_empty_axes"), None)
    if noop is None:
        return
    if noop.i and not any(a.name == "axes" for a in node.attribute):
        raise FoundryError(f"{node.op_type} {node.name!r} is a no-op reduction (noop_with_empty_axes), which "
                           "opset 17 cannot express: export with --target trt10 (opset 18)")
    node.attribute.remove(noop)


def decompose_layer_norm(model):
    """LayerNormalization -> ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div, Mul, Add, in place, FP32.

        y = (x - mean(x)) / sqrt(mean((x - mean(x))^2) + epsilon) * scale + bias   over axes [axis, rank)

    For TensorRT 8.5, which has no LayerNormalization importer (docs/platform-notes.md, "TensorRT versions and
    ONNX opsets"). The
    primitives are FP32 like the graph; in FP16 the squares and their mean overflow, so each node is
    named `<output>/LayerNorm/<op>` for precision tools to keep in FP32. Needs opset 17 (axes as
    attributes): run after to_opset17.
    """
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset != CONVERTED_OPSET:
        raise ValueError(f"decompose_layer_norm writes opset-17 ReduceMean, the graph is at opset {opset}")
    nodes, constants = [], []
    for node in model.graph.node:
        if node.op_type != "LayerNormalization":
            nodes.append(node)
            continue
        made, made_constants = _layer_norm_primitives(model, node)
        nodes += made
        constants += made_constants
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(constants)
    return model


def _layer_norm_primitives(model, node) -> tuple:
    """One LayerNormalization node -> (its primitive nodes, their two scalar initializers)."""
    import numpy as np
    from onnx import helper, numpy_helper

    if len([o for o in node.output if o]) > 1:
        raise ValueError(f"LayerNormalization {node.name!r}: only the normalised output Y is decomposed")
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    axis = attrs.get("axis", -1)
    axes = list(range(axis, 0)) if axis < 0 else list(range(axis, _rank(model, node.input[0])))
    x, scale = node.input[0], node.input[1]
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    y = node.output[0]
    t = lambda step: f"{y}/LayerNorm/{step}"  # noqa: E731  tensor and node names, unique per output
    constants = [numpy_helper.from_array(np.array(2.0, np.float32), t("two")),
                 numpy_helper.from_array(np.array(attrs.get("epsilon", 1e-5), np.float32), t("epsilon"))]
    steps = [("ReduceMean", [x], "mean", dict(axes=axes, keepdims=1)),
             ("Sub", [x, t("mean")], "centred", {}),
             ("Pow", [t("centred"), t("two")], "squared", {}),
             ("ReduceMean", [t("squared")], "variance", dict(axes=axes, keepdims=1)),
             ("Add", [t("variance"), t("epsilon")], "variance_eps", {}),
             ("Sqrt", [t("variance_eps")], "std", {}),
             ("Div", [t("centred"), t("std")], "normalised", {}),
             ("Mul", [t("normalised"), scale], "scaled", {}),
             ("Add", [t("scaled"), bias], "shifted", {})]
    if bias is None:
        steps.pop()
    made = [helper.make_node(op, inputs, [t(out)], name=t(out), **kw) for op, inputs, out, kw in steps]
    made[-1].output[0] = y
    return made, constants


def _rank(model, name: str) -> int:
    """The rank shape inference gives tensor `name` (a LayerNormalization with a non-negative axis needs it)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        if value.name == name and value.type.tensor_type.HasField("shape"):
            return len(value.type.tensor_type.shape.dim)
    raise ValueError(f"LayerNormalization input {name!r} has no inferred rank")


def stamp_ir_version(model, ir_version: int):
    """Set the file's IR version in place; below IR 10 drop the per-node/graph/value/tensor metadata_props
    IR 10 introduced (the exporter's trace notes: no runtime reads them, and an older reader would not)."""
    model.ir_version = ir_version
    if ir_version < 10 and hasattr(model.graph, "metadata_props"):  # an onnx before 1.16 has none to drop
        for graph in graphs(model.graph):
            del graph.metadata_props[:]
            for item in (*graph.node, *graph.input, *graph.output, *graph.value_info, *graph.initializer):
                del item.metadata_props[:]
        for function in model.functions:
            del function.metadata_props[:]
            for node in function.node:
                del node.metadata_props[:]
    return model


REWRITES = {"opset17": to_opset17, "decompose-layernorm": decompose_layer_norm}


def apply_rewrites(model, names):
    """Run the named rewrites (export/targets.py Target.rewrites) in order: ModelProto -> ModelProto."""
    for name in names:
        model = REWRITES[name](model)
    return model
