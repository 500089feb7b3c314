"""FP32 ONNX -> mixed FP16 ONNX, the form strongly typed TensorRT 11 builds FP16 engines from.

TensorRT 11 removed the FP16 builder flag: precision comes from the ONNX itself. Everything converts
to FP16 except what overflows or flips there (docs/platform-notes.md, "FP16 pitfalls"): LayerNorm and
Softmax reductions, and every node feeding a hard decision (FPS/kNN distances, DSO logits, the gate),
found by graph.py. Inputs and outputs stay FP32 (keep_io_types), so runtimes feed the same arrays.

onnxconverter-common routes an FP32 tensor into an FP32 consumer through Cast(FP16) + Cast(FP32) when
the tensor also feeds FP16 nodes, and an output through an FP16 Identity: the FP32 islands (FPS and
kNN distances) and outputs such as `centers` were silently rounded to FP16. `_drop_round_trips` wires
those consumers back to the FP32 tensor, so what stays FP32 is computed exactly as in the FP32 graph.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Iterable, Optional

from foundry_edge.calibration.graph import ensure_node_names, find_exclusions, reads, rename_inputs, subgraphs
from foundry_edge.errors import FoundryError, require
from foundry_edge.fileio import atomic_path


def convert_to_fp16(src: str | Path, dst: str | Path, keep_fp32: Optional[Iterable[str]] = None,
                     default_exclusions: bool = True) -> dict:
    """Write the FP16 model to `dst`; returns {"fp32_nodes": [...], "rules": [...]} for the manifest.

    `keep_fp32`: extra node-name globs or op types to keep in FP32 (as `--exclude` for INT8).
    """
    onnx = require("onnx", "torch")
    float16 = require("onnxconverter_common.float16", "trt")
    if not Path(src).is_file():
        raise FoundryError(f"expected an ONNX file, found nothing at {src}: export the model first")
    model = onnx.load(str(src))
    ensure_node_names(model)
    _detach_outputs(model)
    exclusions = find_exclusions(model, list(keep_fp32 or ()), default_exclusions)
    with warnings.catch_warnings():  # its per-constant notes on clamping eps (1e-12) and FPS's inf to FP16 range
        warnings.filterwarnings("ignore", module="onnxconverter_common")
        half = float16.convert_float_to_float16(model, keep_io_types=True, node_block_list=sorted(exclusions.nodes))
    _drop_round_trips(half, exclusions.nodes)
    with atomic_path(dst) as out:
        onnx.save(half, str(out))
    return {"fp32_nodes": sorted(exclusions.nodes), "rules": exclusions.rules}


def _detach_outputs(model) -> None:
    """Give each graph output an Identity of its own.

    onnxconverter-common keeps an output FP32 (keep_io_types) but still types the nodes reading it as
    FP16, which ORT refuses ("Type (tensor(float16)) of output arg ... does not match"), and types an
    output that a kept-FP32 node writes directly as FP16; the nodes now write an internal tensor and
    only the Identity feeds the FP32 output.
    """
    from onnx import helper

    for output in model.graph.output:
        inner = f"{output.name}__inner"
        for node in model.graph.node:
            node.output[:] = [inner if o == output.name else o for o in node.output]
        rename_inputs(model.graph.node, output.name, inner)
        model.graph.node.append(helper.make_node("Identity", [inner], [output.name], name=f"{output.name}__output"))


def _cast_to(node) -> Optional[int]:
    """A Cast's target type (onnx.TensorProto enum), None for any other node."""
    return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None


def _drop_round_trips(model, blocked) -> int:
    """Turn every Cast(FP32) of [Identity of] a Cast(FP16) of an FP32 tensor into an Identity of that
    tensor (exact, as in the FP32 graph), point the FP32 bodies of `blocked` Loop/If nodes at the FP32
    tensors they read by name, then remove the casts nothing reads; returns how many were rewired."""
    import onnx

    float32, float16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    typed = onnx.shape_inference.infer_shapes(model).graph
    dtype = {v.name: v.type.tensor_type.elem_type for v in (*typed.input, *typed.value_info, *typed.output)}
    producer = {out: node for node in model.graph.node for out in node.output}

    def fp32_source(name: str) -> Optional[str]:
        """The FP32 tensor `name` is an FP16 copy of (through Identities), else None."""
        source = producer.get(name)
        while source is not None and source.op_type == "Identity":
            source = producer.get(source.input[0])
        if source is not None and _cast_to(source) == float16 and dtype.get(source.input[0]) == float32:
            return source.input[0]
        return None

    rewired = 0
    for node in model.graph.node:
        if _cast_to(node) == float32 and fp32_source(node.input[0]):
            node.op_type, node.input[0] = "Identity", fp32_source(node.input[0])
            del node.attribute[:]
            rewired += 1
        if node.name in blocked:  # its body stayed FP32 but reads outer names the converter made FP16
            for name in filter(fp32_source, reads(node)[len(node.input):]):
                for body in subgraphs(node):
                    rename_inputs(body.node, name, fp32_source(name))
                rewired += 1
    _remove_unread(model, ("Cast", "Identity"))
    return rewired


def _remove_unread(model, op_types) -> None:
    """Drop nodes of `op_types` whose outputs nothing reads (repeatedly: chains die from the end)."""
    while True:
        read = _read_names(model.graph)
        keep = [n for n in model.graph.node if n.op_type not in op_types or any(o in read for o in n.output)]
        if len(keep) == len(model.graph.node):
            return
        del model.graph.node[:]
        model.graph.node.extend(keep)


def _read_names(graph) -> set:
    """Every tensor name `graph` reads or outputs, its subgraphs' outer reads included."""
    return {o.name for o in graph.output} | {name for node in graph.node for name in reads(node)}
