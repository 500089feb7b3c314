"""FP32 ONNX -> mixed FP16 ONNX, the form strongly typed TensorRT 11 builds FP16 engines from.

TensorRT 11 removed the FP16 builder flag: precision comes from the ONNX itself. Everything converts
to FP16 except what overflows or flips there (research/deploy-stack.md, "FP16 pitfalls"): LayerNorm and
Softmax reductions, and every node feeding a hard decision (FPS/kNN distances, DSO logits, the gate),
found by graph.py. Inputs and outputs stay FP32 (keep_io_types), so runtimes feed the same arrays.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Iterable, Optional

from foundry_edge.calibration.graph import ensure_node_names, find_exclusions
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
    with atomic_path(dst) as out:
        onnx.save(half, str(out))
    return {"fp32_nodes": sorted(exclusions.nodes), "rules": exclusions.rules}


def _detach_outputs(model) -> None:
    """Give each graph output read inside the graph an Identity of its own.

    onnxconverter-common keeps an output FP32 (keep_io_types) but still types the nodes reading it as
    FP16, which ORT refuses ("Type (tensor(float16)) of output arg ... does not match"); the inside
    nodes now read an internal FP16 copy and only the Identity feeds the FP32 output.
    """
    from onnx import helper

    read = {name for node in model.graph.node for name in node.input}
    for output in model.graph.output:
        if output.name not in read:
            continue
        inner = f"{output.name}__inner"
        for node in model.graph.node:
            node.output[:] = [inner if o == output.name else o for o in node.output]
            node.input[:] = [inner if i == output.name else i for i in node.input]
        model.graph.node.append(helper.make_node("Identity", [inner], [output.name], name=f"{output.name}__output"))
