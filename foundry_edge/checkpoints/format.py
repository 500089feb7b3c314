"""foundry-edge's checkpoint format, safe loading, and strict weight loading with a report.

A checkpoint is a plain dict saved with torch.save and read back with `weights_only=True`, so a
hostile pickle cannot run code:

    {"format": "foundry-edge", "format_version": 1,
     "config": ModelConfig.to_dict(), "state_dict": {...},
     "provenance": {"created", "foundry_edge", "torch", "source", ...}}

Foreign layouts (Point-JEPA, Point-MAE, Point-BERT) are mapped by `foundry_edge.checkpoints.importers`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import pickle
import re
import types
import zipfile
from collections import OrderedDict
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
    refuse_non_finite(usable, source)
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


def refuse_non_finite(tensors: dict, source: str = "checkpoint") -> None:
    """Refuse weights holding NaN or Inf, naming the first such tensor: a model built from them prints a
    confident class for any cloud (a diverged run's last checkpoint is the usual source)."""
    for key, value in tensors.items():
        if value.is_floating_point() and not bool(value.isfinite().all()):
            bad = int((~value.isfinite()).sum())
            raise FoundryError(f"{source} holds non-finite weights: {key!r} has {bad} NaN/Inf of {value.numel()} values; "
                               "the model cannot compute anything meaningful: use an earlier checkpoint or retrain")


# Foreign classes that are only containers of plain values (Lightning's `hyper_parameters`,
# argparse options). A weights-only load rebuilds them as the builtin container under their name;
# the foreign class is never imported. Anything else foreign is refused, never allowlisted.
PLAIN_CONTAINERS = {
    "lightning_fabric.utilities.data.AttributeDict": dict,
    "lightning.fabric.utilities.data.AttributeDict": dict,
    "pytorch_lightning.utilities.parsing.AttributeDict": dict,
    "argparse.Namespace": types.SimpleNamespace,
}


class ForeignObjectsError(FoundryError):
    """A weights-only load refused a checkpoint because it pickles foreign classes (`.names`)."""

    def __init__(self, message: str, names: list[str]):
        super().__init__(message)
        self.names = names


def torch_load_safe(path: str | os.PathLike) -> object:
    """torch.load with weights_only=True; every failure becomes one FoundryError line.

    A file refused because it pickles foreign classes raises ForeignObjectsError, which
    `load_stubbing_foreign` can read the weights of.
    """
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
        names = foreign_globals(path)
        message = (f"refusing to load {str(path)!r}: it holds {_refused_objects(names, exc)}, which a weights-only "
                   "load does not allow because unpickling them could run code; if you trust the file, re-save only "
                   "its tensors (e.g. torch.save({'state_dict': ckpt['state_dict']}, 'weights.pt')) and load that")
        raise (ForeignObjectsError(message, names) if names else FoundryError(message)) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError) as exc:
        msg = _first_line(str(exc)) or type(exc).__name__
        raise FoundryError(f"cannot read checkpoint {str(path)!r}: it is truncated or not a PyTorch file ({msg})") from None


def load_stubbing_foreign(path: str | os.PathLike, containers: tuple[str, ...] = ("state_dict",)) -> tuple[dict, list[str]]:
    """(zip checkpoint that pickles foreign classes) -> (plain payload, stubbed "module.name"s).

    The fallback for ForeignObjectsError: torch's zip reader with `foundry_edge.checkpoints.restricted_pickle`,
    which answers every global off torch's weights-only allow list with an inert stub (never
    importing or running it). Only the weights survive: the first of `containers` present (or the
    whole file) must be a dict of plain tensors, else the file is refused; beside it only the plain
    values of `hyper_parameters` (None, bool, int, float, str, and lists or tuples of them) are kept.
    Every stub is discarded.
    """
    import torch

    from foundry_edge.checkpoints.restricted_pickle import stubbing_module

    if _is_torchscript(path):  # torch.load would hand it to torch.jit.load
        raise FoundryError(f"refusing to load {str(path)!r}: it is a TorchScript archive, not a checkpoint")
    module = stubbing_module(PLAIN_CONTAINERS)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=False, pickle_module=module)
    except (pickle.UnpicklingError, RuntimeError, TypeError, AttributeError, ValueError, KeyError, IndexError,
            EOFError) as exc:
        raise FoundryError(f"refusing to load {str(path)!r}: reading it with its foreign objects stubbed failed "
                           f"({_first_line(str(exc)) or type(exc).__name__}); re-save only its tensors") from None
    return _plain_payload(loaded, containers, str(path)), sorted(module.stubs)


def _plain_payload(loaded: object, containers: tuple[str, ...], name: str) -> dict:
    """The weights (plain tensors) and plain hyper-parameter values of a stubbed load; nothing else."""
    if type(loaded) not in (dict, OrderedDict):
        raise FoundryError(f"refusing to load {name!r}: it holds {_describe(loaded)}, not a dict with weights")
    key = next((k for k in containers if k in loaded), None)
    if key is None:
        return _plain_tensors(loaded, "it", name)
    hparams = loaded.get("hyper_parameters")
    plain = {k: v for k, v in hparams.items() if _is_plain_value(v)} if type(hparams) is dict else {}
    return {key: _plain_tensors(loaded[key], f"its {key!r}", name), "hyper_parameters": plain}


def _is_plain_value(value: object) -> bool:
    """None, bool, int, float, str, or a list/tuple of them: what the importers read from hyper_parameters
    (a radius that may be None, a list of transformation names)."""
    scalars = (type(None), bool, int, float, str)
    return type(value) in scalars or (type(value) in (list, tuple) and all(type(v) in scalars for v in value))


def _plain_tensors(weights: object, label: str, name: str) -> dict:
    """{str: torch.Tensor} detached from whatever the pickle attached, or a FoundryError naming the intruder."""
    import torch

    if type(weights) not in (dict, OrderedDict):
        raise FoundryError(f"refusing to load {name!r}: {label} is {_describe(weights)}, not a dict of tensors; "
                           "weights must be plain tensors")
    for key, value in weights.items():
        if type(key) is not str or type(value) not in (torch.Tensor, torch.nn.Parameter):
            raise FoundryError(f"refusing to load {name!r}: {label} holds {_describe(value)} at {key!r}, not a plain "
                               "tensor; foreign objects are stubbed only outside the weights")
    return {key: value.detach() for key, value in weights.items()}


def _describe(obj: object) -> str:
    from foundry_edge.checkpoints.restricted_pickle import Stub

    if isinstance(obj, Stub) or (isinstance(obj, type) and issubclass(obj, Stub)):
        return f"a stubbed {obj.foreign_name} object"
    return f"a {type(obj).__name__}"


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


def _is_torchscript(path: str | os.PathLike) -> bool:
    """torch.load's own test: a zip with constants.pkl is a TorchScript archive."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(n.endswith("constants.pkl") for n in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def foreign_globals(path: str | os.PathLike) -> list[str]:
    """The globals of a zip checkpoint that are neither torch-allowed nor PLAIN_CONTAINERS, read without unpickling."""
    from foundry_edge.checkpoints.restricted_pickle import checkpoint_globals, weights_only_globals

    allowed = weights_only_globals()
    return [n for n in checkpoint_globals(path) if n not in allowed and n not in PLAIN_CONTAINERS]


def _refused_objects(names: list[str], exc: Exception) -> str:
    """Name what a weights-only load refused: the foreign globals, else torch's reason."""
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
    try:
        config = ModelConfig.from_dict(payload["config"])
    except FoundryError as exc:
        raise FoundryError(f"{source}: {exc}; the checkpoint's config was edited or written by another tool") from None
    model = PointModel(config)
    report = load_weights(model, payload["state_dict"], strict=strict, source=source)
    return model.eval(), report


def checkpoint_hash(path: str | os.PathLike) -> str:
    return sha256_file(path)
