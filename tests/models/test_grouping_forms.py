"""The graph FPS forms against the numpy twin, bit for bit: eager torch, ONNX Runtime after export, TensorRT's parser.

The forms themselves were chosen by benchmarks/graph_fps_forms.py (results in benchmarks/results/graph_fps_forms.md).
"""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import pytest
import torch

from foundry_edge.data.grouping import exact
from foundry_edge.models.grouping import farthest_point_sample
from foundry_edge.models.scalable_grouping import farthest_point_sample_from
from tests.conftest import RTX, needs_rtx

KINDS = ("random", "duplicated", "grid")


def cloud(kind: str, batch: int, n: int, seed: int = 0) -> np.ndarray:
    """(B, N, 3) float32: uniform; every point four times over; a coarse grid (equal distances everywhere)."""
    rng = np.random.default_rng(seed)
    if kind == "random":
        return rng.random((batch, n, 3), dtype=np.float32)
    if kind == "duplicated":
        unique = rng.random((batch, -(-n // 4), 3), dtype=np.float32)
        return rng.permuted(np.repeat(unique, 4, axis=1)[:, :n], axis=1)
    side = round(n ** (1 / 3)) + 1
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3).astype(np.float32) * 0.5
    return np.stack([grid[rng.permutation(len(grid))[:n]] for _ in range(batch)])


class Fps(torch.nn.Module):
    """(B, N, 3) -> (B, G) indices: graph FPS alone, or the Loop form started from the centroid."""

    def __init__(self, num_samples: int, loop: bool = False):
        super().__init__()
        self.num_samples, self.loop = num_samples, loop

    def forward(self, points):
        if self.loop:
            return farthest_point_sample_from(points, self.num_samples, points.mean(dim=1, keepdim=True))
        return farthest_point_sample(points, self.num_samples)


def export_fps(module: Fps, path) -> None:
    """As export/torch2onnx.py: dynamo, opset 18, dynamic batch (traced at 2) and points, constants folded."""
    import onnx
    from torch.export import Dim

    from foundry_edge.export.torch2onnx import fold_constants

    dims = {0: Dim("batch", min=1, max=8), 1: Dim("num_points", min=module.num_samples, max=4096)}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module.eval(), (torch.rand(2, 128, 3),), None, dynamo=True, external_data=False,
                                    opset_version=18, input_names=["points"], output_names=["indices"],
                                    dynamic_shapes=(dims,), optimize=False)
    onnx.save(fold_constants(program.model), str(path))


@pytest.fixture(scope="module", params=[False, True], ids=["unrolled", "loop"])
def exported(request, tmp_path_factory):
    pytest.importorskip("onnxruntime")
    module = Fps(12, loop=request.param)
    path = tmp_path_factory.mktemp("fps") / "fps.onnx"
    export_fps(module, path)
    return module, path


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("batch", [1, 3])
def test_eager_fps_is_the_numpy_twin(kind, batch):
    points = cloud(kind, batch, 200)
    want = exact.farthest_point_sample(points, 24)
    assert np.array_equal(farthest_point_sample(torch.from_numpy(points), 24).numpy(), want)
    start = torch.from_numpy(points).mean(dim=1, keepdim=True)
    assert np.array_equal(farthest_point_sample_from(torch.from_numpy(points), 24, start).numpy(), want)


def test_exported_fps_is_the_numpy_twin_in_onnx_runtime(exported):
    """At batches 1 and 3 and at point counts other than the trace's 128."""
    from foundry_edge.runtimes.ort import make_session

    module, path = exported
    session = make_session(path, threads=2)
    for kind in KINDS:
        for batch, n in ((1, 128), (3, 200), (3, 97)):
            points = cloud(kind, batch, n, seed=batch)
            want = exact.farthest_point_sample(points, module.num_samples)
            assert np.array_equal(session.run(None, {"points": points})[0], want), (kind, batch, n)


@pytest.mark.trt
@needs_rtx
def test_exported_fps_parses_in_tensorrt(exported):
    from foundry_edge.export.trt_check import check_with_tensorrt

    result = check_with_tensorrt(exported[1], trt=pytest.importorskip(RTX))
    assert result.passed, result.detail()


def test_scalable_grid_cells_round_as_the_numpy_twin():
    """1023 / extent as a tensor division, as numpy divides: torch's `float / tensor` is reciprocal * float, which
    rounds differently and moved points on a cell boundary into another cell than the host's."""
    import torch

    from foundry_edge.data.grouping import scalable as host
    from foundry_edge.models.scalable_grouping import grid_cells

    rng = np.random.default_rng(0)
    for _ in range(5):
        extent = np.float32(rng.uniform(0.5, 3.0))
        cells = np.arange(1 << 10, dtype=np.float32)
        # points at every cell boundary of one axis, with random other coordinates inside the cube
        points = rng.uniform(0, extent, size=(len(cells), 3)).astype(np.float32)
        points[:, 0] = cells * (extent / np.float32(1023))
        points[0], points[-1] = 0, extent  # the bounding cube is [0, extent]^3
        assert np.array_equal(grid_cells(torch.from_numpy(points)[None])[0].numpy(), host.grid_cells(points))
