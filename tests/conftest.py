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


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def clouds(rng):
    """(2, 256, 3) float32 clouds: two noisy ellipsoids."""
    pts = rng.normal(size=(2, 256, 3)).astype(np.float32)
    pts /= np.linalg.norm(pts, axis=-1, keepdims=True)
    return (pts * np.array([1.0, 0.6, 0.3], dtype=np.float32)).astype(np.float32)
