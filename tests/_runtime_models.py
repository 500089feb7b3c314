"""Tiny ONNX exports with a manifest, for the runtime and engine tests (shared by test_runtimes*/test_trt*).

Until `foundry_edge.export.export_model` lands, this exports with torch.onnx.export (dynamo, opset 18,
external_data=False) and writes the manifest in the docs/contracts.md schema.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from conftest import tiny_overrides

SMALL = dict(num_points=128, num_groups=8, depth=1)  # smaller than TINY: the dynamo export dominates test time


def small_overrides(preset: str) -> dict:
    out = dict(tiny_overrides(preset), **SMALL)
    if "num_supertokens" in out:
        out.update(num_supertokens=3, gate_budget=2)
    return out


def export_tiny(preset: str, folder: Path, with_manifest: bool = True) -> Path:
    """Export a small `preset` to folder/<preset>.onnx (+ manifest, + its weights as folder/<preset>.pt)."""
    import torch

    from foundry_edge.checkpoint import save_checkpoint
    from foundry_edge.fileio import write_json_atomic
    from foundry_edge.models import create_model
    from foundry_edge.runtimes.torch_runner import model_specs

    model = create_model(preset, **small_overrides(preset))
    points = torch.randn(2, model.config.num_points, 3, generator=torch.Generator().manual_seed(0))
    names = list(model(points))

    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, points):
            out = self.model(points)
            return tuple(out[name] for name in names)

    path = Path(folder) / f"{preset}.onnx"
    torch.onnx.export(Wrapper(), (points,), str(path), dynamo=True, external_data=False, opset_version=18,
                      input_names=["points"], output_names=names, verbose=False,
                      dynamic_shapes={"points": {0: torch.export.Dim("batch", min=1, max=8)}})
    save_checkpoint(Path(folder) / f"{preset}.pt", model)
    if with_manifest:
        inputs, outputs = model_specs(model.config)
        inputs = [s.to_dict() | {"shape": ["batch", model.config.num_points, 3]} for s in inputs]
        write_json_atomic(path.with_name(path.stem + ".manifest.json"), {
            "schema": "foundry-edge/manifest", "schema_version": 1,
            "model": {"name": preset, "kind": model.config.kind, "config": model.config.to_dict()},
            "onnx": {"file": path.name, "opset": 18, "precision": "fp32"},
            "grouping": "graph",
            "preprocessing": {"normalize": "centre-unit-sphere", "in_graph": True, "num_points": model.config.num_points,
                              "num_groups": model.config.num_groups, "group_size": model.config.group_size},
            "inputs": inputs, "outputs": [s.to_dict() for s in outputs if s.name in names],
            "profiles": {"batch": [1, 2, 4]}, "versions": {}, "checks": {"passed": True, "items": []}})
    return path



@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """preset -> ONNX path, exported once per session (the dynamo export dominates the test time)."""
    folder = tmp_path_factory.mktemp("onnx")
    cache = {}

    def get(preset):
        if preset not in cache:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cache[preset] = export_tiny(preset, folder)
        return cache[preset]

    return get
