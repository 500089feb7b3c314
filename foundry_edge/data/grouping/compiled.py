"""Compiled host grouping (numba): exact.py's FPS and kNN as loops, the same indices bit for bit (issue 15).

numpy pays its per-call overhead on each of the S sequential FPS steps; these loops do not (1024 points,
64 centres: tens of microseconds). exact.py calls them where numba imports (the `fast` extra), else its
numpy/fpsample code. Same arithmetic as the numpy and graph twins, IEEE float32 throughout (no fastmath,
so no reassociation and no FMA contraction the source does not ask for):

    FPS  (dx*dx + dy*dy) + dz*dz, running minimum, argmax by a strict `>` scan: ties to the lowest index
    kNN  (|a|^2 - 2 a.b) + |b|^2, |a|^2 = (x*x + y*y) + z*z; a.b as numpy's matmul rounds it: OpenBLAS's
         sgemm (x86 FMA kernels, aarch64 NEON) fuses it, fma(az, bz, fma(ay, by, ax*bx)); `matmul_is_fused`
         asks numpy once which it does. The k nearest kept in a sorted array by (distance, index).

Inputs are float32, C-contiguous and finite (preprocess.check_clouds): exact.py converts or falls back.

Compile cost, on the first host_feed of a process (2 shared x86 cores): 3-8 s with an empty cache; with
cache=True the machine code is written to NUMBA_CACHE_DIR where set, else beside this file (__pycache__),
else the user's cache (~/.cache/numba), and a later process pays about 0.6 s (0.3 s of it importing numba,
which also imports scipy where installed). Where no cache directory is writable, the kernels are compiled
in memory at every process start, without a warning. Nothing is imported before the first FPS or kNN.
"""

from __future__ import annotations

import functools
import warnings

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

F32 = np.float32


def _njit(func=None, **options):
    """numba.njit(cache=True) where a cache directory is writable, else compiled in memory without a warning."""
    if func is None:
        return functools.partial(_njit, **options)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", numba.NumbaWarning)
            return numba.njit(cache=True, nogil=True, **options)(func)
    except RuntimeError:  # "cannot cache function ...: no locator available": no writable cache directory
        return numba.njit(nogil=True, **options)(func)


@intrinsic
def _fma(typingctx, a, b, c):
    """float32 a*b + c rounded once (LLVM's llvm.fma: the hardware FMA, or a correctly rounded fmaf)."""
    sig = types.float32(types.float32, types.float32, types.float32)

    def codegen(context, builder, signature, args):
        f32 = ir.FloatType()
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(f32, [f32] * 3), "llvm.fma.f32")
        return builder.call(fma, args)

    return sig, codegen


@_njit
def fps(points, num_samples, start):
    """(B, N, 3) float32, S, (B,) int64 start indices -> (B, S) int64 FPS indices, ties to the lowest index."""
    batch, n = points.shape[0], points.shape[1]
    out = np.empty((batch, num_samples), np.int64)
    xs, ys, zs = np.empty(n, F32), np.empty(n, F32), np.empty(n, F32)
    min_dist = np.empty(n, F32)
    as_int = min_dist.view(np.int32)  # distances >= +0.0: their bits order as int32 as the floats do
    for b in range(batch):
        for j in range(n):
            xs[j], ys[j], zs[j] = points[b, j, 0], points[b, j, 1], points[b, j, 2]
            min_dist[j] = np.inf
        farthest = start[b]
        for i in range(num_samples):
            out[b, i] = farthest
            cx, cy, cz = xs[farthest], ys[farthest], zs[farthest]
            for j in range(n):
                dx, dy, dz = xs[j] - cx, ys[j] - cy, zs[j] - cz
                d = (dx * dx + dy * dy) + dz * dz
                min_dist[j] = d if d < min_dist[j] else min_dist[j]
            farthest = _first_max(as_int)
    return out


@_njit
def fps_start(points):
    """(B, N, 3) float32 -> (B,) int64: the point farthest from the centroid, ties to the lowest index.

    numpy's bits: points.mean(axis=1) sums along N one point after another in float32 and divides by N
    (an outer-axis reduction, not the pairwise sum of an inner axis), then ((p - c) ** 2).sum(-1).argmax(1).
    """
    batch, n = points.shape[0], points.shape[1]
    start = np.empty(batch, np.int64)
    dist = np.empty(n, F32)
    for b in range(batch):
        cx, cy, cz = F32(0.0), F32(0.0), F32(0.0)
        for j in range(n):
            cx, cy, cz = cx + points[b, j, 0], cy + points[b, j, 1], cz + points[b, j, 2]
        cx, cy, cz = cx / F32(n), cy / F32(n), cz / F32(n)
        for j in range(n):
            dx, dy, dz = points[b, j, 0] - cx, points[b, j, 1] - cy, points[b, j, 2] - cz
            dist[j] = (dx * dx + dy * dy) + dz * dz
        start[b] = _first_max(dist.view(np.int32))
    return start


@_njit
def normalize(points):
    """(B, N, 3) float32 -> centred on the mean, scaled into the unit sphere: data.transforms.normalize's bits.

    numpy's mean(axis=-2) sums one point after another in float32 and divides by N; norm(axis=-1) is
    sqrt((x*x + y*y) + z*z) in float32; then the largest radius (at least 1e-12) divides every coordinate.
    """
    batch, n = points.shape[0], points.shape[1]
    out = np.empty_like(points)
    for b in range(batch):
        cx, cy, cz = points[b, 0, 0], points[b, 0, 1], points[b, 0, 2]
        for j in range(1, n):
            cx, cy, cz = cx + points[b, j, 0], cy + points[b, j, 1], cz + points[b, j, 2]
        cx, cy, cz = cx / F32(n), cy / F32(n), cz / F32(n)
        radius = F32(0.0)
        for j in range(n):
            dx, dy, dz = points[b, j, 0] - cx, points[b, j, 1] - cy, points[b, j, 2] - cz
            out[b, j, 0], out[b, j, 1], out[b, j, 2] = dx, dy, dz
            radius = max(radius, np.sqrt((dx * dx + dy * dy) + dz * dz))
        radius = max(radius, F32(1e-12))
        for j in range(n):
            for axis in range(3):
                out[b, j, axis] = out[b, j, axis] / radius
    return out


@_njit
def neighbourhoods(points, index, centers):
    """(B, N, 3), (B, G, K) int64, (B, G, 3) float32 -> (B, G, K, 3) points[index] - their centre."""
    batch, groups, k = index.shape
    out = np.empty((batch, groups, k, 3), F32)
    for b in range(batch):
        for g in range(groups):
            for t in range(k):
                j = index[b, g, t]
                for axis in range(3):
                    out[b, g, t, axis] = points[b, j, axis] - centers[b, g, axis]
    return out


@_njit
def _first_max(values):
    """(N,) int32 -> the lowest index of the largest value: two passes a compiler vectorises, no branch."""
    top = values[0]
    for j in range(values.shape[0]):
        top = max(top, values[j])
    first = values.shape[0]
    for j in range(values.shape[0]):
        first = min(first, j if values[j] == top else values.shape[0])
    return first


@_njit
def knn(query, points, k, fused):
    """(B, M, 3), (B, N, 3) float32, k <= N -> (B, M, k) int64, nearest first, ties to the lowest index.

    `fused`: a.b as one FMA chain (numpy's matmul on OpenBLAS) rather than rounded products and sums.
    Per query: its row of distances, with the minimum of each of G = min(2k, N) strided groups; a bound
    from those minima that at least k distances meet (about 1.4 k do); the k first of those by insertion.
    """
    batch, m, n = query.shape[0], query.shape[1], points.shape[1]
    out = np.empty((batch, m, k), np.int64)
    if k == 0:
        return out
    xs, ys, zs, sq = np.empty(n, F32), np.empty(n, F32), np.empty(n, F32), np.empty(n, F32)
    row = np.empty(n, F32)
    groups = min(2 * k, n)
    group_min, below = np.empty(groups, F32), np.empty(groups, np.int32)
    near_d = np.empty(k, F32)
    two = F32(2.0)
    for b in range(batch):
        for j in range(n):
            x, y, z = points[b, j, 0], points[b, j, 1], points[b, j, 2]
            xs[j], ys[j], zs[j] = x, y, z
            sq[j] = (x * x + y * y) + z * z
        for q in range(m):
            ax, ay, az = query[b, q, 0], query[b, q, 1], query[b, q, 2]
            a_sq = (ax * ax + ay * ay) + az * az
            if fused:
                for j in range(n):
                    row[j] = (a_sq - two * _fma(az, zs[j], _fma(ay, ys[j], ax * xs[j]))) + sq[j]
            else:
                for j in range(n):
                    row[j] = (a_sq - two * ((ax * xs[j] + ay * ys[j]) + az * zs[j])) + sq[j]
            group_min[:] = row[:groups]
            for begin in range(groups, n, groups):
                for t in range(min(groups, n - begin)):
                    d = row[begin + t]
                    group_min[t] = d if d < group_min[t] else group_min[t]
            _nearest(row, k, _bound(k, group_min, below), near_d, out[b, q])
    return out


@_njit
def _bound(k, group_min, below):
    """(G,) group minima, G >= k -> their k-th smallest: k groups, so at least k distances, are at or below it."""
    groups = group_min.shape[0]
    below[:] = 0  # below[t]: how many group minima are <= group_min[t]; vectorised across t
    for i in range(groups):
        low = group_min[i]
        for t in range(groups):
            below[t] += np.int32(low <= group_min[t])
    bound = np.inf
    for t in range(groups):
        if below[t] >= k and group_min[t] < bound:
            bound = group_min[t]
    return bound


@_njit
def _nearest(row, k, bound, near_d, near_i):
    """(N,) float32 -> near_i (k,) int64: the first k by (distance, index) among those <= bound, by insertion."""
    count = 0
    for j in range(row.shape[0]):
        d = row[j]
        if not d <= bound:
            continue
        if count == k:
            if not d < near_d[k - 1]:  # equal to the k-th: a higher index, so after it
                continue
            at = k - 1
        else:
            at = count
            count += 1
        while at > 0 and near_d[at - 1] > d:  # equal distances stay ahead: lower indices
            near_d[at], near_i[at] = near_d[at - 1], near_i[at - 1]
            at -= 1
        near_d[at], near_i[at] = d, j


@functools.lru_cache(maxsize=None)
def matmul_is_fused() -> bool:
    """Whether numpy's float32 matmul (B, M, 3) @ (B, 3, N) rounds a.b as an FMA chain (OpenBLAS) or not."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(1, 16, 3)).astype(F32), rng.normal(size=(1, 3, 64)).astype(F32)
    plain = (a[..., 0:1] * b[:, 0:1] + a[..., 1:2] * b[:, 1:2]) + a[..., 2:3] * b[:, 2:3]
    return not np.array_equal(np.matmul(a, b), plain)
