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

from foundry_edge.errors import FoundryError
from foundry_edge.contracts.preprocessing import Preprocessing
from foundry_edge.contracts.tensors import TensorSpec

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

    def to_dict(self) -> dict:
        """The part a TensorRT sidecar carries, so a plan runs without its ONNX and manifest."""
        return {"name": self.name, "grouping": self.preprocessing.placement, "preprocessing": self.preprocessing.to_manifest(),
                "inputs": [s.to_dict() for s in self.inputs], "outputs": [s.to_dict() for s in self.outputs],
                "profiles": self.profiles, "precision": self.precision, "class_names": self.class_names,
                "num_supertokens": self.num_supertokens}

    @classmethod
    def from_dict(cls, data: dict) -> "ModelInfo":
        preprocessing = Preprocessing.from_section(data.get("preprocessing", {}), data.get("grouping", "graph"))
        return cls([TensorSpec.from_dict(s) for s in data["inputs"]], [TensorSpec.from_dict(s) for s in data["outputs"]],
                   preprocessing, dict(data.get("profiles", {})), data.get("precision", "fp32"),
                   data.get("class_names"), data.get("name", ""), num_supertokens=data.get("num_supertokens"))


def read_model_info(onnx_path: str | Path) -> ModelInfo:
    """ONNX file -> ModelInfo, from the manifest beside it or, without one, from the graph."""
    from foundry_edge.export.manifest import read_manifest

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
