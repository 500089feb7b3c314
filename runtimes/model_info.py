"""What a runtime or the engine builder needs to know about an ONNX model: from its manifest, or its graph.

The export writes `<stem>.manifest.json` beside `model.onnx` (docs/contracts.md). An ONNX without one
still runs: names, dtypes and shapes come from the graph, host grouping is recognised by its inputs
(`neighbourhoods`, `centers`), and a dynamic batch axis gets the profile 1/1/8.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from foundry_edge.contracts.manifest import read_manifest
from foundry_edge.contracts.onnx_graph import graph_specs, onnx_precision, read_onnx
from foundry_edge.contracts.preprocessing import Preprocessing
from foundry_edge.contracts.tensors import TensorSpec
from foundry_edge.errors import FoundryError

DEFAULT_BATCH_PROFILE = [1, 1, 8]


@dataclass
class ModelInfo:
    inputs: List[TensorSpec]
    outputs: List[TensorSpec]
    preprocessing: Preprocessing
    profiles: Dict[str, List[int]]  # dynamic axis name -> [min, opt, max]
    precision: str = "fp32"
    class_names: Optional[List[str]] = None
    name: str = ""
    manifest: Optional[dict] = field(default=None, repr=False)
    num_supertokens: Optional[int] = None  # a student's s: assignment indices >= s are gate bypass slots
    cost: Optional[dict] = None  # the manifest's `cost` (parameters, FLOPs per cloud): profiling reads it

    def to_dict(self) -> dict:
        """The part a TensorRT sidecar carries, so a plan runs without its ONNX and manifest."""
        return {"name": self.name, "grouping": self.preprocessing.placement,
                "preprocessing": self.preprocessing.to_manifest(),
                "inputs": [s.to_dict() for s in self.inputs], "outputs": [s.to_dict() for s in self.outputs],
                "profiles": self.profiles, "precision": self.precision, "class_names": self.class_names,
                "num_supertokens": self.num_supertokens, "cost": self.cost}

    @classmethod
    def from_dict(cls, data: dict) -> "ModelInfo":
        preprocessing = Preprocessing.from_section(data.get("preprocessing", {}), data.get("grouping", "graph"))
        return cls([TensorSpec.from_dict(s) for s in data["inputs"]], [TensorSpec.from_dict(s) for s in data["outputs"]],
                   preprocessing, dict(data.get("profiles", {})), data.get("precision", "fp32"),
                   data.get("class_names"), data.get("name", ""), num_supertokens=data.get("num_supertokens"),
                   cost=data.get("cost"))


def read_model_info(onnx_path: str | Path) -> ModelInfo:
    """ONNX file -> ModelInfo, from the manifest beside it or, without one, from the graph."""
    path = Path(onnx_path)
    if not path.is_file():
        raise FoundryError(f"expected an ONNX file, found nothing at {path}: check the path")
    manifest = read_manifest(path)
    if manifest is not None:
        return info_from_manifest(manifest)
    warnings.warn(f"{path.name} has no manifest beside it; reading inputs and outputs from the graph", stacklevel=2)
    return info_from_graph(path)


def info_from_manifest(manifest: dict) -> ModelInfo:
    model = manifest.get("model", {})
    return ModelInfo(
        inputs=[TensorSpec.from_dict(s) for s in manifest["inputs"]],
        outputs=[TensorSpec.from_dict(s) for s in manifest["outputs"]],
        preprocessing=Preprocessing.from_manifest(manifest),
        profiles={k: list(v) for k, v in manifest.get("profiles", {}).items()},
        precision=manifest.get("onnx", {}).get("precision", "fp32"),
        class_names=manifest.get("class_names") or model.get("class_names"),
        name=model.get("name", ""),
        manifest=manifest,
        num_supertokens=num_supertokens_of(manifest),
        cost=manifest.get("cost"),
    )


def num_supertokens_of(manifest: Optional[dict]) -> Optional[int]:
    """A student's SuperToken count from its manifest's model config; None for a teacher, or without a manifest."""
    model = (manifest or {}).get("model") or {}
    count = (model.get("config") or {}).get("num_supertokens")
    return count if model.get("kind") == "student" and isinstance(count, int) else None


def info_from_graph(path: Path) -> ModelInfo:
    """Fallback without a manifest: specs from the graph's value infos."""
    graph = read_onnx(path).graph
    inputs, outputs = graph_specs(graph)
    names = {s.name for s in inputs}
    if {"neighbourhoods", "centers"} <= names:
        shape = next(s.shape for s in inputs if s.name == "neighbourhoods")
        if not all(isinstance(d, int) for d in shape[1:3]):
            raise FoundryError(f"{path.name}: host-grouped inputs need fixed group dims or a manifest, found "
                               f"{shape}: re-export it with its manifest")
        pre = {"num_groups": shape[1], "group_size": shape[2], "in_graph": False, "normalize": "centre-unit-sphere"}
        preprocessing = Preprocessing.from_section(pre, "host")
    else:
        preprocessing = Preprocessing("graph", 0)
    profiles = {s.shape[0]: list(DEFAULT_BATCH_PROFILE) for s in inputs if s.shape and isinstance(s.shape[0], str)}
    return ModelInfo(inputs, outputs, preprocessing, profiles, precision=onnx_precision(graph))
