"""Large scenes: a synthetic test scene and the memory budget check made before a run.

A scene is an (N, 3) float32 cloud with N from 2^16 to 2^18 and more. The budget check estimates a
model's peak memory from its config alone, so a scene too large for the device is refused with the
largest size that fits, before anything is allocated.
"""

from __future__ import annotations

import numpy as np

from foundry_edge.errors import FoundryError

GIB = 1 << 30


def synthetic_scene(num_points: int, seed: int = 0) -> np.ndarray:
    """(N, 3) float32 indoor-like scene: a floor with a density gradient, objects, a few outliers.

    Uneven density and isolated points are what break naive subsampling, so the scene has both.
    """
    from foundry_edge.data.synthetic import SYNTHETIC_CLASSES, sample_shape

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
