"""torch -> ONNX for foundry-edge models: `export_model(ExportOptions(...)) -> ExportResult`.

Steps as plain functions, each usable alone: `torch2onnx` (export/torch2onnx.py), `simplify_onnx`
(simplify.py), `apply_rewrites` (rewrites.py, what targets.py says a TensorRT version needs),
`validate_onnx` (validate.py), `check_with_tensorrt` (trt_check.py); each model's export declaration
in onnx_config.py; the manifest sidecar in manifest.py. Importing this package
does not import torch.
"""

from foundry_edge.contracts.manifest import read_manifest
from foundry_edge.export.manifest import write_manifest
from foundry_edge.export.pipeline import (
    Artifact, ExportCheckError, ExportOptions, ExportResult, export_model, onnx_config_for,
)
from foundry_edge.export.validate import CheckResult, validate_onnx

__all__ = ["Artifact", "CheckResult", "ExportCheckError", "ExportOptions", "ExportResult", "export_model",
           "onnx_config_for", "read_manifest", "validate_onnx", "write_manifest"]
