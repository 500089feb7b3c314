"""What kind of file a model is, and which runtimes take it: one table the CLI, the runtimes and
profiling read instead of each keeping its own."""

from __future__ import annotations

from pathlib import Path

RUNTIMES = ("torch", "ort-cpu", "ort-cuda", "ort-trt", "trt")
PLAN_SUFFIXES = (".plan", ".engine")
MODEL_KINDS = ("torch", "onnx", "plan")
PRECISIONS = ("fp32", "fp16", "int8")
PRESET_SEED = 0  # the seed of a preset's random weights: export, verify and profile draw the same ones
# What each kind of model file can run on; the first is the default.
VALID = {"torch": ("torch",), "onnx": ("ort-cpu", "ort-cuda", "ort-trt"), "plan": ("trt",)}


def model_kind(spec) -> str:
    """'torch' (preset, 'default', checkpoint or a model object), 'onnx' or 'plan'."""
    if not isinstance(spec, (str, Path)):
        return "torch"
    suffix = Path(spec).suffix.lower()
    return "onnx" if suffix == ".onnx" else "plan" if suffix in PLAN_SUFFIXES else "torch"
