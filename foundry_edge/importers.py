"""Checkpoint importers: foundry-edge's own format, and (to come) Point-JEPA, Point-MAE, Point-BERT."""

from __future__ import annotations

from foundry_edge.checkpoint import is_native, model_from_native, torch_load_safe
from foundry_edge.errors import FoundryError


def import_checkpoint(path, **kwargs):
    """(path) -> (PointModel, LoadReport, layout name)."""
    payload = torch_load_safe(path)
    if is_native(payload):
        model, report = model_from_native(payload, source=str(path))
        return model, report, "foundry-edge"
    raise FoundryError(f"{str(path)!r} is not a checkpoint layout foundry-edge knows")
