"""Which TensorRT an export is for: the opsets and IR versions it may be written at, and the graph
rewrites it needs.

One table (docs/platform-notes.md, "TensorRT versions and ONNX opsets"; onnx-tensorrt's changelog): TensorRT
8.x documents ONNX opsets up to 17, and 8.5 has no LayerNormalization importer. The dynamo exporter writes opset 18 at the lowest,
so opset 17 is reached by converting the written graph (export/rewrites.py).

The IR version is the lowest that holds the opset (onnx's VERSION_TABLE: opsets 17-18 -> IR 8, 19-20
-> IR 9), not the exporter's own (IR 10 with torch 2.13): ONNX Runtime reads IR <= 9 before 1.18, so an
IR-10 file does not load in the 1.16 / 1.17 builds pyproject admits (ORT 1.16 reads opsets up to 19,
1.17 up to 20). TensorRT's parsers were built against onnx 1.12 (8.5) and 1.13.1 (8.6), both IR 8;
a newer IR only makes them warn. tests/export/test_onnx_versions.py loads every target's file in the oldest
ONNX Runtime and onnx pyproject admits.

| target | TensorRT | JetPack         | opset / IR (default first)     | rewrites                                    |
|--------|----------|-----------------|--------------------------------|---------------------------------------------|
| trt8.5 | 8.5      | 5.1             | 17 / 8                         | opset 17, LayerNormalization -> primitives |
| trt8.6 | 8.6      | 6.0             | 17 / 8                         | opset 17                                    |
| trt10  | 10.x     | 6.1 - 7.2       | 18 / 8, 19 / 9, 20 / 9, 17 / 8 | opset 17 only when asked                    |
| trt11  | 11.x     | 7.2.2 and later | 18 / 8, 19 / 9, 20 / 9, 17 / 8 | opset 17 only when asked                    |
"""

from __future__ import annotations

from dataclasses import dataclass

from foundry_edge.errors import FoundryError

EXPORTER_OPSETS = (18, 19, 20)  # what torch.onnx's dynamo exporter writes (23+ emits Attention)
CONVERTED_OPSET = 17  # reached from 18 with onnx.version_converter
_TRT10_FORMATS = ((18, 8), (19, 9), (20, 9), (17, 8))


@dataclass(frozen=True)
class Target:
    name: str
    tensorrt: str
    jetpack: str
    formats: tuple  # (opset, IR version) pairs the file may be written at, the default first
    native_layer_norm: bool = True

    @property
    def opsets(self) -> tuple:
        """Valid opsets, the default first."""
        return tuple(opset for opset, _ in self.formats)

    @property
    def default_opset(self) -> int:
        return self.opsets[0]

    def ir_version(self, opset: int) -> int:
        """The IR version a file at `opset` is stamped with for this target."""
        return dict(self.formats)[opset]

    def rewrites(self, opset: int) -> tuple:
        """Names of the rewrites (export/rewrites.py) a graph at `opset` needs for this TensorRT, in order."""
        names = ("opset17",) if opset == CONVERTED_OPSET else ()
        return names + (() if self.native_layer_norm else ("decompose-layernorm",))

    def forbidden_ops(self) -> dict:
        """Ops this TensorRT's parser refuses beyond validate.FORBIDDEN_OPS, and why."""
        if self.native_layer_norm:
            return {}
        return {"LayerNormalization": f"TensorRT {self.tensorrt} has no importer for it (decompose it)"}


TARGETS = {t.name: t for t in (
    Target("trt8.5", "8.5", "5.1", ((17, 8),), native_layer_norm=False),
    Target("trt8.6", "8.6", "6.0", ((17, 8),)),
    Target("trt10", "10.x", "6.1-7.2", _TRT10_FORMATS),
    Target("trt11", "11.x", "7.2.2+", _TRT10_FORMATS),
)}
DEFAULT_TARGET = "trt10"


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise FoundryError(f"target {name!r} is not known: expected one of {', '.join(TARGETS)} "
                           "(the TensorRT on the device: JetPack 5.1 -> trt8.5, 6.0 -> trt8.6, 6.1-7.2 -> trt10)")
    return TARGETS[name]


def opset_problem(target: Target, opset: int) -> str | None:
    """Why `opset` cannot be written for `target`, or None when it can."""
    if opset in target.opsets:
        return None
    if target.opsets == (CONVERTED_OPSET,):
        return (f"--target {target.name} needs opset {CONVERTED_OPSET} (TensorRT {target.tensorrt} documents ONNX "
                f"opsets up to 17), got --opset {opset}: drop --opset")
    return (f"opset {opset} is not exported for {target.name}: expected one of {sorted(target.opsets)} (the exporter "
            "writes 18-20, 17 by conversion; 23 and above emit the Attention op TensorRT rejects)")
