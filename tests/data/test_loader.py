"""The one cloud loader: re-iterable, deterministic, every source, evenly spaced subsets, clear refusals."""

from __future__ import annotations

import numpy as np
import pytest

from foundry_edge.data.loader import CloudLoader
from foundry_edge.data.synthetic import example_clouds
from foundry_edge.errors import FoundryError


def test_iterating_twice_gives_the_same_clouds_and_a_new_loader_too():
    loader = CloudLoader(["synthetic"], 64, 5, split="calibration", seed=3)
    first, second = [c.copy() for c in loader], list(loader)
    assert len(first) == len(loader) == 5 and all(c.shape == (64, 3) and c.dtype == np.float32 for c in first)
    np.testing.assert_array_equal(np.stack(first), np.stack(second))
    again = CloudLoader(["synthetic"], 64, 5, split="calibration", seed=3)().points
    np.testing.assert_array_equal(np.stack(first), again)
    assert loader().labels == [0, 1, 2, 3, 4] and "calibration split, seed 3" in loader().source
    other_split = CloudLoader(["synthetic"], 64, 5, split="test", seed=3)().points
    assert not np.array_equal(np.stack(first), other_split)


def test_example_source_is_exports_deterministic_ellipsoids():
    clouds = CloudLoader(["example"], 32, 3, seed=7)()
    np.testing.assert_array_equal(clouds.points, example_clouds(3, 32, 7))
    assert clouds.labels is None and clouds.notes()[0].startswith("example:0: 32 points generated")


def test_files_stacks_and_an_evenly_spaced_subset(tmp_path, rng):
    single = tmp_path / "one.npy"
    np.save(single, rng.normal(size=(100, 3)).astype(np.float32))
    stack = tmp_path / "stack.npy"
    np.save(stack, rng.normal(size=(4, 50, 3)).astype(np.float32))
    every = CloudLoader([str(single), str(stack)], 64)()
    assert every.names == [str(single)] + [f"{stack}[{i}]" for i in range(4)] and every.points.shape == (5, 64, 3)
    assert every.read == [100, 50, 50, 50, 50] and every.labels is None
    picked = CloudLoader([str(single), str(stack)], 64, 3)()
    assert picked.names == [every.names[i] for i in (0, 2, 4)]
    np.testing.assert_array_equal(picked.points, every.points[[0, 2, 4]])
    with pytest.raises(FoundryError, match=r"expected 6 clouds, found 5 .* pass --samples 5"):
        CloudLoader([str(single), str(stack)], 64, 6)()


def test_a_data_set_folder_gives_labels_of_its_split(tmp_path, rng):
    for split, count in (("train", 4), ("test", 2)):
        for label in ("chair", "lamp"):
            folder = tmp_path / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                np.savetxt(folder / f"{label}_{i}.txt", rng.normal(size=(80, 3)), delimiter=",")
    calibration = CloudLoader([str(tmp_path)], 32, 4, split="calibration")()
    assert "(train split)" in calibration.source and sorted(set(calibration.labels)) == [0, 1]
    assert len(CloudLoader([str(tmp_path)], 32, split="verify")) == 4  # the test split, all of it


@pytest.mark.parametrize("specs, samples, message", [
    (["synthetic", "x.npy"], 2, "either 'synthetic' or paths"),
    (["nosuch.npy"], None, "found nothing at nosuch.npy"),
    (["synthetic"], 0, r"--samples >= 1"),
    (["synthetic"], None, "pass --samples N"),
])
def test_refusals_are_one_line(specs, samples, message):
    with pytest.raises(FoundryError, match=message):
        CloudLoader(specs, 64, samples)()


def test_a_cloud_smaller_than_a_group_is_refused_and_nan_points_can_be_dropped(tmp_path, rng):
    small = tmp_path / "small.npy"
    np.save(small, rng.normal(size=(5, 3)).astype(np.float32))
    with pytest.raises(FoundryError, match="small.npy"):
        CloudLoader([str(small)], 64, min_points=8)()
    holes = rng.normal(size=(40, 3)).astype(np.float32)
    holes[:10] = np.nan
    np.save(tmp_path / "holes.npy", holes)
    with pytest.raises(FoundryError, match="NaN/Inf"):
        CloudLoader([str(tmp_path / "holes.npy")], 64)()
    with pytest.warns(UserWarning):
        clouds = CloudLoader([str(tmp_path / "holes.npy")], 64, drop_invalid=True)()
    assert clouds.dropped == [10] and "10 with NaN/Inf dropped" in clouds.notes()[0]
