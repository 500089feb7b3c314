"""Shared fixtures: small deterministic clouds and tiny model overrides that keep the suite fast."""

from __future__ import annotations

import numpy as np
import pytest

# Tiny but structurally complete versions of every preset: same modules, fewer channels and blocks.
TINY = dict(num_points=256, num_groups=16, group_size=8, embed_dim=48, depth=2, num_heads=3,
            tokenizer_widths=(16, 32, 64), output_dim=64, num_supertokens=4, gate_budget=3, pos_hidden=16)


def tiny_overrides(preset: str) -> dict:
    """TINY adjusted for presets whose tokens must stay the teacher's width."""
    from foundry_edge.models.registry import PRESETS

    kind = PRESETS[preset]["kind"]
    out = dict(TINY)
    if kind == "teacher":
        out.pop("output_dim"), out.pop("num_supertokens"), out.pop("gate_budget")
        if PRESETS[preset].get("encoder_dim"):
            out["encoder_dim"] = 32
    return out


RTX = "tensorrt_rtx"  # TensorRT-RTX: TensorRT's ONNX parser and builder without a GPU (graph checks only)


def has_module(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


HAS_RTX = has_module(RTX)
needs_rtx = pytest.mark.skipif(not HAS_RTX, reason="TensorRT-RTX (pip package tensorrt-rtx) is not installed")


def export_tiny_edge(folder, **options):
    """A small edge student (128 points, 8 groups, dynamic batch and points) through export_model -> ONNX path."""
    pytest.importorskip("torch")
    from foundry_edge.export import ExportOptions, export_model

    overrides = dict(tiny_overrides("foundry-edge16"), num_points=128, num_groups=8, depth=1, num_supertokens=3,
                     gate_budget=2)
    return export_model(ExportOptions(model="foundry-edge16", overrides=overrides, output_dir=folder, max_batch=4,
                                      trt_check="off", **options)).onnx_path


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def clouds(rng):
    """(2, 256, 3) float32 clouds: two noisy ellipsoids."""
    pts = rng.normal(size=(2, 256, 3)).astype(np.float32)
    pts /= np.linalg.norm(pts, axis=-1, keepdims=True)
    return (pts * np.array([1.0, 0.6, 0.3], dtype=np.float32)).astype(np.float32)
