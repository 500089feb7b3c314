"""Heads that work on teacher tokens and on a student's reconstructed tokens alike."""

from __future__ import annotations

import torch
from torch import nn

from foundry_edge.models.grouping import gather_points, square_distance


def pool_tokens(tokens: torch.Tensor) -> torch.Tensor:
    """(B, c, D) -> (B, 2D): mean and max over tokens (Point-MAE / Point-JEPA, no CLS token)."""
    return torch.cat([tokens.mean(dim=1), tokens.max(dim=1).values], dim=-1)


class ClassificationHead(nn.Module):
    """Pooled tokens -> class logits, in the layout of Point-MAE's or Point-BERT's `cls_head_finetune`.

    (B, c, D) tokens [, (B, D) CLS output] -> (B, K). Without a CLS token the head reads [mean, max] over
    the tokens; with one it reads [CLS, max over the patch tokens], as Point-MAE's and Point-BERT's
    fine-tuned PointTransformer do. Both are 2D wide, so one head's weights fit either.
    """

    def __init__(self, dim: int, num_classes: int, layout: str = "point-mae", hidden: int = 256,
                 dropout: float = 0.5):
        super().__init__()
        if layout == "point-bert":
            layers = [nn.Linear(2 * dim, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        else:
            layers = [nn.Linear(2 * dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                      nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        self.layers = nn.Sequential(*layers, nn.Linear(hidden, num_classes))

    def forward(self, tokens: torch.Tensor, cls: torch.Tensor | None = None) -> torch.Tensor:
        pooled = pool_tokens(tokens) if cls is None else torch.cat([cls, tokens.max(dim=1).values], dim=-1)
        return self.layers(pooled)


def propagate_to_points(points: torch.Tensor, centers: torch.Tensor, tokens: torch.Tensor, k: int = 3):
    """(B, N, 3), (B, c, 3), (B, c, D) -> (B, N, D): inverse-distance interpolation from the k
    nearest centres (PointNet++ feature propagation)."""
    dist = square_distance(points, centers)
    near, index = torch.topk(dist, min(k, centers.shape[1]), dim=-1, largest=False)
    weight = 1.0 / (near.clamp_min(0.0) + 1e-8)
    weight = weight / weight.sum(dim=-1, keepdim=True)
    neighbours = gather_points(tokens, index)  # (B, N, k, D)
    return (neighbours * weight.unsqueeze(-1)).sum(dim=2)


class PartSegmentationHead(nn.Module):
    """Tokens propagated back to every point, joined with the pooled shape feature -> part logits."""

    def __init__(self, dim: int, num_parts: int, hidden: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(3 * dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_parts))

    def forward(self, points: torch.Tensor, centers: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        per_point = propagate_to_points(points, centers, tokens)
        shape = pool_tokens(tokens).unsqueeze(1).expand(-1, points.shape[1], -1)
        return self.mlp(torch.cat([per_point, shape], dim=-1))
