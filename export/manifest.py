"""Writing the manifest `<stem>.manifest.json` beside every exported `<stem>.onnx`.

The schema and its reading live in foundry_edge.contracts.manifest (docs/contracts.md, "Export artifacts").
Nothing time-dependent goes in, so the same export gives the same manifest.
"""

from __future__ import annotations

from pathlib import Path

from foundry_edge.contracts.manifest import SCHEMA, SCHEMA_VERSION, manifest_path
from foundry_edge.fileio import write_json_atomic



def build_manifest(*, model: dict, onnx: dict, grouping: str, preprocessing: dict, inputs: list, outputs: list,
                   profiles: dict, versions: dict, checks: dict, export_options: dict) -> dict:
    """The manifest dict in the documented key order."""
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "model": model, "onnx": onnx,
            "grouping": grouping, "preprocessing": preprocessing, "inputs": inputs, "outputs": outputs,
            "profiles": profiles, "versions": versions, "checks": checks, "export_options": export_options}


def write_manifest(onnx_path, manifest: dict) -> Path:
    """Write the manifest beside `onnx_path`, atomically."""
    return write_json_atomic(manifest_path(onnx_path), manifest)
