"""Synthetic shapes: determinism, held-out splits, every class, consistent part labels, learnable classes."""

from __future__ import annotations

import numpy as np
import pytest

from foundry_edge.data.synthetic import (CLASS_PART_IDS, SYNTHETIC_CLASSES, SYNTHETIC_PART_COUNTS, SYNTHETIC_PARTS,
                                         SyntheticShapes)
from foundry_edge.errors import FoundryError


def test_items_have_the_documented_shapes_and_types():
    ds = SyntheticShapes(3, num_points=200)
    item = ds[0]
    assert item["points"].shape == (200, 3) and item["points"].dtype == np.float32
    assert item["parts"].shape == (200,) and item["parts"].dtype == np.int64
    assert isinstance(item["label"], int)
    assert np.isfinite(item["points"]).all()
    assert len(ds) == 3 and len(list(ds)) == 3 and len(list(ds)) == 3  # re-iterable
    with pytest.raises(IndexError):
        ds[3]


def test_same_seed_same_data_other_split_or_seed_other_data():
    a, b = SyntheticShapes(4, 128, seed=1), SyntheticShapes(4, 128, seed=1)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["points"], y["points"])
        np.testing.assert_array_equal(x["parts"], y["parts"])
    np.testing.assert_array_equal(a[2]["points"], a[-2]["points"])
    for other in (SyntheticShapes(4, 128, seed=1, split="test"), SyntheticShapes(4, 128, seed=2)):
        for x, y in zip(a, other):
            assert x["label"] == y["label"]
            assert not np.allclose(x["points"], y["points"])


def test_every_class_present_and_parts_belong_to_their_class():
    ds = SyntheticShapes(2 * len(SYNTHETIC_CLASSES), 256)
    seen = set()
    for item in ds:
        name = ds.classes[item["label"]]
        seen.add(name)
        present = set(np.unique(item["parts"]).tolist())
        assert present == set(CLASS_PART_IDS[name]), name  # every part sampled, no foreign part
    assert seen == set(SYNTHETIC_CLASSES)
    assert sum(SYNTHETIC_PART_COUNTS.values()) == len(SYNTHETIC_PARTS) == ds.num_parts


def test_part_labels_follow_geometry_for_a_cylinder():
    """Without pose or noise, cylinder caps sit at the top/bottom and the body on the unit circle."""
    from foundry_edge.data.synthetic import _cylinder

    rng = np.random.default_rng(0)
    (_, body), (_, cap) = _cylinder(rng)
    assert np.allclose(np.linalg.norm(body(rng, 50)[:, :2], axis=1), 1.0)
    caps = cap(rng, 50)
    assert np.all(np.linalg.norm(caps[:, :2], axis=1) <= 1.0)
    assert np.allclose(np.abs(caps[:, 2]), np.abs(caps[0, 2]))


def test_class_subset_relabels_in_given_order():
    ds = SyntheticShapes(4, 64, classes=["torus", "sphere"])
    assert ds.num_classes == 2
    assert [ds[i]["label"] for i in range(4)] == [0, 1, 0, 1]
    assert set(np.unique(ds[0]["parts"])) == set(CLASS_PART_IDS["torus"])
    with pytest.raises(FoundryError, match="subset"):
        SyntheticShapes(4, 64, classes=["teapot"])


def _shape_features(points: np.ndarray) -> np.ndarray:
    """Pose-invariant features: PCA spectrum and a radius histogram of the normalised cloud."""
    p = points - points.mean(0)
    p = p / np.linalg.norm(p, axis=1).max()
    eig = np.sort(np.linalg.eigvalsh(np.cov(p.T)))
    hist = np.histogram(np.linalg.norm(p, axis=1), bins=8, range=(0, 1))[0] / len(p)
    return np.concatenate([eig / eig.sum(), hist])


def test_classes_are_learnable_on_a_held_out_split():
    """A 1-nearest-neighbour on simple features beats chance clearly, so the classes carry signal."""
    train, test = SyntheticShapes(200, 256, split="train"), SyntheticShapes(60, 256, split="test")
    x = np.stack([_shape_features(d["points"]) for d in train])
    y = np.array([d["label"] for d in train])
    xt = np.stack([_shape_features(d["points"]) for d in test])
    yt = np.array([d["label"] for d in test])
    scale = x.std(0) + 1e-6
    nearest = (((xt[:, None] - x[None]) / scale) ** 2).sum(-1).argmin(1)
    accuracy = (y[nearest] == yt).mean()
    assert accuracy > 3.0 / len(SYNTHETIC_CLASSES)
