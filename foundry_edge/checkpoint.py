"""foundry-edge's checkpoint format, safe loading, and strict weight loading with a report.

A checkpoint is a plain dict saved with torch.save and read back with `weights_only=True`, so a
hostile pickle cannot run code:

    {"format": "foundry-edge", "format_version": 1,
     "config": ModelConfig.to_dict(), "state_dict": {...},
     "provenance": {"created", "foundry_edge", "torch", "source", ...}}

Foreign layouts (Point-JEPA, Point-MAE, Point-BERT) are mapped by `foundry_edge.importers`.
"""

from __future__ import annotations

import datetime as _dt
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from foundry_edge import __version__
from foundry_edge.errors import FoundryError
from foundry_edge.fileio import atomic_path, sha256_file

FORMAT = "foundry-edge"
FORMAT_VERSION = 1


@dataclass
class LoadReport:
    """What a weight load did: every key is accounted for."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)  # "key: checkpoint (a, b) vs model (c, d)"
    ignored: list[str] = field(default_factory=list)  # known-irrelevant keys (EMA copies, predictors)

    def summary(self) -> str:
        return (f"loaded {len(self.loaded)}, missing {len(self.missing)}, unexpected {len(self.unexpected)}, "
                f"shape mismatches {len(self.mismatched)}, ignored {len(self.ignored)}")

    def to_dict(self) -> dict:
        return {"loaded": len(self.loaded), "missing": self.missing, "unexpected": self.unexpected,
                "mismatched": self.mismatched, "ignored": len(self.ignored)}


def _preview(keys: list[str], limit: int = 5) -> str:
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_weights(model, state_dict: dict, *, strict: bool = True, allow_missing: tuple[str, ...] = (),
                 ignored: list[str] | None = None, source: str = "checkpoint") -> LoadReport:
    """Load `state_dict` into `model`, accounting for every key.

    strict=True refuses any missing, unexpected or mis-shaped key, naming them: a load that would
    silently leave part of the model at its initial values is an error. Keys starting with a prefix
    in `allow_missing` may stay at their initial values (e.g. a head the checkpoint never had).
    """
    import torch

    own = model.state_dict()
    report = LoadReport(ignored=list(ignored or []))
    usable = {}
    for key, value in state_dict.items():
        if key not in own:
            report.unexpected.append(key)
        elif not isinstance(value, torch.Tensor):
            report.mismatched.append(f"{key}: not a tensor ({type(value).__name__})")
        elif tuple(value.shape) != tuple(own[key].shape):
            report.mismatched.append(f"{key}: {source} {tuple(value.shape)} vs model {tuple(own[key].shape)}")
        else:
            usable[key] = value
    report.missing = [k for k in own if k not in state_dict and not k.startswith(allow_missing)]
    report.loaded = sorted(usable)
    if strict and (report.missing or report.unexpected or report.mismatched):
        parts = []
        if report.mismatched:
            parts.append(f"shape mismatches: {_preview(report.mismatched)}")
        if report.missing:
            parts.append(f"missing keys: {_preview(report.missing)}")
        if report.unexpected:
            parts.append(f"unexpected keys: {_preview(report.unexpected)}")
        raise FoundryError(f"{source} does not fit the model {model.config.name!r} ({'; '.join(parts)}); "
                           "is it a checkpoint of another architecture or preset?")
    model.load_state_dict(usable, strict=False)
    return report


def torch_load_safe(path: str | os.PathLike) -> object:
    """torch.load with weights_only=True; every failure becomes one FoundryError line."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FoundryError(f"checkpoint {str(path)!r} does not exist or is not a file")
    if path.stat().st_size == 0:
        raise FoundryError(f"checkpoint {str(path)!r} is empty")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FoundryError(f"refusing to load {str(path)!r}: it holds objects that a weights-only load does not "
                           f"allow ({first}); only load checkpoints you trust, re-saved as plain tensors") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FoundryError(f"cannot read checkpoint {str(path)!r}: it is truncated or not a PyTorch file ({msg})") from None


def save_checkpoint(path: str | os.PathLike, model, provenance: dict | None = None, extra: dict | None = None) -> Path:
    """Write a foundry-edge checkpoint atomically; `extra` holds e.g. optimizer state for resuming."""
    import torch

    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "provenance": {
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "foundry_edge": __version__,
            "torch": torch.__version__,
            **(provenance or {}),
        },
    }
    if extra:
        payload.update(extra)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def is_native(payload: object) -> bool:
    return isinstance(payload, dict) and payload.get("format") == FORMAT


def model_from_native(payload: dict, source: str = "checkpoint", strict: bool = True):
    """(payload of a foundry-edge checkpoint) -> (PointModel in eval mode, LoadReport)."""
    from foundry_edge.models.config import ModelConfig
    from foundry_edge.models.model import PointModel

    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise FoundryError(f"{source} has checkpoint format version {version!r}; this foundry-edge reads version "
                           f"{FORMAT_VERSION}: upgrade foundry-edge or re-save the checkpoint")
    if not isinstance(payload.get("config"), dict) or not isinstance(payload.get("state_dict"), dict):
        raise FoundryError(f"{source} is a foundry-edge checkpoint without a 'config' and 'state_dict'")
    model = PointModel(ModelConfig.from_dict(payload["config"]))
    report = load_weights(model, payload["state_dict"], strict=strict, source=source)
    return model.eval(), report


def checkpoint_hash(path: str | os.PathLike) -> str:
    return sha256_file(path)
