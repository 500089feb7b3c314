"""Which stage a TensorRT layer belongs to, from its name and the ONNX node names the build recorded.

TensorRT names a layer after its ONNX node and a fused layer after the nodes it fuses: "a + b",
"PWN(a, PWN(b, c))", "{ForeignNode[a...b]}" (a Myelin region from a to b). A layer whose named nodes all
group is "grouping", all network "network", both "mixed" (a fusion across the cut); a layer naming no
recorded node (reformats, copies, unnamed shuffles) is "unattributed". The parser may suffix a second
layer of one node with "_<n>", so a name not found is looked up again without it.
"""

from __future__ import annotations

import re
from typing import Dict

STAGES = ("grouping", "network", "mixed", "unattributed")
_SEPARATORS = re.compile(r"\.\.\.|[\s+(),\[\]{}]+")


def layer_stage(layer: str, grouping: frozenset, network: frozenset) -> str:
    kinds = set()
    for part in filter(None, _SEPARATORS.split(layer)):
        for name in (part, re.sub(r"_\d+$", "", part)):
            if name in grouping or name in network:
                kinds.add("grouping" if name in grouping else "network")
                break
    if not kinds:
        return "unattributed"
    return kinds.pop() if len(kinds) == 1 else "mixed"


def stage_totals(layer_ms: Dict[str, float], node_stages: dict) -> Dict[str, float]:
    """{layer name: ms} -> {stage: ms} over STAGES, by `node_stages` ({"grouping": [...], "network": [...]})."""
    grouping, network = (frozenset(node_stages.get(key, ())) for key in ("grouping", "network"))
    totals = dict.fromkeys(STAGES, 0.0)
    for layer, ms in layer_ms.items():
        totals[layer_stage(layer, grouping, network)] += ms
    return totals

