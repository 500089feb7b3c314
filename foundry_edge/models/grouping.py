"""Point grouping in plain tensor ops that export to ONNX and parse in TensorRT.

(B, N, 3) points -> G centres by farthest point sampling (FPS) -> K nearest neighbours of each centre
-> (B, G, K, 3) neighbourhoods relative to their centre (Point-BERT / Point-MAE tokenizer).

Export notes (docs/platform-notes.md, "TensorRT versions and ONNX opsets"):
- FPS is a Python loop of fixed length G, which unrolls into 13 small ONNX nodes per centre, all on
  (B, N) coordinate planes; the start is deterministic (the point farthest from the centroid, so it
  does not depend on the point order), where the CUDA op in Point-MAE starts at a random or first index.
  Fewer, larger nodes per step (packed (3, B, N) coordinates with one Gather and a ReduceSum or Split),
  an ONNX Loop and precomputed N x N distance rows were slower on ONNX Runtime CPU at batch 1
  (benchmarks/results/graph_fps_forms.md).
- kNN is squared distances + TopK with a constant K (TensorRT needs K constant and <= 3840).
- Gathers are GatherElements on expanded indices; no OneHot, no ScatterND.
"""

from __future__ import annotations

import torch


def squared_norm(x: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (...): x*x summed, as Mul + ReduceSum (Pow is slower in ONNX Runtime's FPS loop)."""
    return (x * x).sum(-1)


def square_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, M, 3), (B, N, 3) -> (B, M, N) squared Euclidean distances, as MatMul (no cdist)."""
    inner = torch.matmul(a, b.transpose(1, 2))
    return (a * a).sum(-1, keepdim=True) - 2.0 * inner + (b * b).sum(-1).unsqueeze(1)


def gather_points(points: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(B, N, C) points, (B, ...) int64 index -> (B, ..., C) selected points (GatherElements)."""
    batch, channels = points.shape[0], points.shape[-1]
    flat = index.reshape(batch, -1, 1).expand(-1, -1, channels)
    picked = torch.gather(points, 1, flat)
    return picked.reshape(*index.shape, channels)


def fps_step(planes, farthest: torch.Tensor, min_dist: torch.Tensor):
    """One FPS step on the x, y, z planes (B, N): fold the squared distance to `farthest` (B, 1) into
    min_dist (B, N), return the next farthest (B, 1) and min_dist.

    13 ONNX nodes (3 GatherElements, 3 Sub, 3 Mul, 2 Add, Min, ArgMax), each on (B, N): in ONNX Runtime a
    (B, N, 3) - (B, 1, 3) or (3, B, N) - (3, B, 1) Sub and a ReduceSum over the 3 cost more than the nodes
    they save. The sum stays (x, y) then z, as the numpy twin sums, so the centres are bit-for-bit the same.
    """
    x, y, z = planes
    dx, dy, dz = x - x.gather(1, farthest), y - y.gather(1, farthest), z - z.gather(1, farthest)
    min_dist = torch.minimum(min_dist, dx * dx + dy * dy + dz * dz)
    return min_dist.argmax(dim=1, keepdim=True), min_dist


def farthest_point_sample(points: torch.Tensor, num_samples: int) -> torch.Tensor:
    """(B, N, 3) -> (B, S) int64 indices of S points chosen by farthest point sampling.

    Starts from the point farthest from the centroid, then repeatedly takes the point farthest from
    everything chosen so far. Ties resolve to the lowest index (ArgMax semantics), so the result is
    deterministic and identical in PyTorch, ONNX Runtime and TensorRT.
    """
    planes = points.unbind(-1)  # (B, N) each
    farthest = squared_norm(points - points.mean(dim=1, keepdim=True)).argmax(dim=1, keepdim=True)  # (B, 1)
    min_dist = torch.full_like(planes[0], float("inf"))
    chosen = []
    for _ in range(num_samples):
        chosen.append(farthest)
        farthest, min_dist = fps_step(planes, farthest, min_dist)
    return torch.cat(chosen, dim=1)


def knn_indices(query: torch.Tensor, points: torch.Tensor, k: int) -> torch.Tensor:
    """(B, M, 3) queries, (B, N, 3) points -> (B, M, k) int64 indices of the k nearest points."""
    dist = square_distance(query, points)
    return torch.topk(dist, k, dim=-1, largest=False, sorted=True).indices


def group_points(points: torch.Tensor, num_groups: int, group_size: int):
    """(B, N, 3) -> neighbourhoods (B, G, K, 3) relative to their centres, centres (B, G, 3)."""
    if points.shape[1] < group_size:
        # Shapes are known at trace time; a runtime check here would be baked into the graph.
        raise ValueError(f"a group needs {group_size} points but the cloud has {points.shape[1]}")
    centers = gather_points(points, farthest_point_sample(points, num_groups))
    neighbours = gather_points(points, knn_indices(centers, points, group_size))
    return neighbours - centers.unsqueeze(2), centers
