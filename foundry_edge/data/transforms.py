"""Preprocessing and training augmentations on numpy clouds: (N, 3) or batched (B, N, 3).

`normalize` is the host twin of `foundry_edge.models.model.normalize_cloud` (same formula), so a cloud
normalised here and one normalised in the exported graph agree. Everything random takes a seed or a
`np.random.Generator` and is deterministic for a given one.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import numpy as np

from foundry_edge.errors import FoundryError

Seed = Union[int, np.random.Generator, None]


def normalize(points: np.ndarray) -> np.ndarray:
    """(..., N, 3) -> (..., N, 3) float32: centred on the mean, scaled so the farthest point is at radius 1."""
    points = np.asarray(points, dtype=np.float32)
    centred = points - points.mean(axis=-2, keepdims=True)
    radius = np.maximum(np.linalg.norm(centred, axis=-1).max(axis=-1), np.float32(1e-12))
    return centred / radius[..., None, None]


def resample_indices(num_points: int, n: int, seed: Seed = 0) -> np.ndarray:
    """(n,) int64 indices into a cloud of `num_points` points, deterministic for a seed.

    N >= n: a random subset without replacement (in random order). N < n: every point once, then
    n - N points repeated, drawn at random with replacement, so no point is lost and the extra
    copies add no new geometry (models that pool with max are unaffected by duplicates).
    """
    if num_points < 1 or n < 1:
        raise FoundryError(f"resampling needs a non-empty cloud and n >= 1, found {num_points} points and n={n}")
    rng = np.random.default_rng(seed)
    if num_points >= n:
        return rng.choice(num_points, size=n, replace=False).astype(np.int64)
    extra = rng.integers(0, num_points, size=n - num_points)
    return np.concatenate([np.arange(num_points), extra]).astype(np.int64)


def resample(points: np.ndarray, n: int, seed: Seed = 0) -> np.ndarray:
    """(N, 3) -> (n, 3): see `resample_indices` for the rule."""
    return points[resample_indices(len(points), n, seed)]


def random_rotations(rng: np.random.Generator, shape: Tuple[int, ...] = (), axis: Optional[str] = None) -> np.ndarray:
    """(*shape, 3, 3) rotations: uniform over SO(3) (QR of a Gaussian, signs fixed), or about `axis` x/y/z."""
    if axis is None:
        q, r = np.linalg.qr(rng.normal(size=shape + (3, 3)))
        q = q * np.sign(np.diagonal(r, axis1=-2, axis2=-1))[..., None, :]
        return q * np.sign(np.linalg.det(q))[..., None, None]
    if axis not in ("x", "y", "z"):
        raise FoundryError(f"rotation axis must be x, y, z or None (any rotation), found {axis!r}")
    angle = rng.uniform(0, 2 * np.pi, size=shape)
    c, s, i = np.cos(angle), np.sin(angle), "xyz".index(axis)
    out = np.zeros(shape + (3, 3))
    j, k = [a for a in range(3) if a != i]
    out[..., i, i], out[..., j, j], out[..., k, k], out[..., j, k], out[..., k, j] = 1, c, c, -s, s
    return out


def augment(points: np.ndarray, seed: Seed = None, *, scale: Tuple[float, float] = (2 / 3, 3 / 2),
            rotate: Optional[str] = "y", jitter: float = 0.01, clip: float = 0.05) -> np.ndarray:
    """(..., N, 3) -> (..., N, 3) float32 training copy, one draw per cloud: anisotropic scale in `scale`
    (Point-MAE's range), a rotation about `rotate` ("x"/"y"/"z", "so3" for any, None for none), and
    Gaussian jitter with std `jitter` clipped to +-`clip` (PointNet's jitter).
    """
    rng = np.random.default_rng(seed)
    points = np.asarray(points, dtype=np.float32)
    batch = points.shape[:-2]
    out = points * rng.uniform(scale[0], scale[1], size=batch + (1, 3))
    if rotate is not None:
        out = out @ np.swapaxes(random_rotations(rng, batch, None if rotate == "so3" else rotate), -1, -2)
    if jitter > 0:
        out = out + np.clip(rng.normal(scale=jitter, size=points.shape), -clip, clip)
    return out.astype(np.float32)
