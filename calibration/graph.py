"""Find the nodes that must keep full precision, by graph structure rather than by node names.

Hard decisions (ArgMax/ArgMin, TopK, comparisons) flip at near-ties when their inputs lose precision:
the FPS and kNN distances then pick other groups, the DSO logits other SuperTokens, the gate other
bypass tokens (docs/platform-notes.md, "FP16 pitfalls"). So every node upstream of a decision stays
in FP32, walking back through at most two weighted layers: the one that produces the scores (the DSO
logits MatMul against the SuperToken queries) and the projection feeding it (the key Linear).
LayerNorm and Softmax reductions stay FP32 by op type (a LayerNorm decomposed for TensorRT 8.5, by its
name scope). Constant subgraphs are skipped: they fold away.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Dict, Iterable, List

DECISION_OPS = ("ArgMax", "ArgMin", "TopK", "Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual")
WEIGHTED_OPS = ("MatMul", "Gemm", "Conv", "ConvTranspose")
FP32_OP_TYPES = ("LayerNormalization", "Softmax")
# LayerNorm decomposed for TensorRT 8.5 (export --target trt8.5) keeps its name scope: its squares overflow FP16.
DECOMPOSED_LAYERNORM = "*/LayerNorm/*"
SCORE_LAYERS = 2  # weighted layers kept in FP32 on each path into a decision


@dataclass
class Exclusions:
    """Node name -> why it keeps full precision; `rules` is what was asked for, for the manifest."""

    nodes: Dict[str, str] = field(default_factory=dict)
    rules: List[str] = field(default_factory=list)
    unmatched: List[str] = field(default_factory=list)  # user patterns that matched no node name or op type

    def add(self, names: Iterable[str], reason: str) -> None:
        for name in names:
            self.nodes.setdefault(name, reason)

    def to_dict(self) -> dict:
        counts: Dict[str, int] = {}
        for reason in self.nodes.values():
            counts[reason] = counts.get(reason, 0) + 1
        return {"rules": list(self.rules), "counts": counts, "nodes": sorted(self.nodes), "unmatched": self.unmatched}


def ensure_node_names(model) -> None:
    """Name unnamed nodes in place: ORT's quantizer addresses nodes by name."""
    seen = set()
    for index, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{index}"
        seen.add(node.name)


def rename_inputs(nodes, old: str, new: str) -> None:
    """Make every node in `nodes` that reads tensor `old` read `new` instead, in their subgraphs too."""
    for node in nodes:
        node.input[:] = [new if name == old else name for name in node.input]
        for graph in subgraphs(node):
            rename_inputs(graph.node, old, new)


def subgraphs(node) -> list:
    """The bodies of a Loop / If / Scan node (empty for other nodes)."""
    import onnx

    return [g for attr in node.attribute
            for g in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs))]


def reads(node) -> List[str]:
    """A node's inputs, plus the outer tensors its subgraphs read by name (a Loop body's implicit inputs)."""
    outer, made = [], {""}
    for graph in subgraphs(node):
        made |= {v.name for v in graph.input} | {i.name for i in graph.initializer}
        for inner in graph.node:
            outer += [name for name in reads(inner) if name not in made]
            made.update(inner.output)
        outer += [v.name for v in graph.output if v.name not in made]
    return list(node.input) + sorted(set(outer))


def holds_decision(node) -> bool:
    """A decision op, or a Loop / If / Scan with one inside (the scalable FPS loop's ArgMax)."""
    return node.op_type in DECISION_OPS or any(holds_decision(n) for g in subgraphs(node) for n in g.node)


def constant_tensors(model) -> set:
    """Names of tensors computable without the graph inputs (initializers, Constant, and their products)."""
    const = {init.name for init in model.graph.initializer} | {""}
    for node in model.graph.node:  # ONNX nodes are topologically sorted
        if node.op_type == "Constant" or all(name in const for name in reads(node)):
            const.update(node.output)
    return const


def decision_inputs(model) -> Dict[str, str]:
    """Nodes feeding a hard decision (walked back through SCORE_LAYERS weighted layers) -> reason."""
    producer = {out: node for node in model.graph.node for out in node.output}
    const = constant_tensors(model)
    found: Dict[str, str] = {}
    best: Dict[str, int] = {}  # node -> the most weighted layers still allowed when it was reached
    stack = [(node, SCORE_LAYERS, f"feeds {node.op_type}") for node in model.graph.node if holds_decision(node)]
    while stack:
        node, budget, reason = stack.pop()
        if best.get(node.name, -1) >= budget:
            continue
        best[node.name] = budget
        found.setdefault(node.name, reason)
        weighted = node.op_type in WEIGHTED_OPS and any(name in const for name in node.input)
        budget -= int(weighted)
        if budget <= 0:
            continue
        for name in reads(node):
            if name not in const and name in producer:
                stack.append((producer[name], budget, reason))
    return found


def match_patterns(model, patterns: Iterable[str]) -> Dict[str, str]:
    """Nodes whose name or op type matches a glob (`*attn*`, `Softmax`) -> the pattern that matched."""
    out: Dict[str, str] = {}
    for pattern in patterns:
        for node in model.graph.node:
            if fnmatch.fnmatchcase(node.name, pattern) or fnmatch.fnmatchcase(node.op_type, pattern):
                out.setdefault(node.name, f"--exclude {pattern}")
    return out


def find_exclusions(model, patterns: Iterable[str] = (), defaults: bool = True) -> Exclusions:
    """The nodes to keep in full precision: the structural defaults (unless off) plus the user's globs."""
    patterns = list(patterns)
    result = Exclusions(rules=([f"decision inputs ({', '.join(DECISION_OPS)}) through {SCORE_LAYERS} weighted layers",
                                f"op types {', '.join(FP32_OP_TYPES)}",
                                f"decomposed LayerNorm ({DECOMPOSED_LAYERNORM})"] if defaults else []) + patterns)
    if defaults:
        result.add(decision_inputs(model), "decision input")
        result.add((n.name for n in model.graph.node if n.op_type in FP32_OP_TYPES), "fp32 op type")
        result.add((n.name for n in model.graph.node if fnmatch.fnmatchcase(n.name, DECOMPOSED_LAYERNORM)),
                   "decomposed LayerNorm")
    for name, reason in match_patterns(model, patterns).items():
        result.add([name], reason)
    result.unmatched = [p for p in patterns if not match_patterns(model, [p])]
    return result


def layer_of(node) -> str:
    """The module a node came from (the dynamo exporter's name scopes), else the node's own name."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            scopes = [s.strip(" '\"") for s in prop.value.strip("[]").split(",")]
            modules = [s for s in scopes[:-1] if s]
            if modules:
                return modules[-1]
    return node.name
