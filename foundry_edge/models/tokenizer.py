"""Point tokenizer: FPS + kNN grouping, then a mini-PointNet per group (Point-BERT / Point-MAE).

Grouping is exact (models/grouping.py) or, for large scenes, scalable (models/scalable_grouping.py).

(B, N, 3) points -> tokens (B, G, C), centres (B, G, 3). The mini-PointNet keeps the upstream module
layout (`first_conv`, `second_conv` as Conv1d/BN/ReLU/Conv1d) so Point-JEPA, Point-MAE and Point-BERT
weights import by key renaming alone.
"""

from __future__ import annotations

import torch
from torch import nn

from foundry_edge.models.grouping import group_points
from foundry_edge.models.scalable_grouping import ScalableGrouping


class MiniPointNet(nn.Module):
    """(B, G, K, 3) neighbourhoods -> (B, G, C) group features.

    Conv1d(3, w0) BN ReLU Conv1d(w0, w1) -> max over points -> concat [global, local] ->
    Conv1d(2 w1, w2) BN ReLU Conv1d(w2, C) -> max over points.
    """

    def __init__(self, out_dim: int, widths=(128, 256, 512), bias: bool = False):
        super().__init__()
        w0, w1, w2 = widths
        self.first_conv = nn.Sequential(
            nn.Conv1d(3, w0, 1, bias=bias), nn.BatchNorm1d(w0), nn.ReLU(inplace=True), nn.Conv1d(w0, w1, 1)
        )
        self.second_conv = nn.Sequential(
            nn.Conv1d(2 * w1, w2, 1, bias=bias), nn.BatchNorm1d(w2), nn.ReLU(inplace=True), nn.Conv1d(w2, out_dim, 1)
        )
        self.out_dim = out_dim

    def forward(self, neighbourhoods: torch.Tensor) -> torch.Tensor:
        batch, groups, size, _ = neighbourhoods.shape
        x = neighbourhoods.reshape(batch * groups, size, 3).transpose(2, 1)
        x = self.first_conv(x)  # (BG, w1, K)
        global_feature = x.max(dim=2, keepdim=True).values
        x = torch.cat([global_feature.expand(-1, -1, size), x], dim=1)
        x = self.second_conv(x).max(dim=2).values  # (BG, C)
        return x.reshape(batch, groups, self.out_dim)


class PointTokenizer(nn.Module):
    """Groups a cloud and embeds each group; `reduce_dim` maps Point-BERT's 256-wide groups to d."""

    def __init__(self, num_groups: int, group_size: int, embed_dim: int, widths=(128, 256, 512),
                 bias: bool = False, encoder_dim: int | None = None, scalable: ScalableGrouping | None = None):
        super().__init__()
        self.num_groups, self.group_size = num_groups, group_size
        self.scalable = scalable
        encoder_dim = encoder_dim or embed_dim
        self.encoder = MiniPointNet(encoder_dim, widths, bias)
        self.reduce_dim = nn.Linear(encoder_dim, embed_dim) if encoder_dim != embed_dim else nn.Identity()

    def group(self, points: torch.Tensor):
        if self.scalable is not None:
            return self.scalable(points)
        return group_points(points, self.num_groups, self.group_size)

    def embed(self, neighbourhoods: torch.Tensor) -> torch.Tensor:
        return self.reduce_dim(self.encoder(neighbourhoods))

    def forward(self, points: torch.Tensor):
        neighbourhoods, centers = self.group(points)
        return self.embed(neighbourhoods), centers
