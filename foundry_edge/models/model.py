"""PointModel: the teacher encoder or a Foundry student, with optional heads, in one module.

    teacher: points -> tokenizer -> [CLS +] (+pos before every block, or once) ViT -> tokens (B, c, d)
    student: points -> tokenizer -> [gate] -> DSO -> ViT over s SuperTokens -> CAU -> tokens (B, c, D)

`forward(points)` groups inside the model (the `--grouping graph` export); `forward_grouped(...)` takes
neighbourhoods and centres grouped on the host (`--grouping host`). Both return a dict:
tokens (B, c, D), centers (B, c, 3), and for a student assignment (B, c) int64 (the SuperToken, or
s + slot for a gate bypass), assignment_margin (B, c) (top-1 minus top-2 assignment logit: near-ties
flip first in FP16/INT8), gate_prob (B, c) with the gate, logits (B, K) with a classification head,
seg_logits (B, N, P) with a part-segmentation head (graph grouping only: it needs the points).
A CLS token's output is no output: `tokens` stays the c patch tokens, and only the head reads the CLS.
"""

from __future__ import annotations

import torch
from torch import nn

from foundry_edge.models.config import ModelConfig
from foundry_edge.models.foundry import (
    CrossAttentionUpsampling, DynamicSupertokens, FusionGate, StaticGrouping, grouped_mean, straight_through,
    top2_margin,
)
from foundry_edge.models.heads import ClassificationHead, PartSegmentationHead
from foundry_edge.models.layers import TransformerEncoder, positional_mlp
from foundry_edge.models.scalable_grouping import ScalableGrouping
from foundry_edge.models.tokenizer import PointTokenizer


def normalize_cloud(points: torch.Tensor) -> torch.Tensor:
    """(B, N, 3) -> (B, N, 3) centred on the mean and scaled into the unit sphere (Point-JEPA)."""
    centred = points - points.mean(dim=1, keepdim=True)
    radius = centred.norm(dim=-1).max(dim=1).values.clamp_min(1e-12)
    return centred / radius[:, None, None]


class PointModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        c = config
        scalable = (ScalableGrouping(c.num_groups, c.group_size, c.fps_candidates, c.knn_chunk)
                    if c.grouping == "scalable" else None)
        self.tokenizer = PointTokenizer(c.num_groups, c.group_size, c.embed_dim, c.tokenizer_widths,
                                        c.tokenizer_bias, c.tokenizer_out_dim, scalable)
        self.pos_embed = positional_mlp(c.embed_dim, c.pos_hidden)
        self.encoder = TransformerEncoder(c.embed_dim, c.depth, c.num_heads, c.mlp_ratio, c.qkv_bias,
                                          c.pos_every_block)
        self.cls_token = self.cls_pos = None
        if c.cls_token:  # Point-MAE / Point-BERT layout: (1, 1, d), expanded over the batch (Expand + Concat)
            self.cls_token = nn.Parameter(nn.init.trunc_normal_(torch.empty(1, 1, c.embed_dim), std=0.02))
            self.cls_pos = nn.Parameter(nn.init.trunc_normal_(torch.empty(1, 1, c.embed_dim), std=0.02))
        if c.kind == "student":
            self.assigner = (DynamicSupertokens(c.embed_dim, c.num_supertokens, c.gumbel_tau, c.dso_logits) if c.assigner == "dso"
                             else StaticGrouping(c.embed_dim, c.num_supertokens, c.assigner, c.kmeans_iters))
            self.gate = FusionGate(c.embed_dim, c.gate_hidden, c.gate_threshold, c.gate_budget) if c.gate else None
            self.cau = CrossAttentionUpsampling(c.embed_dim, c.effective_cau_hidden, c.output_dim)
        self.cls_head = ClassificationHead(c.token_dim, c.num_classes, c.cls_head_layout) if c.num_classes else None
        self.seg_head = PartSegmentationHead(c.token_dim, c.num_part_classes) if c.num_part_classes else None

    # -- entry points ---------------------------------------------------------------------------
    def forward(self, points: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, N, 3) raw points -> outputs (see the module docstring)."""
        if self.config.normalize_input:
            points = normalize_cloud(points)
        neighbourhoods, centers = self.tokenizer.group(points)
        out = self.forward_grouped(neighbourhoods, centers)
        if self.seg_head is not None:
            out["seg_logits"] = self.seg_head(points, centers, out["tokens"])
        return out

    def forward_grouped(self, neighbourhoods: torch.Tensor, centers: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, c, K, 3) neighbourhoods relative to their centres, (B, c, 3) centres -> outputs."""
        out = self.forward_features(self.tokenizer.embed(neighbourhoods), centers)
        cls = out.pop("cls", None)
        if self.cls_head is not None:
            out["logits"] = self.cls_head(out["tokens"], cls)
        return out

    def forward_features(self, tokens: torch.Tensor, centers: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, c, d) group tokens, (B, c, 3) centres -> outputs; with a CLS token also "cls" (B, d), the
        CLS output for the head (forward_grouped takes it out of the outputs)."""
        if self.config.kind == "student":
            return self._student(tokens, centers)
        pos = self.pos_embed(centers)
        if self.cls_token is None:
            return {"tokens": self.encoder(tokens, pos), "centers": centers}
        batch = tokens.shape[0]
        tokens = torch.cat([self.cls_token.expand(batch, -1, -1), tokens], dim=1)
        pos = torch.cat([self.cls_pos.expand(batch, -1, -1), pos], dim=1)
        encoded = self.encoder(tokens, pos)
        return {"tokens": encoded[:, 1:], "centers": centers, "cls": encoded[:, 0]}

    # -- the Foundry student --------------------------------------------------------------------
    def _student(self, tokens: torch.Tensor, centers: torch.Tensor) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {"centers": centers}
        routing, logits = self.assigner(tokens, centers)  # (B, c, s) one-hot, (B, c, s)
        values = self.assigner.v(tokens)
        empty_pos = torch.zeros_like(self.assigner.supertokens[:, :3])
        if self.gate is None:
            sequence = grouped_mean(routing, values, self.assigner.supertokens)
            positions = grouped_mean(routing, centers, empty_pos)
            key_mask = None
        else:
            prob = self.gate(tokens)
            out["gate_prob"] = prob
            bypass = self.gate.bypass_slots(prob)  # (B, c, b)
            fused = routing * (1.0 - bypass.sum(dim=-1, keepdim=True))
            fused_values, bypass_values = values, values
            if self.training:  # forward unchanged; gradients reach the gate through pi
                fused_values = values * straight_through(prob).unsqueeze(-1)
                bypass_values = values * straight_through(1.0 - prob).unsqueeze(-1)
            sequence = torch.cat([grouped_mean(fused, fused_values, self.assigner.supertokens),
                                  torch.matmul(bypass.transpose(1, 2), bypass_values)], dim=1)
            positions = torch.cat([grouped_mean(fused, centers, empty_pos),
                                   torch.matmul(bypass.transpose(1, 2), centers)], dim=1)
            supertoken_mask = torch.ones_like(fused[:, 0, :], dtype=torch.bool)
            key_mask = torch.cat([supertoken_mask, bypass.sum(dim=1) > 0], dim=1)
            routing = torch.cat([fused, bypass], dim=-1)
        encoded = self.encoder(sequence, self.pos_embed(positions), key_mask)
        out["tokens"] = self.cau(tokens, routing, encoded)
        out["assignment"] = routing.argmax(dim=-1)
        out["assignment_margin"] = top2_margin(logits)
        if self.training and self.config.assigner == "dso":
            out["assignment_logits"] = logits  # for the load-balancing term (training/distill.py)
        return out


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
