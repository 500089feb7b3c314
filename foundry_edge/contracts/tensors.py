"""Tensor specs: the name, dtype and dims of a graph's input or output (a string dim is dynamic).

Export writes them to the manifest, every runtime checks feeds against them, the builder derives
TensorRT profiles from their dynamic dims.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple, Union

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
