"""PyTorch -> ONNX with the dynamo exporter, as measured to work (docs/platform-notes.md, "Exporter (torch.onnx dynamo)").

- `torch.onnx.export(..., dynamo=True, external_data=False)`: one self-contained file.
- opset 18-20: at 23+ the exporter emits the ONNX Attention op, which TensorRT builders reject; below
  18 it may silently stay at 18, so opset 17 (TensorRT 8.x) is a conversion afterwards (rewrites.py).
- an example batch >= 2 where the batch is dynamic: a batch of 1 can silently export a static batch.
- dynamic axes as torch.export.Dim; the unrolled FPS loop keeps the point count symbolic.
- constants folded without the exporter's rewrite rules (see fold_constants).
The export-friendly ops (no OneHot, MatMul grouping, TopK with constant K) are the model's own
(foundry_edge/models/foundry.py, grouping.py); validate.py checks the written graph for them.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings

from foundry_edge.data.synthetic import example_clouds
from foundry_edge.export.onnx_config import PointModelOnnxConfig


def export_module(model, config: PointModelOnnxConfig):
    """The module the graph is traced from (and validation runs): tuple outputs in declared order."""
    import torch

    class GraphGrouping(torch.nn.Module):
        """(B, N, 3) raw points -> outputs: normalisation, FPS and kNN inside the graph."""

        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, points):
            out = self.model(points)
            return tuple(out[name] for name in config.outputs)

    class HostGrouping(torch.nn.Module):
        """(B, G, K, 3) neighbourhoods, (B, G, 3) centres from foundry_edge.data.preprocess -> outputs."""

        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, neighbourhoods, centers):
            out = self.model.forward_grouped(neighbourhoods, centers)
            return tuple(out[name] for name in config.outputs)

    return (GraphGrouping() if config.grouping == "graph" else HostGrouping()).eval()


def dynamic_shapes(config: PointModelOnnxConfig) -> tuple:
    """torch.export.Dim per dynamic axis, positional like the module's inputs."""
    from torch.export import Dim

    batch = Dim("batch", min=1, max=max(config.max_batch, config.batch)) if config.dynamic_batch else None
    if config.grouping == "host":
        return ({0: batch} if batch else None, {0: batch} if batch else None)
    axes = {}
    if batch is not None:
        axes[0] = batch
    if config.dynamic_points:
        axes[1] = Dim("num_points", min=config.min_points, max=config.max_points)
    return (axes or None,)


@contextlib.contextmanager
def _quiet_logger(name: str):
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def torch2onnx(model, config: PointModelOnnxConfig, seed: int = 0):
    """PointModel -> onnx.ModelProto (fp32) at config.export_opset, traced at (config.batch, config.num_points)."""
    import torch

    module = export_module(model, config)
    feed = config.feed(example_clouds(config.batch, config.num_points, seed))
    args = tuple(torch.from_numpy(feed[spec.name]) for spec in config.input_specs())
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _quiet_logger("torch.onnx"):
        warnings.simplefilter("ignore")  # the exporter's progress lines, deprecation and torchvision notes
        program = torch.onnx.export(
            module, args, None, dynamo=True, external_data=False, opset_version=config.export_opset,
            input_names=[s.name for s in config.input_specs()], output_names=list(config.outputs),
            dynamic_shapes=dynamic_shapes(config), verbose=False, optimize=False)
    return fold_constants(program.model)


def fold_constants(model):
    """onnx_ir.Model -> ModelProto with constants folded, and nothing else rewritten.

    Not the exporter's own `optimize=True`: its rewrite rules match constants with abs_tol 1e-8, so
    `x + 1e-8` counts as `x + 0` and is dropped (onnxscript 0.7), which turned the segmentation
    head's 1 / (d + 1e-8) into 1 / 0 = NaN. Folding alone still leaves every shape, axis and TopK K
    a constant, as TensorRT needs.
    """
    import onnx_ir as ir
    import onnx_ir.passes.common as common
    import onnxscript.optimizer

    onnxscript.optimizer.fold_constants(model)
    ir.passes.Sequential(
        common.RemoveUnusedNodesPass(),
        common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
        common.DeduplicateInitializersPass(),
        common.CommonSubexpressionEliminationPass(),
        common.RemoveUnusedNodesPass(),
    )(model)
    return ir.serde.serialize_model(model)
