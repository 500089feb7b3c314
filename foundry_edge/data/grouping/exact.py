"""Exact host grouping in numpy: FPS over every point, kNN over every point (the paper's grouping).

The same arithmetic as the graph (foundry_edge.models.grouping), so host and graph grouping pick the same
centres and neighbourhoods (issue 15): FPS starts at the point farthest from the centroid, sums
(dx*dx + dy*dy) + dz*dz in float32 and breaks ties to the lowest index (ArgMax semantics); kNN ranks
float32 squared distances written as |a|^2 - 2 a.b + |b|^2, ties to the lowest index, nearest first.

Where numba is installed (the `fast` extra), FPS and kNN run as compiled loops (grouping.compiled: the same
indices; FPS 15-25x, kNN about 3x faster at 1024 points; its docstring has the first-call compile cost). Else:
FPS runs in fpsample (C++) where it is installed (the `scenes` extra) and faster, else in numpy; both give
the same indices. fpsample breaks ties to the last index, so it runs on the reversed cloud. One caveat: a build of
fpsample that contracts its `dist += d * d` into a fused multiply-add (GCC's default -ffp-contract=fast on
aarch64, for one) rounds differently in the last bit, so a near-tie could go another way there; exact ties
(duplicated points, grid coordinates) cannot.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

KNN_BLOCK = 1 << 18  # distances per kNN block (1 MiB of float32): stays in cache, no large temporaries
# fpsample runs one cloud at a time, the numpy loop a whole batch per step: fpsample is faster up to about
# 4096 points in all (B x N; 2.5x at one cloud of 1024), the numpy loop beyond (1.7x at 16384 candidates).
FPSAMPLE_MAX_POINTS = 4096
# A kNN over fewer distances runs in one thread: the hand-off to a second costs what it saves (one 1024-point
# cloud, 64 centres: 65k distances, 0.27 ms), more so while ONNX Runtime's threads still spin after a run.
SPLIT_MIN_DISTANCES = 1 << 18


def square_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(B, M, 3), (B, N, 3) -> (B, M, N) squared distances, the formula the graph uses."""
    inner = np.matmul(a, b.transpose(0, 2, 1))
    return (a * a).sum(-1, keepdims=True) - np.float32(2.0) * inner + (b * b).sum(-1)[:, None, :]


def gather_points(points: np.ndarray, index: np.ndarray) -> np.ndarray:
    """(B, N, C) points, (B, ...) int64 index -> (B, ..., C) selected points."""
    rows = np.arange(points.shape[0]).reshape((-1,) + (1,) * (index.ndim - 1))
    return points[rows, index]


def _fpsample():
    """The fpsample module, or None where the `scenes` extra is not installed (Jetson's engine path)."""
    try:
        import fpsample
    except ImportError:
        return None
    return fpsample


def _compiled():
    """foundry_edge.data.grouping.compiled, or None where numba is not installed (the `fast` extra)."""
    try:
        import numba  # noqa: F401  (first: a test hides it to run the numpy path)
        from foundry_edge.data.grouping import compiled
    except ImportError:
        return None
    return compiled


def compiled_for(*arrays: np.ndarray):
    """The compiled module for float32 inputs where numba is installed, else None."""
    if all(a.dtype == np.float32 for a in arrays):
        return _compiled()
    return None


def farthest_point_sample(points: np.ndarray, num_samples: int) -> np.ndarray:
    """(B, N, 3) -> (B, S) int64 indices; starts at the point farthest from the centroid, ties to the lowest index."""
    compiled = compiled_for(points)
    if compiled is not None:
        return _in_threads(lambda part: compiled.fps(part, num_samples, compiled.fps_start(part)),
                           np.ascontiguousarray(points), axis=0)
    centroid = points.mean(axis=1, keepdims=True)
    start = ((points - centroid) ** 2).sum(-1).argmax(axis=1)
    if not _use_fpsample(points, num_samples):
        return _fps_numpy(points, num_samples, start)
    return np.stack([farthest_point_sample_from(cloud, num_samples, int(s)) for cloud, s in zip(points, start)])


def farthest_point_sample_from(points: np.ndarray, num_samples: int, start: int) -> np.ndarray:
    """(N, 3) float32 -> (S,) int64 FPS indices from index `start`, ties to the lowest index.

    fpsample where installed and faster (FPSAMPLE_MAX_POINTS), on the reversed cloud: its scan keeps the
    last of equal distances, which there is the lowest original index.
    """
    n = len(points)
    compiled = compiled_for(points)
    if compiled is not None:
        return compiled.fps(np.ascontiguousarray(points)[None], num_samples, np.array([start], dtype=np.int64))[0]
    if not _use_fpsample(points[None], num_samples):
        return _fps_numpy(points[None], num_samples, np.array([start]))[0]
    picked = _fpsample().fps_sampling(points[::-1], num_samples, start_idx=n - 1 - int(start))
    return (n - 1) - np.asarray(picked, dtype=np.int64)


def _use_fpsample(points: np.ndarray, num_samples: int) -> bool:
    """(B, N, 3): fpsample for small float32 batches (it computes in float32) where it is installed."""
    batch, n = points.shape[:2]
    return (batch * n <= FPSAMPLE_MAX_POINTS and num_samples <= n and points.dtype == np.float32
            and _fpsample() is not None)


def _fps_numpy(points: np.ndarray, num_samples: int, start: np.ndarray) -> np.ndarray:
    """(B, N, 3), (B,) start indices -> (B, S) int64: the numpy FPS loop, for installs without fpsample.

    Works on x, y, z planes (B, N) in preallocated buffers: the same float32 arithmetic as
    ((p - c) ** 2).sum(-1), bit for bit, without a (B, N, 3) temporary per centre (7x faster at B 8).
    """
    rows = np.arange(points.shape[0])
    farthest = np.asarray(start, dtype=np.int64)
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


def _sort_keys(dist: np.ndarray, index: np.ndarray) -> np.ndarray:
    """(..., k) float32 distances and their int indices -> uint64 keys ordered by (distance, index).

    The float32 bit pattern made monotonic (negatives, from rounding in |a|^2 - 2ab + |b|^2, inverted)
    in the high word, the index in the low word: a sort of these keys is a stable sort by distance.
    """
    bits = np.ascontiguousarray(dist, dtype=np.float32).view(np.uint32).astype(np.uint64)
    monotonic = np.where(bits >> np.uint64(31), ~bits & np.uint64(0xFFFFFFFF), bits | np.uint64(1 << 31))
    return (monotonic << np.uint64(32)) | index.astype(np.uint64)


def nearest_in_order(dist: np.ndarray, index: np.ndarray, k: int) -> np.ndarray:
    """(R, C) float32 distances of candidate points `index` (R, C) -> (R, k) int64 of the k first by (distance, index)."""
    keys = _sort_keys(dist, index)
    if k < keys.shape[-1]:
        keys = np.partition(keys, k - 1, axis=-1)[..., :k]
    return (np.sort(keys, axis=-1) & np.uint64(0xFFFFFFFF)).astype(np.int64)


def _select_rows(dist: np.ndarray, k: int) -> np.ndarray:
    """(R, N) float32 -> (R, k) int64 column indices, ascending, of each row's k first by (distance, index).

    The k-th smallest value from a partition of the floats, then `dist <= kth`: exactly k per row unless the
    k-th distance is tied with points left out; only those rows pick their tied points lowest index first.
    """
    rows, n = dist.shape
    kth = np.partition(dist, k - 1, axis=-1)[:, k - 1:k]
    keep = dist <= kth
    flat = np.flatnonzero(keep)
    if flat.size != rows * k:
        tied = np.count_nonzero(keep, axis=-1) > k
        sub, at = dist[tied], kth[tied]
        equal = sub == at
        wanted = k - np.count_nonzero(sub < at, axis=-1)[:, None]
        keep[tied] = (sub < at) | (equal & (np.cumsum(equal, axis=-1) <= wanted))
        flat = np.flatnonzero(keep)
    return flat.reshape(rows, k) - (np.arange(rows) * n)[:, None]


def _blocks(num_clouds: int, num_queries: int, num_points: int):
    """(cloud slice, query slice) blocks of about KNN_BLOCK distances: whole clouds when they are small."""
    rows = max(8, KNN_BLOCK // num_points)  # 8 rows at least: a matrix product (gemm), as one distance matrix
    if rows >= num_queries:
        step = rows // num_queries
        for b in range(0, num_clouds, step):
            yield slice(b, b + step), slice(0, num_queries)
    else:
        for b in range(num_clouds):
            for m in range(0, num_queries, rows):
                yield slice(b, b + 1), slice(m, m + rows)


def knn_indices(query: np.ndarray, points: np.ndarray, k: int) -> np.ndarray:
    """(B, M, 3), (B, N, 3) -> (B, M, k) int64 indices of the k nearest points, nearest first.

    The first k of a stable argsort of square_distance, without sorting all N per centre: blocks of rows
    (KNN_BLOCK distances, in cache), a float partition for the k-th distance, then the k kept put in
    (distance, index) order. 5x (B 8, 1024 points) to 15x (B 8, 4096) faster than sorting keys of all N.
    """
    num_clouds, num_queries, _ = query.shape
    num_points = points.shape[1]
    k = min(k, num_points)
    compiled = compiled_for(query, points)
    if compiled is not None:
        points, fused = np.ascontiguousarray(points), compiled.matmul_is_fused()
        run = lambda part: compiled.knn(part, points, k, fused)  # noqa: E731
        if num_clouds * num_queries * num_points < SPLIT_MIN_DISTANCES:
            return run(np.ascontiguousarray(query))
        return _in_threads(run, np.ascontiguousarray(query), axis=1)
    points_t = np.ascontiguousarray(points.transpose(0, 2, 1))
    query_sq = (query * query).sum(-1, keepdims=True)
    points_sq = (points * points).sum(-1)[:, None, :]
    out = np.empty((num_clouds, num_queries, k), dtype=np.int64)
    for clouds, queries in _blocks(num_clouds, num_queries, num_points):
        dist = np.matmul(query[clouds, queries], points_t[clouds])
        dist *= np.float32(-2.0)  # a + (-2 i) + b: the same bits as a - 2 i + b (square_distance)
        dist += query_sq[clouds, queries]
        dist += points_sq[clouds]
        shape = dist.shape[:2]
        dist = dist.reshape(-1, num_points).astype(np.float32, copy=False)  # float64 input: ranked in float32
        index = _select_rows(dist, k) if k < num_points else np.broadcast_to(np.arange(k), dist.shape)
        ordered = nearest_in_order(np.take_along_axis(dist, index, -1), index, k)
        out[clouds, queries] = ordered.reshape(*shape, k)
    return out


def group(points: np.ndarray, num_groups: int, group_size: int):
    """(B, N, 3) -> neighbourhoods (B, G, K, 3) relative to their centres, centres (B, G, 3)."""
    compiled = compiled_for(points)
    points = np.ascontiguousarray(points) if compiled is not None else points
    centers = gather_points(points, farthest_point_sample(points, num_groups))
    index = knn_indices(centers, points, group_size)
    if compiled is not None:
        return compiled.neighbourhoods(points, index, centers), centers
    neighbours = gather_points(points, index)
    return (neighbours - centers[:, :, None, :]).astype(np.float32), centers.astype(np.float32)


def _in_threads(work, array: np.ndarray, axis: int) -> np.ndarray:
    """work(array) with `array` split along `axis` (clouds for FPS, queries for kNN) over this process's cores:
    the compiled loops release the GIL, and host grouping runs before the network, whose cores are idle
    meanwhile. Results are the same at any split."""
    workers = min(array.shape[axis], _cores())
    if workers < 2:
        return work(array)
    parts = [np.ascontiguousarray(part) for part in np.array_split(array, workers, axis=axis)]
    return np.concatenate(list(_pool(workers).map(work, parts)), axis=axis)


@functools.lru_cache(maxsize=None)
def _cores() -> int:
    """The cores this process may run on (its affinity where the OS says, as a container's CPU set)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@functools.lru_cache(maxsize=None)
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(workers, thread_name_prefix="host-grouping")


if hasattr(os, "register_at_fork"):  # a forked child (a DataLoader worker) has none of the parent's threads
    os.register_at_fork(after_in_child=_pool.cache_clear)
