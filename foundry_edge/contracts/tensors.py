"""Tensor specs: the name, dtype and dims of a graph's input or output (a string dim is dynamic).

Export writes them to the manifest, every runtime checks feeds against them, the builder derives
TensorRT profiles from their dynamic dims. A point model's own specs (`model_specs`) come from its
config's attributes alone, so the torch runtime and the ONNX export declare the same tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple, Union

Dim = Union[int, str]  # a fixed size, or the name of a dynamic axis


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name, e.g. "float32"
    shape: Tuple[Dim, ...]

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, data: dict) -> "TensorSpec":
        return cls(data["name"], data["dtype"], tuple(data["shape"]))


def shape_text(shape) -> str:
    """(batch, 1024, 3) as a reader expects it in a message."""
    return "(" + ", ".join(str(d) for d in shape) + ")"


def numpy_dtype_name(onnx_type: str) -> str:
    """'tensor(float)' (ONNX Runtime's type string) -> 'float32'."""
    table = {"float": "float32", "float16": "float16", "double": "float64", "int64": "int64",
             "int32": "int32", "int8": "int8", "uint8": "uint8", "bool": "bool"}
    inner = onnx_type[len("tensor("):-1] if onnx_type.startswith("tensor(") else onnx_type
    return table.get(inner, inner)


# Every output a point model can give, in the order an exported graph lists them.
OUTPUT_ORDER = ("tokens", "centers", "assignment", "assignment_margin", "gate_prob", "logits", "seg_logits")


def available_outputs(config, grouping: str) -> Tuple[str, ...]:
    """The outputs a model with `config` gives (read from its attributes only: kind, gate, num_classes,
    num_part_classes); seg_logits needs the points, so graph grouping only.

    With host grouping `centers` is an input the host already holds, so it is no output.
    """
    student = config.kind == "student"
    has = {"tokens": True, "centers": grouping == "graph", "assignment": student, "assignment_margin": student,
           "gate_prob": student and config.gate, "logits": bool(config.num_classes),
           "seg_logits": bool(config.num_part_classes) and grouping == "graph"}
    return tuple(name for name in OUTPUT_ORDER if has[name])


def input_specs(config, grouping: str, batch: Dim = "batch", points: Dim = "num_points") -> List[TensorSpec]:
    """graph grouping: points (B, N, 3) raw; host grouping: neighbourhoods (B, G, K, 3), centers (B, G, 3)."""
    if grouping == "host":
        return [TensorSpec("neighbourhoods", "float32", (batch, config.num_groups, config.group_size, 3)),
                TensorSpec("centers", "float32", (batch, config.num_groups, 3))]
    return [TensorSpec("points", "float32", (batch, points, 3))]


def output_specs(config, names: Sequence[str], batch: Dim = "batch", points: Dim = "num_points") -> List[TensorSpec]:
    """The specs of `names` (from available_outputs): (B, G, D) tokens, (B, G) assignment, (B, N, P) seg_logits..."""
    g = config.num_groups
    shapes = {"tokens": ("float32", (batch, g, config.token_dim)), "centers": ("float32", (batch, g, 3)),
              "assignment": ("int64", (batch, g)), "assignment_margin": ("float32", (batch, g)),
              "gate_prob": ("float32", (batch, g)), "logits": ("float32", (batch, config.num_classes)),
              "seg_logits": ("float32", (batch, points, config.num_part_classes))}
    return [TensorSpec(name, *shapes[name]) for name in names]


def model_specs(config, grouping: str = "graph") -> Tuple[List[TensorSpec], List[TensorSpec]]:
    """(inputs, outputs) of a model with `config`, batch and points dynamic: what an export of it declares."""
    return input_specs(config, grouping), output_specs(config, available_outputs(config, grouping))
