"""What one ONNX export of a PointModel declares, in one place (the optimum-onnx OnnxConfig idea).

Input and output names, dtypes and dims (a string dim is dynamic), the TensorRT profile of every
dynamic axis, the shapes validation runs at, and the tolerance row (runtimes.compare.TOLERANCES). Generic export
code reads this and never asks which model it exports.

    graph grouping: points (batch, num_points, 3) raw -> outputs
    host grouping:  neighbourhoods (batch, G, K, 3), centers (batch, G, 3) -> outputs
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from foundry_edge.export.targets import DEFAULT_TARGET, EXPORTER_OPSETS
from foundry_edge.models.config import ModelConfig
from foundry_edge.contracts.preprocessing import Preprocessing
from foundry_edge.contracts.tensors import TensorSpec, input_specs, output_specs
from foundry_edge.runtimes.compare import TOLERANCES, Tolerance

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
    tolerances: Tolerance = TOLERANCES["export"]  # FP32 ONNX Runtime vs PyTorch (runtimes.compare)

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

    def _points_dim(self):
        return "num_points" if self.dynamic_points else self.num_points

    def input_specs(self) -> list[TensorSpec]:
        return input_specs(self.model, self.grouping, self._batch_dim(), self._points_dim())

    def output_specs(self) -> list[TensorSpec]:
        return output_specs(self.model, self.outputs, self._batch_dim(), self._points_dim())

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

    def preprocessing_spec(self) -> Preprocessing:
        m = self.model
        return Preprocessing(self.grouping, self.num_points, m.num_groups, m.group_size, m.normalize_input, m.grouping,
                             m.fps_candidates)

    def preprocessing(self) -> dict:
        """The manifest's `preprocessing` section."""
        return self.preprocessing_spec().to_manifest()

    def feed(self, points: np.ndarray) -> dict[str, np.ndarray]:
        """(B, N, 3) raw clouds -> this graph's inputs (host grouping runs foundry_edge.data.preprocess)."""
        from foundry_edge.data.preprocess import feed_for

        return feed_for(points, self.preprocessing_spec())

