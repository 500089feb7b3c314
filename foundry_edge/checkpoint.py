"""foundry-edge's checkpoint format, safe loading, and strict weight loading with a report.

A checkpoint is a plain dict saved with torch.save and read back with `weights_only=True`, so a
hostile pickle cannot run code:

    {"format": "foundry-edge", "format_version": 1,
     "config": ModelConfig.to_dict(), "state_dict": {...},
     "provenance": {"created", "foundry_edge", "torch", "source", ...}}

Foreign layouts (Point-JEPA, Point-MAE, Point-BERT) are mapped by `foundry_edge.importers`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import pickle
import re
import types
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
    notes: list[str] = field(default_factory=list)  # what an import changed in meaning (e.g. a dropped CLS token)

    def summary(self) -> str:
        return (f"loaded {len(self.loaded)}, missing {len(self.missing)}, unexpected {len(self.unexpected)}, "
                f"shape mismatches {len(self.mismatched)}, ignored {len(self.ignored)}")

    def to_dict(self) -> dict:
        return {"loaded": len(self.loaded), "missing": self.missing, "unexpected": self.unexpected,
                "mismatched": self.mismatched, "ignored": len(self.ignored), "notes": self.notes}


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
            report.mismatched.append(f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(own[key].shape)}")
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


# Foreign classes that are only containers of plain values (Lightning's `hyper_parameters`,
# argparse options). A weights-only load rebuilds them as the builtin container under their name;
# the foreign class is never imported. Anything else foreign is refused, never allowlisted.
PLAIN_CONTAINERS = {
    "lightning_fabric.utilities.data.AttributeDict": dict,
    "lightning.fabric.utilities.data.AttributeDict": dict,
    "pytorch_lightning.utilities.parsing.AttributeDict": dict,
    "argparse.Namespace": types.SimpleNamespace,
}


def torch_load_safe(path: str | os.PathLike) -> object:
    """torch.load with weights_only=True; every failure becomes one FoundryError line."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FoundryError(f"checkpoint {str(path)!r} does not exist or is not a file")
    if path.stat().st_size == 0:
        raise FoundryError(f"checkpoint {str(path)!r} is empty")
    if not _is_torch_file(path):
        head = path.read_bytes()[:16]
        raise FoundryError(f"cannot read checkpoint {str(path)!r}: it is not a PyTorch file (it starts with {head!r}); "
                           "pass a file written by torch.save")
    try:
        with _plain_containers(torch):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise FoundryError(f"refusing to load {str(path)!r}: it holds {_refused_objects(path, exc)}, which a "
                           "weights-only load does not allow because unpickling them could run code; if you "
                           "trust the file, re-save only its tensors (e.g. torch.save({'state_dict': "
                           "ckpt['state_dict']}, 'weights.pt')) and load that") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError) as exc:
        msg = _first_line(str(exc)) or type(exc).__name__
        raise FoundryError(f"cannot read checkpoint {str(path)!r}: it is truncated or not a PyTorch file ({msg})") from None


def _plain_containers(torch):
    """Allow PLAIN_CONTAINERS by name during one load (PyTorch 2.6+ can map a name to another object)."""
    if torch.__version__ < "2.6":
        return contextlib.nullcontext()
    return torch.serialization.safe_globals([(container, name) for name, container in PLAIN_CONTAINERS.items()])


def _is_torch_file(path: Path) -> bool:
    """torch.save writes a zip archive, or (before PyTorch 1.6) a pickle, which starts with PROTO (0x80)."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _refused_objects(path: Path, exc: Exception) -> str:
    """Name what a weights-only load refused: the foreign globals, read without unpickling."""
    import torch

    try:  # PyTorch 2.5+
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except (AttributeError, RuntimeError, ValueError, OSError):  # not a zip checkpoint: torch's message
        names = []
    names = [n for n in names if n not in PLAIN_CONTAINERS]
    if names:
        return f"objects of {_preview(names)}"
    found = re.search(r"(Unsupported global: GLOBAL \S+|unsupported GLOBAL \S+|Unsupported operand \d+|"
                      r"Can only [^.\n]+|unrecognized function [^\n]+)", str(exc))
    return f"objects that are not plain tensors and containers ({found.group(1) if found else type(exc).__name__})"


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
            "torch": str(torch.__version__),  # a TorchVersion would not load weights-only
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
