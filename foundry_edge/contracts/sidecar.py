"""The sidecar `<plan>.json` beside a raw TensorRT plan: its schema, writing it and checking a plan against it.

A plan is tied to the TensorRT version and the GPU it was built on (docs/contracts.md, "TensorRT plans"),
so the sidecar records both and the plan's SHA-256, and loading refuses a plan without a complete sidecar,
one whose SHA-256 differs, or one from another TensorRT or GPU (`--no-sidecar-check` skips all of it).
Plans stay raw (no byte prefix) so trtexec `--loadEngine` and DeepStream read them. This machine's side of
the comparison is foundry_edge.contracts.device.device_facts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from foundry_edge.errors import FoundryError
from foundry_edge.fileio import sha256_file, write_json_atomic

SCHEMA = "foundry-edge/engine"
SCHEMA_VERSION = 1


def sidecar_path(plan_path: str | Path) -> Path:
    return Path(str(plan_path) + ".json")


def write_sidecar(plan_path: str | Path, data: dict) -> Path:
    return write_json_atomic(sidecar_path(plan_path), {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, **data})


# What `foundry-edge build` writes and a plan is checked against (docs/contracts.md, "TensorRT plans").
REQUIRED = {"plan": ("file", "sha256", "bytes"), "onnx": ("file", "sha256"), "precision": (), "profiles": (),
            "device": ("tensorrt_module", "tensorrt", "gpu", "compute_capability"),
            "model": ("inputs", "outputs", "grouping", "preprocessing")}
UNCHECKED = ("--no-sidecar-check: the plan's SHA-256, TensorRT version and GPU are not checked against a sidecar "
             "(a plan from another TensorRT or GPU may fail to load or compute wrong outputs)")


def read_sidecar(plan_path: str | Path) -> dict:
    """The sidecar of a plan, complete (REQUIRED) and made for this very plan file (its SHA-256); else one line."""
    path, plan = sidecar_path(plan_path), Path(plan_path)
    fix = "rebuild the engine with `foundry-edge build`, or pass --no-sidecar-check to run it unchecked"
    if not path.is_file():
        raise FoundryError(f"expected the sidecar {path.name} beside {plan.name} (what `foundry-edge build` writes: "
                           f"TensorRT version, GPU, inputs and preprocessing), found none: {fix}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FoundryError(f"expected a JSON sidecar at {path}, could not read it ({exc}): {fix}") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        schema = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise FoundryError(f"expected a {SCHEMA} sidecar at {path}, found schema {schema!r}: {fix}")
    missing = sidecar_gaps(data)
    if missing:
        raise FoundryError(f"expected a complete sidecar at {path}, found it without {', '.join(missing)} "
                           f"(incomplete or edited): {fix}")
    digest = sha256_file(plan)
    if digest != data["plan"]["sha256"]:
        raise FoundryError(f"{plan.name} does not match {path.name} (sha256 {digest[:12]}..., the sidecar records "
                           f"{str(data['plan']['sha256'])[:12]}...); rebuild or pass the right sidecar")
    return data


def read_sidecar_unchecked(plan_path: str | Path) -> Optional[dict]:
    """--no-sidecar-check: the sidecar where it parses and has a usable model section, else None; nothing checked."""
    try:
        data = json.loads(sidecar_path(plan_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    gaps = sidecar_gaps({**data, "schema_version": SCHEMA_VERSION})
    return None if any(gap.startswith("model") for gap in gaps) else data


def sidecar_gaps(data: dict) -> list:
    """The REQUIRED fields a sidecar lacks (and a model section whose inputs or outputs are not lists of specs)."""
    if data.get("schema_version") != SCHEMA_VERSION:
        return [f"schema_version {SCHEMA_VERSION} (found {data.get('schema_version')!r})"]
    missing = []
    for section, keys in REQUIRED.items():
        if section not in data or (keys and not isinstance(data[section], dict)):
            missing.append(section)
            continue
        missing += [f"{section}.{key}" for key in keys if key not in data[section]]
    model = data.get("model")
    if isinstance(model, dict) and not all(isinstance(model.get(k), list) and model[k] and
                                           all(isinstance(s, dict) and {"name", "dtype", "shape"} <= set(s)
                                               for s in model[k]) for k in ("inputs", "outputs")):
        missing.append("model inputs and outputs as {name, dtype, shape} lists")
    return missing


def check_sidecar(sidecar: dict, current: dict) -> None:
    """Refuse a plan built by another TensorRT or for another GPU (model or compute capability).

    `current` is `device_facts(...)` of this machine (TensorRT module and version, GPU, compute capability);
    GPU facts are compared where both sides know them (this machine's only once CUDA is open).
    """
    built = sidecar.get("device", {})
    fix = "rebuild it on this device with `foundry-edge build MODEL.onnx` (or pass --no-sidecar-check)"
    for key, what in (("tensorrt_module", "TensorRT package"), ("tensorrt", "TensorRT"),
                      ("compute_capability", "GPU compute capability"), ("gpu", "GPU")):
        want, have = built.get(key), current.get(key)
        if want and have and want != have:
            raise FoundryError(f"the engine was built for {what} {want}, this device has {have}: {fix}")
