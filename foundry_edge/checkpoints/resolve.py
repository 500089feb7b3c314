"""Turn what a user names on the command line into a model: a preset, `default`, or a checkpoint."""

from __future__ import annotations

from pathlib import Path

from foundry_edge.contracts.artifacts import PRESET_SEED  # noqa: F401 (callers import it from here too)
from foundry_edge.errors import FoundryError

BUNDLED = {
    # Synthetic-shape demo weights made by recipes/bundled_default.py (see weights/bundled.json).
    "default": "foundry-edge-synthetic.pt",
    "default-teacher": "pointjepa-small-synthetic.pt",
}
WEIGHTS_DIR = Path(__file__).parents[1] / "weights"


def bundled_path(name: str) -> Path:
    path = WEIGHTS_DIR / BUNDLED[name]
    if not path.is_file():
        raise FoundryError(f"the bundled weights {path.name!r} are missing from this installation; "
                           "reinstall foundry-edge or pass a checkpoint path")
    return path


# The seed of a preset's random weights in every command (export, run, verify, inspect, evaluate, profile), so a
# preset names the same weights everywhere: `verify model.onnx --against PRESET` compares like with like.


def load_model(spec: str, seed: int | None = PRESET_SEED, **overrides):
    """(preset name | 'default' | 'default-teacher' | checkpoint path) -> (PointModel, info dict).

    A preset gives random weights drawn from `seed` (the global RNG is left as it was); `seed=None` draws
    from the global RNG instead (training seeds that itself). Overrides apply to presets only (a
    checkpoint's architecture is fixed by its weights).
    """
    from foundry_edge.models.registry import PRESETS, create_model

    if spec in PRESETS:
        if seed is None:
            model = create_model(spec, **overrides)
        else:
            import torch

            with torch.random.fork_rng():
                torch.manual_seed(seed)
                model = create_model(spec, **overrides)
        weights = "random initialisation" + ("" if seed is None else f", seed {seed}")
        return model, {"source": "preset", "name": spec, "weights": weights, "seed": seed,
                       "class_names": class_names_of(model.config)}
    path = bundled_path(spec) if spec in BUNDLED else Path(spec)
    if spec not in BUNDLED and not path.exists():
        raise FoundryError(f"{spec!r} is neither a preset ({', '.join(PRESETS)}), 'default', "
                           "nor an existing checkpoint file")
    if overrides:
        raise FoundryError("configuration overrides apply to presets only; a checkpoint fixes its architecture")
    from foundry_edge.checkpoints.format import checkpoint_hash
    from foundry_edge.checkpoints.importers import import_checkpoint

    model, report, layout = import_checkpoint(path)
    return model, {"source": "checkpoint", "path": str(path), "layout": layout,
                   "sha256": checkpoint_hash(path), "load_report": report.to_dict(),
                   "class_names": class_names_of(model.config, spec)}


def class_names_of(config, spec: str = "") -> list | None:
    """The classifier's class names, index order: the bundled weights' (weights/bundled.json data.classes),
    else the config's `extra["class_names"]`; None without a head or where no names match its size."""
    from foundry_edge.runtimes.pytorch import config_class_names

    names = None
    if spec in BUNDLED:
        import json

        names = json.loads((WEIGHTS_DIR / "bundled.json").read_text(encoding="utf-8"))["data"]["classes"]
    return config_class_names(config, names)


def open_model(spec, runtime: str | None = None, **opts):
    """A (not yet loaded) Runtime for anything a user names: a preset, 'default' or a checkpoint is loaded here
    and run by TorchRuntime; an .onnx or a .plan/.engine (or a model object) goes to runtimes.open_runtime.

    `opts`: torch (device, overrides, threads, seed), ort (optimization, threads), trt (cuda_graph, trt_module,
    cuda, sidecar_check).
    """
    from foundry_edge.runtimes import model_kind, open_runtime

    if not isinstance(spec, (str, Path)) or model_kind(spec) != "torch" or runtime not in (None, "torch"):
        return open_runtime(spec, runtime, **opts)  # it also refuses a preset on another runtime, in one line
    from foundry_edge.runtimes.pytorch import TorchRuntime

    overrides, seed = opts.pop("overrides", None) or {}, opts.pop("seed", PRESET_SEED)
    model, info = load_model(str(spec), seed=seed, **overrides)
    return TorchRuntime(model, info=info, **opts)
