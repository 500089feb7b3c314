"""Does TensorRT's ONNX parser take this graph? Parse it, then list the nodes TensorRT refuses.

Works with full TensorRT (8.5 to 11) and with TensorRT-RTX, whose parser and builder run without a GPU
(a graph check only: RTX is a different product than TensorRT for Jetson). Every TensorRT version
branch (network flags, error fields, supports_model_v2) lives in runtimes/trt_compat.py. One trap
measured (docs/platform-notes.md, "TensorRT Python API quirks"): keep the network referenced (a temporary one segfaults).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from foundry_edge.errors import MissingDependencyError
from foundry_edge.runtimes.trt_compat import (
    create_network, find_tensorrt, module_name, parser_errors, refused_node_indices, version,
)

__all__ = ["TrtCheckResult", "check_with_tensorrt", "find_tensorrt"]


@dataclass
class TrtCheckResult:
    module: str  # "tensorrt" or "tensorrt_rtx"
    version: str
    parsed: bool
    errors: list = field(default_factory=list)  # parser errors, "node (op): message"
    unsupported: list = field(default_factory=list)  # nodes supports_model_v2 refuses, "name (op)"

    @property
    def passed(self) -> bool:
        return self.parsed and not self.errors and not self.unsupported

    def detail(self) -> str:
        head = f"{self.module} {self.version}: "
        if self.passed:
            return head + "parsed, every node supported"
        problems = self.errors + [f"unsupported {n}" for n in self.unsupported]
        return head + "; ".join(problems[:5]) + (f" and {len(problems) - 5} more" if len(problems) > 5 else "")


def _unsupported_nodes(trt, builder, logger, path: Path) -> list:
    """"name (op)" of the nodes in subgraphs TensorRT reports unsupported (empty where it cannot say)."""
    import onnx

    network = create_network(trt, builder)  # kept referenced for the parser's lifetime
    parser = trt.OnnxParser(network, logger)
    refused = refused_node_indices(parser, path.read_bytes(), str(path))
    if refused is None:
        return []
    nodes = onnx.load(str(path), load_external_data=False).graph.node
    named = [f"{nodes[j].name} ({nodes[j].op_type})" for j in refused]
    return named or parser_errors(parser) or ["the model (no subgraph named)"]


def check_with_tensorrt(path, trt=None) -> TrtCheckResult:
    """Parse the ONNX file at `path` with TensorRT (or `trt`, an imported tensorrt-like module)."""
    trt = trt or find_tensorrt()
    if trt is None:
        raise MissingDependencyError("the TensorRT parser check needs 'tensorrt' (on Jetson: JetPack) or "
                                     "'tensorrt_rtx' (pip install tensorrt-rtx, see scripts/test.sh); "
                                     "or pass --trt-check off")
    path = Path(path)
    logger = trt.Logger(trt.Logger.INTERNAL_ERROR)  # errors come back in the result
    builder = trt.Builder(logger)
    network = create_network(trt, builder)
    parser = trt.OnnxParser(network, logger)
    parsed = bool(parser.parse_from_file(str(path)))
    errors = parser_errors(parser)
    unsupported = _unsupported_nodes(trt, builder, logger, path) if parsed else []
    result = TrtCheckResult(module_name(trt), version(trt), parsed, errors, unsupported)
    del parser, network  # the parser before the network it fills
    return result
