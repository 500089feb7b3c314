"""Turn what a user names on the command line into a model: a preset, `default`, or a checkpoint."""

from __future__ import annotations

from pathlib import Path

from foundry_edge.errors import FoundryError

BUNDLED = {
    # Synthetic-shape demo weights made by recipes/bundled_default.py (see weights/bundled.json).
    "default": "foundry-edge-synthetic.pt",
    "default-teacher": "pointjepa-small-synthetic.pt",
}
WEIGHTS_DIR = Path(__file__).parent / "weights"


def bundled_path(name: str) -> Path:
    path = WEIGHTS_DIR / BUNDLED[name]
    if not path.is_file():
        raise FoundryError(f"the bundled weights {path.name!r} are missing from this installation; "
                           "reinstall foundry-edge or pass a checkpoint path")
    return path


def load_model(spec: str, **overrides):
    """(preset name | 'default' | 'default-teacher' | checkpoint path) -> (PointModel, info dict).

    A preset gives freshly initialised weights; overrides apply to presets only (a checkpoint's
    architecture is fixed by its weights).
    """
    from foundry_edge.models.registry import PRESETS, create_model

    if spec in PRESETS:
        model = create_model(spec, **overrides)
        return model, {"source": "preset", "name": spec, "weights": "random initialisation"}
    path = bundled_path(spec) if spec in BUNDLED else Path(spec)
    if spec not in BUNDLED and not path.exists():
        raise FoundryError(f"{spec!r} is neither a preset ({', '.join(PRESETS)}), 'default', "
                           "nor an existing checkpoint file")
    if overrides:
        raise FoundryError("configuration overrides apply to presets only; a checkpoint fixes its architecture")
    from foundry_edge.checkpoint import checkpoint_hash
    from foundry_edge.importers import import_checkpoint

    model, report, layout = import_checkpoint(path)
    return model, {"source": "checkpoint", "path": str(path), "layout": layout,
                   "sha256": checkpoint_hash(path), "load_report": report.to_dict()}
