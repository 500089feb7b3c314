"""The sidecar `<stem>.manifest.json` beside every exported `<stem>.onnx`.

The schema is the one in docs/contracts.md ("Export artifacts"): change it there and here together.
Nothing time-dependent goes in, so the same export gives the same manifest.
"""

from __future__ import annotations

import json
from pathlib import Path

from foundry_edge.errors import FoundryError
from foundry_edge.fileio import write_json_atomic

SCHEMA = "foundry-edge/manifest"
SCHEMA_VERSION = 1
REQUIRED = ("model", "onnx", "grouping", "preprocessing", "inputs", "outputs", "profiles", "versions", "checks")


def manifest_path(onnx_path) -> Path:
    """model.onnx -> model.manifest.json (model.failed.onnx -> model.failed.manifest.json)."""
    path = Path(onnx_path)
    return path.with_name(path.stem + ".manifest.json")


def build_manifest(*, model: dict, onnx: dict, grouping: str, preprocessing: dict, inputs: list, outputs: list,
                   profiles: dict, versions: dict, checks: dict, export_options: dict) -> dict:
    """The manifest dict in the documented key order."""
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "model": model, "onnx": onnx,
            "grouping": grouping, "preprocessing": preprocessing, "inputs": inputs, "outputs": outputs,
            "profiles": profiles, "versions": versions, "checks": checks, "export_options": export_options}


def write_manifest(onnx_path, manifest: dict) -> Path:
    """Write the manifest beside `onnx_path`, atomically."""
    return write_json_atomic(manifest_path(onnx_path), manifest)


def read_manifest(onnx_path) -> dict | None:
    """The manifest beside `onnx_path`, or None if there is none; refuses one of another schema."""
    path = manifest_path(onnx_path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FoundryError(f"{path} is not valid JSON ({exc}); re-export the model to rewrite it") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise FoundryError(f"{path} is not a foundry-edge manifest (expected schema {SCHEMA!r}); "
                           "remove it or re-export the model")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise FoundryError(f"{path} has manifest schema version {data.get('schema_version')!r}, this foundry-edge "
                           f"reads version {SCHEMA_VERSION}: re-export the model or upgrade foundry-edge")
    missing = [key for key in REQUIRED if key not in data]
    if missing:
        raise FoundryError(f"{path} lacks {missing}; re-export the model to rewrite it")
    _check_sizes(data["preprocessing"], path)
    return data


def _check_sizes(preprocessing, path: Path) -> None:
    """Refuse a hand-edited preprocessing section whose sizes are not positive integers."""
    sizes = ("num_points", "num_groups", "group_size", "fps_candidates")
    bad = {k: preprocessing.get(k) for k in sizes if isinstance(preprocessing, dict) and preprocessing.get(k) is not None
           and (type(preprocessing[k]) is not int or preprocessing[k] < 1)}
    if not isinstance(preprocessing, dict) or bad:
        raise FoundryError(f"{path}: expected 'preprocessing' sizes that are positive integers, found "
                           f"{bad or preprocessing!r}; re-export the model to rewrite it")


def trtexec_shapes(manifest: dict) -> str:
    """--minShapes/--optShapes/--maxShapes for trtexec from the manifest's inputs and profiles ('' if static)."""
    profiles = manifest.get("profiles") or {}
    if not profiles:
        return ""
    shapes = {spec["name"]: tuple([profiles[d][i] if isinstance(d, str) else d for d in spec["shape"]]
                                  for i in range(3))
              for spec in manifest["inputs"]}
    return " ".join(shape_flags(shapes))


def shape_flags(shapes) -> list:
    """{input: (min, opt, max) shapes} -> trtexec's ["--minShapes=a:1x3,...", "--optShapes=...", "--maxShapes=..."]."""
    def joined(which: int) -> str:
        return ",".join(f"{name}:{'x'.join(str(d) for d in triple[which])}" for name, triple in shapes.items())

    return [f"--{which}Shapes={joined(i)}" for i, which in enumerate(("min", "opt", "max"))]
