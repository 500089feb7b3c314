"""Synthetic shapes: a deterministic, labelled point-cloud data set that needs no download.

Ten classes of primitives sampled uniformly over their surface (area-weighted), each with a random
rotation, an anisotropic scale and Gaussian point noise, so a small point network can tell them apart
but not from the raw axes or extents alone. Every point carries a part label from one fixed global
table, `SYNTHETIC_PARTS` (ShapeNetPart style: part ids are unique across classes):

    id  class/part              id  class/part
     0  sphere/surface           9  capsule/body
     1  box/side (4 faces)      10  capsule/cap
     2  box/cap (2 faces)       11  pyramid/side
     3  cylinder/body           12  pyramid/base
     4  cylinder/cap            13  hemisphere/dome
     5  cone/side               14  hemisphere/base
     6  cone/base               15  octahedron/upper
     7  torus/surface           16  octahedron/lower
     8  disc/face

Sample i of a split is drawn from `np.random.default_rng([seed, crc32(split), i])`, so it is the same
on every machine and every read, and another split or seed gives independent samples.
"""

from __future__ import annotations

import zlib
from typing import Callable, Dict, Iterator, List, Sequence, Tuple

import numpy as np

from foundry_edge.data.transforms import random_rotations
from foundry_edge.errors import FoundryError

SYNTHETIC_CLASSES: Tuple[str, ...] = ("sphere", "box", "cylinder", "cone", "torus", "disc", "capsule",
                                      "pyramid", "hemisphere", "octahedron")
SYNTHETIC_PARTS: Tuple[str, ...] = (
    "sphere/surface", "box/side", "box/cap", "cylinder/body", "cylinder/cap", "cone/side", "cone/base",
    "torus/surface", "disc/face", "capsule/body", "capsule/cap", "pyramid/side", "pyramid/base",
    "hemisphere/dome", "hemisphere/base", "octahedron/upper", "octahedron/lower",
)
# class -> its global part ids, in the order its sampler lists its parts.
CLASS_PART_IDS: Dict[str, Tuple[int, ...]] = {
    c: tuple(i for i, p in enumerate(SYNTHETIC_PARTS) if p.split("/")[0] == c) for c in SYNTHETIC_CLASSES
}
SYNTHETIC_PART_COUNTS: Dict[str, int] = {c: len(ids) for c, ids in CLASS_PART_IDS.items()}
NUM_SYNTHETIC_PARTS = len(SYNTHETIC_PARTS)

# A part is (area, sampler): sampler(rng, k) -> (k, 3) points uniform on that surface.
Part = Tuple[float, Callable[[np.random.Generator, int], np.ndarray]]


# ---- surface samplers, canonical frame (centred, about unit size, axis along z) ----

def _unit_vectors(rng: np.random.Generator, k: int) -> np.ndarray:
    v = rng.normal(size=(k, 3))
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def _disc(rng: np.random.Generator, k: int, radius: float, z: float) -> np.ndarray:
    """(k, 3) uniform on a disc in the plane z (sqrt makes it uniform in area)."""
    r = radius * np.sqrt(rng.random(k))
    t = rng.random(k) * 2 * np.pi
    return np.stack([r * np.cos(t), r * np.sin(t), np.full(k, z)], axis=1)


def _tube(rng: np.random.Generator, k: int, radius: float, half_height: float) -> np.ndarray:
    t = rng.random(k) * 2 * np.pi
    z = rng.uniform(-half_height, half_height, k)
    return np.stack([radius * np.cos(t), radius * np.sin(t), z], axis=1)


def _mesh_part(vertices: np.ndarray, faces: Sequence[Sequence[int]]) -> Part:
    """A triangle-mesh part: faces picked by area, points by uniform barycentric coordinates."""
    tri = vertices[np.asarray(faces)]                                   # (F, 3 corners, 3)
    areas = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)

    def sample(rng: np.random.Generator, k: int) -> np.ndarray:
        f = tri[rng.choice(len(tri), size=k, p=areas / areas.sum())]
        u, v = np.sqrt(rng.random(k))[:, None], rng.random(k)[:, None]
        return (1 - u) * f[:, 0] + u * (1 - v) * f[:, 1] + u * v * f[:, 2]

    return float(areas.sum()), sample


def _sphere(rng):
    return [(4 * np.pi, lambda g, k: _unit_vectors(g, k))]


def _box(rng):
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64)
    # corner index = 4*(x>0) + 2*(y>0) + (z>0); each square face as two triangles.
    sides = [(0, 1, 3), (0, 3, 2), (4, 5, 7), (4, 7, 6), (0, 1, 5), (0, 5, 4), (2, 3, 7), (2, 7, 6)]
    caps = [(0, 2, 6), (0, 6, 4), (1, 3, 7), (1, 7, 5)]
    return [_mesh_part(corners, sides), _mesh_part(corners, caps)]


def _cylinder(rng):
    h = rng.uniform(0.6, 1.5)
    cap = lambda g, k: _disc(g, k, 1.0, 0.0) + np.array([0, 0, h]) * np.sign(g.random(k) - 0.5)[:, None]
    return [(4 * np.pi * h, lambda g, k: _tube(g, k, 1.0, h)), (2 * np.pi, cap)]


def _cone(rng):
    height = rng.uniform(1.2, 2.2)

    def side(g, k):
        t = np.sqrt(g.random(k))                                        # distance from the apex, area-uniform
        a = g.random(k) * 2 * np.pi
        return np.stack([t * np.cos(a), t * np.sin(a), height / 2 - t * height], axis=1)

    return [(np.pi * np.hypot(1.0, height), side), (np.pi, lambda g, k: _disc(g, k, 1.0, -height / 2))]


def _torus(rng):
    R, r = 1.0, rng.uniform(0.2, 0.45)

    def surface(g, k):
        # Tube angle phi by rejection: area density is proportional to R + r cos(phi).
        phi = np.empty(0)
        while phi.size < k:
            cand = g.random(2 * k) * 2 * np.pi
            phi = np.concatenate([phi, cand[g.random(2 * k) * (R + r) < R + r * np.cos(cand)]])
        phi, theta = phi[:k], g.random(k) * 2 * np.pi
        ring = R + r * np.cos(phi)
        return np.stack([ring * np.cos(theta), ring * np.sin(theta), r * np.sin(phi)], axis=1)

    return [(4 * np.pi ** 2 * R * r, surface)]


def _disc_shape(rng):
    return [(np.pi, lambda g, k: _disc(g, k, 1.0, 0.0))]


def _capsule(rng):
    r, h = 0.5, rng.uniform(0.5, 1.0)

    def cap(g, k):
        p = _unit_vectors(g, k) * r
        return p + np.array([0, 0, h]) * np.where(p[:, 2:] >= 0, 1.0, -1.0)

    return [(4 * np.pi * r * h, lambda g, k: _tube(g, k, r, h)), (4 * np.pi * r * r, cap)]


def _pyramid(rng):
    height = rng.uniform(1.0, 2.0)
    v = np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0], [0, 0, height]], dtype=np.float64)
    v[:, 2] -= height / 3                                               # roughly centred
    return [_mesh_part(v, [(0, 1, 4), (1, 2, 4), (2, 3, 4), (3, 0, 4)]), _mesh_part(v, [(0, 1, 2), (0, 2, 3)])]


def _hemisphere(rng):
    def dome(g, k):
        p = _unit_vectors(g, k)
        p[:, 2] = np.abs(p[:, 2]) - 0.5
        return p

    return [(2 * np.pi, dome), (np.pi, lambda g, k: _disc(g, k, 1.0, -0.5))]


def _octahedron(rng):
    z = rng.uniform(1.0, 1.8)
    v = np.array([[1, 0, 0], [0, 1, 0], [-1, 0, 0], [0, -1, 0], [0, 0, z], [0, 0, -z]], dtype=np.float64)
    ring = [(0, 1), (1, 2), (2, 3), (3, 0)]
    return [_mesh_part(v, [(a, b, 4) for a, b in ring]), _mesh_part(v, [(a, b, 5) for a, b in ring])]


_SHAPES = {"sphere": _sphere, "box": _box, "cylinder": _cylinder, "cone": _cone, "torus": _torus,
           "disc": _disc_shape, "capsule": _capsule, "pyramid": _pyramid, "hemisphere": _hemisphere,
           "octahedron": _octahedron}


def sample_shape(name: str, num_points: int, rng: np.random.Generator, noise: float = 0.01
                 ) -> Tuple[np.ndarray, np.ndarray]:
    """One posed shape: (N, 3) float32 points and (N,) int64 global part ids, points in random order."""
    parts = _SHAPES[name](rng)
    areas = np.array([a for a, _ in parts])
    counts = rng.multinomial(num_points, areas / areas.sum())
    points = np.concatenate([sample(rng, k) for (_, sample), k in zip(parts, counts)])
    part_ids = np.repeat(np.asarray(CLASS_PART_IDS[name], dtype=np.int64), counts)
    scale = rng.uniform(0.6, 1.4, size=3)
    points = (points * scale) @ random_rotations(rng).T + rng.normal(scale=noise, size=points.shape)
    order = rng.permutation(num_points)
    return points[order].astype(np.float32), part_ids[order]


class SyntheticShapes:
    """Indexable, re-iterable synthetic data set: item -> dict(points (N, 3) f32, label int, parts (N,) i64).

    Labels index `self.classes` (all of `SYNTHETIC_CLASSES` by default, else the given subset, in its
    order) and cycle through them, so any `num_samples >= len(classes)` holds every class. Part ids are
    the global ids of `SYNTHETIC_PARTS` whatever the subset.
    """

    def __init__(self, num_samples: int, num_points: int = 1024, seed: int = 0,
                 classes: Sequence[str] | None = None, noise: float = 0.01, split: str = "train"):
        self.classes: List[str] = list(SYNTHETIC_CLASSES if classes is None else classes)
        unknown = [c for c in self.classes if c not in _SHAPES]
        if unknown or not self.classes:
            raise FoundryError(f"synthetic classes must be a non-empty subset of {list(SYNTHETIC_CLASSES)}; "
                               f"got {unknown or 'none'}: pick names from that list")
        if num_samples < 0 or num_points < 1 or noise < 0:
            raise FoundryError(f"synthetic data needs num_samples >= 0, num_points >= 1 and noise >= 0; got "
                               f"{num_samples}, {num_points}, {noise}: pass non-negative sizes")
        self.num_samples, self.num_points, self.seed = int(num_samples), int(num_points), int(seed)
        self.noise, self.split = float(noise), str(split)
        self._split_key = zlib.crc32(self.split.encode("utf-8"))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_parts(self) -> int:
        return NUM_SYNTHETIC_PARTS

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> dict:
        if not -self.num_samples <= index < self.num_samples:
            raise IndexError(f"sample {index} out of range for {self.num_samples} synthetic samples")
        index %= self.num_samples
        label = index % len(self.classes)
        rng = np.random.default_rng([self.seed, self._split_key, index])
        points, parts = sample_shape(self.classes[label], self.num_points, rng, self.noise)
        return {"points": points, "label": label, "parts": parts}

    def __iter__(self) -> Iterator[dict]:
        return (self[i] for i in range(self.num_samples))

    def __repr__(self) -> str:
        return (f"SyntheticShapes(num_samples={self.num_samples}, num_points={self.num_points}, seed={self.seed}, "
                f"classes={len(self.classes)}, noise={self.noise}, split={self.split!r})")


def example_clouds(batch: int, num_points: int, seed: int) -> np.ndarray:
    """(B, N, 3) float32 noisy ellipsoids, off-centre and unscaled: deterministic for a seed.

    What export traces and validates with: unlike SyntheticShapes they are not normalised, so the
    graph's own centring and scaling is exercised.
    """
    rng = np.random.default_rng(seed)
    pts = rng.normal(size=(batch, num_points, 3))
    pts /= np.linalg.norm(pts, axis=-1, keepdims=True)
    pts = pts * rng.uniform(0.3, 2.0, size=(batch, 1, 3)) + rng.normal(size=(batch, 1, 3))
    return (pts + 0.01 * rng.normal(size=pts.shape)).astype(np.float32)


def synthetic_scene(num_points: int, seed: int = 0) -> np.ndarray:
    """(N, 3) float32 indoor-like scene: a floor with a density gradient, objects, a few outliers.

    Uneven density and isolated points are what break naive subsampling, so the scene has both.
    """
    rng = np.random.default_rng(seed)
    n_floor, n_outliers = int(num_points * 0.4), max(1, num_points // 5000)
    n_objects = num_points - n_floor - n_outliers
    floor = np.column_stack([rng.uniform(0, 8, n_floor) ** 1.5 / 8 ** 0.5, rng.uniform(0, 8, n_floor),
                             rng.normal(0, 0.005, n_floor)])
    parts = [floor, rng.uniform([-2, -2, 0], [10, 10, 4], size=(n_outliers, 3))]
    per_object = np.diff(np.linspace(0, n_objects, 13).astype(int))
    for i, count in enumerate(per_object):
        shape, _ = sample_shape(SYNTHETIC_CLASSES[i % len(SYNTHETIC_CLASSES)], int(count), rng)
        scale = rng.uniform(0.3, 1.2)
        parts.append(shape * scale + [rng.uniform(0.5, 7.5), rng.uniform(0.5, 7.5), scale])
    return np.concatenate(parts).astype(np.float32)
