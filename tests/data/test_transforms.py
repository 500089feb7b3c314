"""Transforms: normalize matches the model's torch formula, resampling is deterministic, augmentations behave."""

from __future__ import annotations

import numpy as np
import pytest

from foundry_edge.data.transforms import augment, normalize, random_rotations, resample, resample_indices
from foundry_edge.errors import FoundryError


def test_normalize_matches_torch_normalize_cloud(clouds):
    torch = pytest.importorskip("torch", reason="the reference formula is the torch model's")
    from foundry_edge.models.model import normalize_cloud

    raw = clouds * np.array([3.0, 1.0, 0.5], dtype=np.float32) + 7.0
    expected = normalize_cloud(torch.from_numpy(raw)).numpy()
    np.testing.assert_allclose(normalize(raw), expected, atol=1e-6)
    np.testing.assert_allclose(normalize(raw[0]), expected[0], atol=1e-6)  # unbatched too
    out = normalize(raw[0])
    assert np.allclose(out.mean(0), 0, atol=1e-6) and np.isclose(np.linalg.norm(out, axis=1).max(), 1.0)


def test_resample_is_deterministic_and_follows_the_rule(rng):
    pts = rng.normal(size=(100, 3)).astype(np.float32)
    a, b = resample(pts, 40, seed=3), resample(pts, 40, seed=3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, resample(pts, 40, seed=4))
    sub = resample_indices(100, 40, seed=3)
    assert len(np.unique(sub)) == 40  # without replacement
    pad = resample_indices(30, 50, seed=1)
    assert set(pad[:30].tolist()) == set(range(30)) and pad.max() < 30  # every point kept, then repeats
    with pytest.raises(FoundryError, match="non-empty"):
        resample_indices(0, 10)


def test_rotations_are_proper_and_axis_rotations_keep_the_axis():
    rng = np.random.default_rng(0)
    rot = random_rotations(rng, (5,))
    np.testing.assert_allclose(rot @ np.swapaxes(rot, -1, -2), np.broadcast_to(np.eye(3), (5, 3, 3)), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(rot), 1.0)
    about_y = random_rotations(rng, (4,), "y")
    np.testing.assert_allclose(about_y @ np.array([0.0, 1.0, 0.0]), np.tile([0.0, 1.0, 0.0], (4, 1)), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(about_y), 1.0)


def test_augment_is_seeded_per_cloud_and_bounded(clouds):
    a, b = augment(clouds, seed=5), augment(clouds, seed=5)
    np.testing.assert_array_equal(a, b)
    assert a.shape == clouds.shape and a.dtype == np.float32
    assert not np.allclose(a[0], clouds[0])
    jittered = augment(clouds, seed=1, scale=(1, 1), rotate=None, jitter=0.5, clip=0.05)
    assert np.abs(jittered - clouds).max() <= 0.05 + 1e-6
    rotated = augment(clouds, seed=2, scale=(1, 1), rotate="so3", jitter=0)
    np.testing.assert_allclose(np.linalg.norm(rotated, axis=-1), np.linalg.norm(clouds, axis=-1), rtol=1e-5)
