"""Presets by name and `create_model(name, **overrides)` (the timm pattern).

The paper publishes neither the student's depth/width nor its group settings; these presets are our
choices, marked as such. `foundry-edge inspect NAME` prints each one's parameters and FLOPs.
"""

from __future__ import annotations

from typing import Any

from foundry_edge.errors import FoundryError
from foundry_edge.models.config import ModelConfig

_TEACHER = dict(kind="teacher", embed_dim=384, depth=12, num_heads=6, qkv_bias=True, tokenizer_bias=False)
_STUDENT = dict(kind="student", output_dim=384, num_supertokens=16)

PRESETS: dict[str, dict[str, Any]] = {
    # Point-JEPA ViT-S encoder, the Foundry teacher.
    "pointjepa-vits": dict(_TEACHER),
    # The same encoder in the Point-MAE layout (biases in the mini-PointNet, no qkv bias).
    "pointmae-vits": dict(_TEACHER, qkv_bias=False, tokenizer_bias=True),
    # Point-BERT: 256-wide group encoder reduced to 384, no qkv bias, a CLS token in the sequence,
    # and its fine-tuned head (Linear-ReLU-Dropout-Linear on [CLS, max]).
    "pointbert-vits": dict(_TEACHER, qkv_bias=False, tokenizer_bias=True, encoder_dim=256, cls_token=True,
                           cls_head_layout="point-bert"),
    # The paper's student: the teacher's tokenizer, a ViT-S over s = 16 SuperTokens.
    "foundry-s16": dict(_STUDENT),
    # A ViT-T student (d 192, 3 heads) on the teacher's tokenizer.
    "foundry-t16": dict(_STUDENT, embed_dim=192, num_heads=3),
    # Ours, for edge latency: a 4x slimmer tokenizer and a 4-block d-192 encoder.
    "foundry-edge16": dict(_STUDENT, embed_dim=192, num_heads=3, depth=4, tokenizer_widths=(32, 64, 128)),
    # Foundry-Gate on the paper's student: up to 8 tokens bypass DSO.
    "foundry-gate16": dict(_STUDENT, gate=True, gate_budget=8),
    # The paper's ablation baselines: static grouping in place of DSO.
    "foundry-s16-kmeans": dict(_STUDENT, assigner="kmeans"),
    "foundry-s16-fps": dict(_STUDENT, assigner="fps"),
}


def list_presets() -> list[str]:
    return list(PRESETS)


def get_config(name: str, **overrides) -> ModelConfig:
    """The preset `name` with `overrides` applied (see `ModelConfig.replace`)."""
    if name not in PRESETS:
        raise FoundryError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    base = ModelConfig(name=name, **PRESETS[name])
    return base.replace(**overrides) if overrides else base


def create_model(name_or_config: str | ModelConfig, **overrides):
    """A freshly initialised PointModel from a preset name or a config, in eval mode."""
    from foundry_edge.models.model import PointModel

    config = (get_config(name_or_config, **overrides) if isinstance(name_or_config, str)
              else name_or_config.replace(**overrides) if overrides else name_or_config)
    return PointModel(config).eval()
