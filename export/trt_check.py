"""Does TensorRT's ONNX parser take this graph? Parse it, then list the nodes TensorRT refuses.

Works with full TensorRT (8.5 to 11) and with TensorRT-RTX, whose parser and builder run without a GPU
(a graph check only: RTX is a different product than TensorRT for Jetson). Two traps measured in
research/this-machine.md: keep a Python reference to the network (a temporary one segfaults) and
use a fresh parser for `supports_model_v2` after a parse.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path

from foundry_edge.errors import MissingDependencyError
from foundry_edge.runtimes.trt_compat import create_network

MODULES = ("tensorrt", "tensorrt_rtx")


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


def find_tensorrt():
    """The first importable of tensorrt, tensorrt_rtx; None when neither is installed."""
    for name in MODULES:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def parser_errors(parser) -> list:
    errors = []
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        where = error.node_name() if hasattr(error, "node_name") else f"node {error.node()}"
        op = f" ({error.node_operator()})" if hasattr(error, "node_operator") else ""
        errors.append(f"{where}{op}: {error.desc()}")
    return errors


def _unsupported_nodes(trt, builder, logger, path: Path) -> list:
    """Nodes in subgraphs that supports_model_v2 reports unsupported (TensorRT >= 10, RTX)."""
    import onnx

    network = create_network(trt, builder)  # kept referenced for the parser's lifetime
    parser = trt.OnnxParser(network, logger)
    if not hasattr(parser, "supports_model_v2"):
        return []
    if parser.supports_model_v2(path.read_bytes(), str(path)):
        return []
    nodes = onnx.load(str(path), load_external_data=False).graph.node
    refused = []
    for i in range(parser.num_subgraphs):
        if not parser.is_subgraph_supported(i):
            refused += [f"{nodes[j].name} ({nodes[j].op_type})" for j in parser.get_subgraph_nodes(i)]
    return refused or parser_errors(parser) or ["the model (no subgraph named)"]


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
    result = TrtCheckResult(trt.__name__.split(".")[0], getattr(trt, "__version__", "unknown"), parsed,
                            errors, unsupported)
    del parser, network  # the parser before the network it fills
    return result
