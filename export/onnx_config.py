"""What one ONNX export of a PointModel declares, in one place (the optimum-onnx OnnxConfig idea).

Input and output names, dtypes and dims (a string dim is dynamic), the TensorRT profile of every
dynamic axis, the example clouds, the shapes validation runs at, and the tolerances. Generic export
code reads this and never asks which model it exports.

    graph grouping: points (batch, num_points, 3) raw -> outputs
    host grouping:  neighbourhoods (batch, G, K, 3), centers (batch, G, 3) -> outputs
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from foundry_edge.export.targets import DEFAULT_TARGET, EXPORTER_OPSETS
from foundry_edge.models.config import ModelConfig
from foundry_edge.runtimes.base import TensorSpec  # the runtimes' spec: a string dim is dynamic

# Every output a PointModel can give, in the order the exported graph lists them.
OUTPUT_ORDER = ("tokens", "centers", "assignment", "assignment_margin", "gate_prob", "logits", "seg_logits")
GROUPINGS = ("graph", "host")


def available_outputs(config: ModelConfig, grouping: str) -> tuple[str, ...]:
    """The outputs `config`'s model produces; seg_logits needs the points, so graph grouping only.

    With host grouping `centers` is an input the host already holds, so it is no output.
    """
    student = config.kind == "student"
    has = {"tokens": True, "centers": grouping == "graph", "assignment": student, "assignment_margin": student,
           "gate_prob": student and config.gate, "logits": bool(config.num_classes),
           "seg_logits": bool(config.num_part_classes) and grouping == "graph"}
    return tuple(name for name in OUTPUT_ORDER if has[name])


@dataclass(frozen=True)
class Tolerances:
    """FP32 ONNX Runtime vs PyTorch: relative max error, worst per-cloud cosine, int agreement."""

    max_rel: float = 1e-4  # max |onnx - torch| / max |torch|
    min_cosine: float = 0.99999
    min_agreement: float = 1.0  # assignment indices must match exactly in FP32


@dataclass(frozen=True)
class PointModelOnnxConfig:
    model: ModelConfig
    grouping: str
    outputs: tuple
    num_points: int  # trace size, static size, and the profile's opt
    batch: int  # trace batch (>= 2 when the batch is dynamic)
    dynamic_batch: bool
    dynamic_points: bool
    max_batch: int
    max_points: int
    opset: int  # the written file's; export/targets.py says which the target takes
    target: str = DEFAULT_TARGET  # the TensorRT the file is for (export/targets.py)
    tolerances: Tolerances = field(default_factory=Tolerances)

    @property
    def export_opset(self) -> int:
        """The opset the exporter writes: opset 17 is reached from 18 by export/rewrites.py."""
        return max(self.opset, min(EXPORTER_OPSETS))

    @property
    def min_points(self) -> int:
        """FPS needs G distinct points and kNN K of them."""
        return max(self.model.num_groups, self.model.group_size)

    def _batch_dim(self):
        return "batch" if self.dynamic_batch else self.batch

    def input_specs(self) -> list[TensorSpec]:
        b, m = self._batch_dim(), self.model
        if self.grouping == "host":
            return [TensorSpec("neighbourhoods", "float32", (b, m.num_groups, m.group_size, 3)),
                    TensorSpec("centers", "float32", (b, m.num_groups, 3))]
        n = "num_points" if self.dynamic_points else self.num_points
        return [TensorSpec("points", "float32", (b, n, 3))]

    def output_specs(self) -> list[TensorSpec]:
        b, m = self._batch_dim(), self.model
        n = "num_points" if self.dynamic_points else self.num_points
        g = m.num_groups
        shapes = {"tokens": ("float32", (b, g, m.token_dim)), "centers": ("float32", (b, g, 3)),
                  "assignment": ("int64", (b, g)), "assignment_margin": ("float32", (b, g)),
                  "gate_prob": ("float32", (b, g)),
                  "logits": ("float32", (b, m.num_classes)), "seg_logits": ("float32", (b, n, m.num_part_classes))}
        return [TensorSpec(name, *shapes[name]) for name in self.outputs]

    def profiles(self) -> dict[str, list[int]]:
        """TensorRT min/opt/max per dynamic axis (opt batch 1: one cloud at a time on the edge)."""
        out = {}
        if self.dynamic_batch:
            out["batch"] = [1, 1, self.max_batch]
        if self.dynamic_points:
            out["num_points"] = [self.min_points, self.num_points, self.max_points]
        return out

    def validation_shapes(self) -> list[tuple[int, int]]:
        """(batch, points) for the parity runs: the trace shape, then another on every dynamic axis
        (host grouping takes any point count: the host groups it to G x K)."""
        second_batch = self.batch
        if self.dynamic_batch:
            second_batch = self.batch + 1 if self.batch < self.max_batch else self.batch - 1
        second_points = self.num_points
        if self.dynamic_points or self.grouping == "host":
            second_points = min(self.max_points, self.num_points + max(1, self.num_points // 4))
        shapes = [(self.batch, self.num_points), (second_batch, second_points)]
        return shapes[:1] if shapes[0] == shapes[1] else shapes

    def preprocessing(self) -> dict:
        m = self.model
        return {"normalize": "centre-unit-sphere" if m.normalize_input else "none",
                "in_graph": self.grouping == "graph", "num_points": self.num_points,
                "num_groups": m.num_groups, "group_size": m.group_size, "fps_start": "farthest-from-centroid",
                "method": m.grouping, "fps_candidates": m.fps_candidates}

    def feed(self, points: np.ndarray) -> dict[str, np.ndarray]:
        """(B, N, 3) raw clouds -> this graph's inputs (host grouping runs foundry_edge.data.preprocess)."""
        from foundry_edge.data.preprocess import feed_from_manifest

        return feed_from_manifest(points, self.preprocessing())


def example_clouds(batch: int, num_points: int, seed: int) -> np.ndarray:
    """(B, N, 3) float32 noisy ellipsoids, off-centre and unscaled: deterministic for a seed."""
    rng = np.random.default_rng(seed)
    pts = rng.normal(size=(batch, num_points, 3))
    pts /= np.linalg.norm(pts, axis=-1, keepdims=True)
    pts = pts * rng.uniform(0.3, 2.0, size=(batch, 1, 3)) + rng.normal(size=(batch, 1, 3))
    return (pts + 0.01 * rng.normal(size=pts.shape)).astype(np.float32)
