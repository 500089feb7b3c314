"""Exact host grouping in numpy: FPS over every point, kNN over every point (the paper's grouping).

The same arithmetic as the graph (foundry_edge.models.grouping), so host and graph grouping pick the same
centres and neighbourhoods: FPS starts at the point farthest from the centroid and ties go to the lowest
index (ArgMax semantics); kNN ranks squared distances written as |a|^2 - 2 a.b + |b|^2, ties to the lowest
index.
"""

from __future__ import annotations

import numpy as np


def square_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(B, M, 3), (B, N, 3) -> (B, M, N) squared distances, the formula the graph uses."""
    inner = np.matmul(a, b.transpose(0, 2, 1))
    return (a * a).sum(-1, keepdims=True) - np.float32(2.0) * inner + (b * b).sum(-1)[:, None, :]


def gather_points(points: np.ndarray, index: np.ndarray) -> np.ndarray:
    """(B, N, C) points, (B, ...) int64 index -> (B, ..., C) selected points."""
    rows = np.arange(points.shape[0]).reshape((-1,) + (1,) * (index.ndim - 1))
    return points[rows, index]


def farthest_point_sample(points: np.ndarray, num_samples: int) -> np.ndarray:
    """(B, N, 3) -> (B, S) int64 indices; deterministic start, ties to the lowest index.

    Works on x, y, z planes (B, N) in preallocated buffers: the same float32 arithmetic as
    ((p - c) ** 2).sum(-1), bit for bit, without a (B, N, 3) temporary per centre (7x faster at B 8).
    fpsample is faster still but breaks ties differently on duplicated points, so it is not used here.
    """
    rows = np.arange(points.shape[0])
    centroid = points.mean(axis=1, keepdims=True)
    farthest = ((points - centroid) ** 2).sum(-1).argmax(axis=1)
    planes = [np.ascontiguousarray(points[..., axis]) for axis in range(3)]
    min_dist = np.full(points.shape[:2], np.inf, dtype=points.dtype)
    dist, term = np.empty_like(min_dist), np.empty_like(min_dist)
    chosen = np.empty((points.shape[0], num_samples), dtype=np.int64)
    for i in range(num_samples):
        chosen[:, i] = farthest
        for axis, plane in enumerate(planes):
            out = dist if axis == 0 else term
            np.subtract(plane, plane[rows, farthest][:, None], out=out)
            np.multiply(out, out, out=out)
            if axis:
                np.add(dist, term, out=dist)
        np.minimum(min_dist, dist, out=min_dist)
        farthest = min_dist.argmax(axis=1)
    return chosen


def _sort_keys(dist: np.ndarray) -> np.ndarray:
    """(..., N) float32 distances -> uint64 keys ordered by (distance, index), all distinct.

    The float32 bit pattern made monotonic (negatives, from rounding in |a|^2 - 2ab + |b|^2, inverted)
    in the high word, the index in the low word: a partial sort of these keys is a stable sort.
    """
    bits = np.ascontiguousarray(dist, dtype=np.float32).view(np.uint32).astype(np.uint64)
    monotonic = np.where(bits >> np.uint64(31), ~bits & np.uint64(0xFFFFFFFF), bits | np.uint64(1 << 31))
    return (monotonic << np.uint64(32)) | np.arange(dist.shape[-1], dtype=np.uint64)


def knn_indices(query: np.ndarray, points: np.ndarray, k: int) -> np.ndarray:
    """(B, M, 3), (B, N, 3) -> (B, M, k) int64 indices of the k nearest points, nearest first.

    A partition of distinct (distance, index) keys, then a sort of the k kept: the first k of a stable
    argsort, without sorting all N per centre.
    """
    keys = _sort_keys(square_distance(query, points))
    if k < keys.shape[-1]:
        keys = np.partition(keys, k - 1, axis=-1)[..., :k]
    keys = np.sort(keys, axis=-1)[..., :k]
    return (keys & np.uint64(0xFFFFFFFF)).astype(np.int64)


def group(points: np.ndarray, num_groups: int, group_size: int):
    """(B, N, 3) -> neighbourhoods (B, G, K, 3) relative to their centres, centres (B, G, 3)."""
    centers = gather_points(points, farthest_point_sample(points, num_groups))
    neighbours = gather_points(points, knn_indices(centers, points, group_size))
    return (neighbours - centers[:, :, None, :]).astype(np.float32), centers.astype(np.float32)
