"""Host-side grouping of large scenes (numpy + scipy), the twin of models/scalable_grouping.py.

(N, 3) points -> centres (G, 3) and neighbourhoods (G, K, 3) relative to them, for N up to 2^18 and
more, without an O(G x N) distance matrix:

1. Octree-stratified candidates: sort the points along a Morton (Z-order) curve, score each point by
   how coarse the octree cell it opens is, and keep the M = fps_candidates x G highest scores. Every
   occupied cell of the finest octree level with at most M cells keeps a candidate, so every point
   lies within one cell diagonal of a candidate.
2. Exact farthest point sampling over the M candidates (O(G M) instead of O(G N)), ties to the lowest
   index (exact.farthest_point_sample_from: numpy, or fpsample for small M where installed).
3. Exact kNN over all N points: a k-d tree's (scipy.spatial.cKDTree) k + margin nearest, re-ranked by the
   graph's float32 formula, with a full row where the margin cannot be shown to suffice.

Every step is the same arithmetic as the PyTorch/ONNX graph version, so host and graph grouping pick the
same centres and the same neighbourhoods in the same order (issue 15), ties included.
"""

from __future__ import annotations

import numpy as np

from foundry_edge.data.grouping.exact import farthest_point_sample_from, knn_indices, nearest_in_order
from foundry_edge.errors import FoundryError, require

MORTON_BITS = 10  # octree levels: a 1024^3 grid over the cloud's bounding cube
KNN_MARGIN = 16  # candidates beyond k the k-d tree returns for the float32 re-ranking (knn: why any margin is exact)


def validate_scene(points: np.ndarray, group_size: int) -> np.ndarray:
    """Refuse clouds that cannot be grouped, with what to do about it; returns (N, 3) float32."""
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 3:
        raise FoundryError(f"a scene must be an (N, 3) array of x, y, z; got shape {points.shape}")
    if len(points) < group_size:
        raise FoundryError(f"a scene needs at least {group_size} points (one group); got {len(points)}: "
                           "pass a larger cloud or lower group_size")
    bad = ~np.isfinite(points).all(axis=1)
    if bad.any():
        raise FoundryError(f"the scene has {int(bad.sum())} of {len(points)} points with NaN or infinite "
                           "coordinates; drop them first (points[np.isfinite(points).all(1)])")
    if np.ptp(points, axis=0).max() == 0.0:
        raise FoundryError(f"all {len(points)} points of the scene are identical: there is no shape to "
                           "group; check the reader or the sensor export")
    return points.astype(np.float32, copy=False)


def num_candidates(num_points: int, num_groups: int, fps_candidates: int) -> int:
    """M: how many stratified candidates FPS runs over (all points when that is fewer)."""
    return min(num_points, fps_candidates * num_groups)


def _spread_bits(bits: int) -> np.ndarray:
    """(2^bits,) int64 table putting bit j of v at bit 3j (the Morton interleave of one axis)."""
    values = np.arange(1 << bits, dtype=np.int64)
    out = np.zeros_like(values)
    for j in range(bits):
        out |= ((values >> j) & 1) << (3 * j)
    return out


def grid_cells(points: np.ndarray, bits: int = MORTON_BITS) -> np.ndarray:
    """(N, 3) -> (N, 3) int64 cells of a 2^bits grid over the cloud's bounding cube."""
    low = points.min(axis=0)
    extent = max((points.max(axis=0) - low).max(), np.float32(1e-12))
    scale = np.float32((1 << bits) - 1) / np.float32(extent)  # float32, as in the graph
    return np.clip(np.floor((points - low) * scale).astype(np.int64), 0, (1 << bits) - 1)


def stratified_candidates(points: np.ndarray, count: int, bits: int = MORTON_BITS) -> np.ndarray:
    """(N, 3) -> (count,) int64 indices spread over the octree, coarsest cells first.

    A point's score is how many octree levels it opens a new cell at (its cell against the previous
    point's in Z order); ties go to the earlier point in Z order. Keys are unique, so the selection
    and its order are deterministic. A cell at level l is the code's top 3 l bits, so the levels a point
    opens follow from the highest bit h where its code and the previous one differ: h // 3 + 1 (the
    graph counts them level by level; the same numbers, 30x faster here).
    """
    n = len(points)
    cells = grid_cells(points, bits)
    table = _spread_bits(bits)
    codes = table[cells[:, 0]] + 2 * table[cells[:, 1]] + 4 * table[cells[:, 2]]
    order = np.argsort(codes * n + np.arange(n))
    codes = codes[order]
    changed = codes ^ np.concatenate([codes[:1], codes[:-1]])
    highest = np.frexp(changed.astype(np.float64))[1] - 1  # floor(log2) for codes < 2^53, exact
    opens = np.where(changed > 0, highest // 3 + 1, 0)
    opens[0] = bits + 1  # the first point opens every level
    key = opens * n + (n - 1 - np.arange(n))
    top = np.argpartition(-key, count - 1)[:count] if count < n else np.arange(n)
    return order[top[np.argsort(-key[top])]]


def farthest_point_sample(points: np.ndarray, num_samples: int, start_from: np.ndarray) -> np.ndarray:
    """(M, 3) -> (S,) int64 exact FPS indices starting at the point farthest from `start_from`, ties to the
    lowest index as in the graph (exact.farthest_point_sample_from)."""
    start = int(np.argmax(((points - start_from) ** 2).sum(axis=1)))
    return farthest_point_sample_from(points, num_samples, start)


def select_centers(points: np.ndarray, num_groups: int, fps_candidates: int = 4) -> np.ndarray:
    """(N, 3) -> (G,) int64 indices: FPS over the stratified candidates, started from the centroid."""
    count = num_candidates(len(points), num_groups, fps_candidates)
    candidates = stratified_candidates(points, count)
    picked = farthest_point_sample(points[candidates], num_groups, start_from=points.mean(axis=0))
    return candidates[picked]


def knn(points: np.ndarray, centers: np.ndarray, k: int, margin: int = KNN_MARGIN) -> np.ndarray:
    """(N, 3) points, (G, 3) centres -> (G, k) int64 indices of the k nearest points, nearest first.

    The graph's ranking (float32 |a|^2 - 2 a.b + |b|^2, ties to the lowest index: exact.knn_indices) at
    k-d tree speed: the tree's k + margin nearest in float64, re-ranked by the graph's formula. A point
    left out is at least as far as the last candidate (r, float64) and the float32 formula errs by at most
    8u (|a| + |b|)^2 (u = 2^-24, _float32_error), so a row whose k-th float32 distance is below
    r^2 - that bound has its k first among the candidates, whatever the margin. The rare other rows (more
    than k + margin points tied or within the bound: duplicates, a cloud far from the origin) take an
    exact full row; the margin only sets how rare.
    """
    spatial = require("scipy.spatial", "scenes")
    num = min(k + margin, len(points))
    tree = spatial.cKDTree(points, balanced_tree=False, compact_nodes=False)
    reach, candidates = tree.query(centers, k=num, workers=-1)
    candidates = np.asarray(candidates, dtype=np.int64).reshape(len(centers), num)
    dist = _graph_distance(points, centers, candidates)
    index = nearest_in_order(dist, candidates, k)
    if num < len(points):
        kth = np.partition(dist, k - 1, axis=1)[:, k - 1].astype(np.float64)
        outside = np.asarray(reach, dtype=np.float64).reshape(len(centers), num)[:, -1] ** 2 * (1 - 1e-12)
        unsure = np.flatnonzero(kth >= outside - _float32_error(points, centers))
        if len(unsure):
            index[unsure] = knn_indices(centers[None, unsure], points[None], k)[0]
    return index


def _graph_distance(points: np.ndarray, centers: np.ndarray, candidates: np.ndarray, block: int = 8) -> np.ndarray:
    """(N, 3), (G, 3), (G, C) -> (G, C) float32 |a|^2 - 2 a.b + |b|^2, bit for bit exact.square_distance's.

    a.b by the BLAS call square_distance makes, a matrix product (gemm): `block` centres against all their
    candidates at once, keeping each centre's own. A matrix-vector product per centre (gemv) would be
    cheaper but OpenBLAS rounds its tail rows without the fused multiply-add gemm uses (tests check the bits).
    """
    count, width = candidates.shape
    pad = -count % block
    centers_b = np.concatenate([centers, np.repeat(centers[-1:], pad, axis=0)]).reshape(-1, block, 3)
    index = np.concatenate([candidates, np.repeat(candidates[-1:], pad, axis=0)])
    others = np.ascontiguousarray(points[index].reshape(len(centers_b), block * width, 3).transpose(0, 2, 1))
    own = np.arange(block)
    inner = np.matmul(centers_b, others).reshape(-1, block, block, width)[:, own, own].reshape(-1, width)[:count]
    inner *= np.float32(-2.0)
    inner += (centers * centers).sum(-1, keepdims=True)
    inner += (points * points).sum(-1)[candidates]
    return inner


def _float32_error(points: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """(G,) float64 bound on |float32 |a|^2 - 2 a.b + |b|^2 - |a - b|^2| over all points b of the cloud.

    Each of |a|^2, |b|^2, a.b (3 terms, any order, fused or not) errs by at most 3u times its magnitude
    and the two sums by u each: 5u (|a| + |b|)^2 to first order; 8u leaves room for the higher orders.
    """
    reach = np.sqrt((points.astype(np.float64) ** 2).sum(1).max())
    norm = np.sqrt((centers.astype(np.float64) ** 2).sum(1))
    return 8.0 * 2.0 ** -24 * (norm + reach) ** 2


def group_scene(points: np.ndarray, num_groups: int, group_size: int, fps_candidates: int = 4):
    """(N, 3) -> neighbourhoods (G, K, 3) relative to their centres, centres (G, 3), float32."""
    points = validate_scene(points, group_size)
    if num_groups > len(points):
        raise FoundryError(f"num_groups {num_groups} exceeds the scene's {len(points)} points; lower num_groups")
    centers = points[select_centers(points, num_groups, fps_candidates)]
    neighbours = points[knn(points, centers, group_size)]
    return neighbours - centers[:, None, :], centers


def group_clouds(points: np.ndarray, num_groups: int, group_size: int, fps_candidates: int = 4):
    """(B, N, 3) -> neighbourhoods (B, G, K, 3), centres (B, G, 3): the host feed of a scalable model."""
    groups = [group_scene(cloud, num_groups, group_size, fps_candidates) for cloud in np.asarray(points)]
    return np.stack([n for n, _ in groups]), np.stack([c for _, c in groups])


def coverage(points: np.ndarray, centers: np.ndarray) -> float:
    """Max over points of the distance to the nearest centre (lower is better; FPS minimises it)."""
    spatial = require("scipy.spatial", "scenes")
    dist, _ = spatial.cKDTree(centers).query(points, k=1, workers=-1)
    return float(dist.max())
