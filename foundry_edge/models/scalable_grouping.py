"""Grouping for large scenes (2^16 to 2^18 points, up to 8192 centres) in ops that export to ONNX.

(B, N, 3) points -> (B, G, K, 3) neighbourhoods relative to their centres, (B, G, 3) centres, like
models/grouping.py, but never with a (G x N) distance matrix in memory and never FPS over all N:

1. Octree-stratified candidates: sort the points along a Morton (Z-order) curve (TopK on unique int64
   keys), score each point by how coarse the octree cell it opens is, and keep the M = fps_candidates
   x G highest scores. Every occupied cell of the finest octree level with at most M cells keeps a
   candidate, so every point lies within one cell diagonal of one.
2. Exact FPS over the M candidates as one ONNX Loop (torch while_loop), started from the candidate
   farthest from the centroid: O(G M) work instead of O(G N).
3. Exact kNN over all N points, a fixed-size chunk of centres at a time: Python-unrolled TopK on
   (B, chunk, N) distances, so memory is B * chunk * N * 4 bytes.

foundry_edge/data/grouping/scalable.py is the numpy twin (host grouping): same candidates, same centres, and a
k-d tree for the kNN, which is what makes 2^18 points fast; the graph kNN here is exact but O(G N).
"""

from __future__ import annotations

import torch
from torch import nn

from foundry_edge.models.grouping import fps_step, gather_points, knn_indices, squared_norm

MORTON_BITS = 10  # octree levels: a 1024^3 grid over the cloud's bounding cube


def spread_bits_table(bits: int = MORTON_BITS) -> torch.Tensor:
    """(2^bits,) int64 table putting bit j of v at bit 3j (the Morton interleave of one axis)."""
    values = torch.arange(1 << bits, dtype=torch.int64)
    out = torch.zeros_like(values)
    for j in range(bits):
        out += ((values >> j) & 1) << (3 * j)
    return out


def grid_cells(points: torch.Tensor, bits: int = MORTON_BITS) -> torch.Tensor:
    """(B, N, 3) -> (B, N, 3) int64 cells of a 2^bits grid over each cloud's bounding cube."""
    low = points.min(dim=1, keepdim=True).values
    extent = (points.max(dim=1, keepdim=True).values - low).amax(dim=-1, keepdim=True).clamp_min(1e-12)
    # A tensor division, as the numpy twin divides: torch computes `float / tensor` as reciprocal * float, which
    # rounds differently and put points on a cell boundary into another cell than the host's (seen at 2^18 points).
    scale = torch.full_like(extent, float((1 << bits) - 1)) / extent
    return torch.floor((points - low) * scale).to(torch.int64).clamp(0, (1 << bits) - 1)


def stratified_candidates(points: torch.Tensor, count: int, table: torch.Tensor,
                          bits: int = MORTON_BITS) -> torch.Tensor:
    """(B, N, 3) -> (B, count) int64 indices spread over the octree, coarsest cells first.

    A point's score is the number of octree levels at which it opens a new cell (its cell against
    the previous point's in Z order); ties go to the earlier point in Z order. Level prefixes are
    cell // 2^k on values < 2^bits, exact even where an exporter lowers integer division to float.
    """
    n = points.shape[1]
    position = torch.arange(n, device=points.device)
    cells = grid_cells(points, bits)
    spread = table[cells]  # (B, N, 3) Morton bits of each axis
    codes = spread[..., 0] + 2 * spread[..., 1] + 4 * spread[..., 2]
    order = torch.topk(codes * n + position, n, dim=1, largest=False, sorted=True).indices
    cells = gather_points(cells, order)
    prev = torch.cat([cells[:, :1], cells[:, :-1]], dim=1)
    opens = torch.zeros_like(codes)
    for level in range(bits + 1):
        step = 1 << (bits - level)
        differs = torch.div(cells, step, rounding_mode="floor") != torch.div(prev, step, rounding_mode="floor")
        opens = opens + differs.any(dim=-1).to(torch.int64)
    opens = torch.where(position == 0, bits + 1, opens)  # the first point opens every level
    key = opens * n + (n - 1 - position)
    top = torch.topk(key, count, dim=1, largest=True, sorted=True).indices
    return torch.gather(order, 1, top)


def farthest_point_sample_from(points: torch.Tensor, num_samples: int, start_from: torch.Tensor) -> torch.Tensor:
    """(B, M, 3), (B, 1, 3) -> (B, S) int64 FPS indices, ties to the lowest index.

    Starts at the point farthest from `start_from`, then runs models/grouping.py's step on x, y, z planes
    in `fps_loop`: 2-5x faster in ONNX Runtime than a step on (B, M, 3) points
    (benchmarks/results/graph_fps_forms.md).
    """
    planes = [plane.clone() for plane in points.unbind(-1)]  # (B, M) each; while_loop refuses aliased inputs
    farthest = squared_norm(points - start_from).argmax(dim=1, keepdim=True)  # (B, 1)
    return fps_loop(fps_step, planes, farthest, torch.full_like(planes[0], float("inf")), num_samples)


def fps_loop(step, table, farthest: torch.Tensor, min_dist: torch.Tensor, num_samples: int) -> torch.Tensor:
    """`num_samples` FPS steps from `farthest` (B, 1) -> (B, S) int64, where step(table, farthest, min_dist)
    returns the next farthest and min_dist. Exported as one ONNX Loop (torch while_loop) with the chosen
    indices in a fixed (B, S) carried buffer (TensorRT wants fixed carried shapes); eager runs the same steps
    as a Python loop, which is faster than while_loop outside export."""
    if not torch.compiler.is_exporting():
        chosen = []
        for _ in range(num_samples):
            chosen.append(farthest)
            farthest, min_dist = step(table, farthest, min_dist)
        return torch.cat(chosen, dim=1)
    from torch._higher_order_ops import while_loop

    chosen = torch.zeros(farthest.shape[0], num_samples, dtype=torch.int64, device=farthest.device)
    slots = torch.arange(num_samples, device=farthest.device).unsqueeze(0)

    def cond(i, farthest, min_dist, chosen):
        return i < num_samples

    def body(i, farthest, min_dist, chosen):
        chosen = torch.where(slots == i, farthest, chosen)
        return (i + 1, *step(table, farthest, min_dist), chosen)

    first = torch.zeros((), dtype=torch.int64, device=farthest.device)
    return while_loop(cond, body, (first, farthest, min_dist, chosen))[3]


def chunked_knn(centers: torch.Tensor, points: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """(B, G, 3), (B, N, 3) -> (B, G, k) int64 exact kNN, `chunk` centres at a time (B*chunk*N*4 bytes)."""
    parts = [knn_indices(centers[:, start:start + chunk], points, k) for start in range(0, centers.shape[1], chunk)]
    return torch.cat(parts, dim=1)


class ScalableGrouping(nn.Module):
    """(B, N, 3) -> neighbourhoods (B, G, K, 3) relative to their centres, centres (B, G, 3)."""

    def __init__(self, num_groups: int, group_size: int, fps_candidates: int = 4, knn_chunk: int = 512):
        super().__init__()
        self.num_groups, self.group_size = num_groups, group_size
        self.fps_candidates, self.knn_chunk = fps_candidates, knn_chunk
        self.register_buffer("morton_table", spread_bits_table(), persistent=False)

    def select_centers(self, points: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) -> (B, G) int64 indices of the centres."""
        count = min(points.shape[1], self.fps_candidates * self.num_groups)
        candidates = stratified_candidates(points, count, self.morton_table)
        picked = farthest_point_sample_from(gather_points(points, candidates), self.num_groups,
                                            points.mean(dim=1, keepdim=True))
        return torch.gather(candidates, 1, picked)

    def forward(self, points: torch.Tensor):
        if points.shape[1] < self.group_size:
            raise ValueError(f"a group needs {self.group_size} points but the cloud has {points.shape[1]}")
        centers = gather_points(points, self.select_centers(points))
        neighbours = gather_points(points, chunked_knn(centers, points, self.group_size, self.knn_chunk))
        return neighbours - centers.unsqueeze(2), centers
