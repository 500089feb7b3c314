"""foundry_edge.data.preprocess: the numpy host grouping equals the torch reference, ties included."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from foundry_edge.data import preprocess
from foundry_edge.data.grouping import exact
from foundry_edge.errors import FoundryError

torch = pytest.importorskip("torch")


def torch_reference(points: np.ndarray, num_groups: int, group_size: int):
    from foundry_edge.models.grouping import group_points
    from foundry_edge.models.model import normalize_cloud

    with torch.no_grad():
        neighbourhoods, centers = group_points(normalize_cloud(torch.from_numpy(points)), num_groups, group_size)
    return neighbourhoods.numpy(), centers.numpy()


def test_host_feed_matches_the_torch_grouping(clouds):
    feed = preprocess.host_feed(clouds, 16, 8)
    neighbourhoods, centers = torch_reference(clouds, 16, 8)
    assert feed["neighbourhoods"].dtype == np.float32 and feed["neighbourhoods"].shape == (2, 16, 8, 3)
    np.testing.assert_allclose(feed["centers"], centers, atol=1e-6)
    np.testing.assert_allclose(feed["neighbourhoods"], neighbourhoods, atol=1e-6)


def test_fps_and_knn_pick_the_same_indices_as_torch(clouds):
    from foundry_edge.models.grouping import farthest_point_sample, knn_indices

    pts = preprocess.normalize(clouds)
    fps = exact.farthest_point_sample(pts, 16)
    assert np.array_equal(fps, farthest_point_sample(torch.from_numpy(pts), 16).numpy())
    centers = pts[np.arange(2)[:, None], fps]
    assert np.array_equal(exact.knn_indices(centers, pts, 8),
                          knn_indices(torch.from_numpy(centers), torch.from_numpy(pts), 8).numpy())


def test_fps_starts_farthest_from_the_centroid_and_ties_go_to_the_lowest_index():
    # A symmetric cross: four points tie for farthest from the centroid (0, 0, 0).
    cross = np.array([[[1, 0, 0], [0, 1, 0], [-1, 0, 0], [0, -1, 0], [0, 0, 0.5], [0, 0, 0]]], dtype=np.float32)
    chosen = exact.farthest_point_sample(cross, 3)
    assert chosen[0, 0] == 0  # first of the tied farthest points
    assert chosen[0, 1] == 2  # the one opposite, farthest from point 0
    from foundry_edge.models.grouping import farthest_point_sample

    assert np.array_equal(chosen, farthest_point_sample(torch.from_numpy(cross), 3).numpy())


def test_knn_ties_go_to_the_lowest_index():
    points = np.array([[[0, 0, 0], [1, 0, 0], [1, 0, 0], [-1, 0, 0], [3, 0, 0]]], dtype=np.float32)
    query = np.zeros((1, 1, 3), dtype=np.float32)
    assert exact.knn_indices(query, points, 4).tolist() == [[[0, 1, 2, 3]]]


def test_feed_from_manifest_follows_the_preprocessing_section(clouds):
    graph = preprocess.feed_from_manifest(clouds[0], {"in_graph": True, "group_size": 8})
    assert list(graph) == ["points"] and graph["points"].shape == (1, 256, 3)
    host = {"in_graph": False, "normalize": "none", "num_groups": 4, "group_size": 8, "method": "exact"}
    raw = preprocess.feed_from_manifest(clouds * 10, host)
    assert np.abs(raw["centers"]).max() > 2  # not normalised: the model was trained without it
    normalised = preprocess.feed_from_manifest(clouds * 10, {**host, "normalize": "centre-unit-sphere"})
    assert np.abs(normalised["centers"]).max() <= 1.0 + 1e-6


@pytest.mark.parametrize("points, message", [
    (np.full((1, 64, 3), np.nan, dtype=np.float32), "finite"),
    (np.zeros((1, 4, 3), dtype=np.float32), "at least 8 points"),
    (np.zeros((1, 64, 2), dtype=np.float32), r"\(N, 3\)"),
    (np.zeros((2, 2, 64, 3), dtype=np.float32), r"\(B, N, 3\)"),
])
def test_bad_clouds_are_refused_in_one_line(points, message):
    with pytest.raises(FoundryError, match=message):
        preprocess.host_feed(points, 4, 8)


def test_preprocess_does_not_import_torch():
    code = "import sys, foundry_edge.data.preprocess; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def far_off(local: np.ndarray) -> np.ndarray:
    """The same clouds in float64 at map coordinates: (5e5, 5e6, 100) m, where float32 steps are 0.5 m."""
    return local.astype(np.float64) + np.array([5e5, 5e6, 100.0])


def test_a_normalising_host_recentres_float64_map_coordinates_in_float64(clouds):
    near = preprocess.host_feed(clouds, 16, 8)
    far = preprocess.host_feed(far_off(clouds), 16, 8)
    np.testing.assert_allclose(far["centers"], near["centers"], atol=1e-5)
    np.testing.assert_allclose(far["neighbourhoods"], near["neighbourhoods"], atol=1e-5)
    graph = preprocess.feed_from_manifest(far_off(clouds), {"in_graph": True, "normalize": "centre-unit-sphere"})
    assert graph["points"].dtype == np.float32 and np.ptp(graph["points"], axis=1).max() < 3  # the 1 m shape, kept
    assert np.abs(graph["points"]).max() < 2  # moved next to the origin before the cast


@pytest.mark.parametrize("points, preprocessing", [
    (lambda c: far_off(c).astype(np.float32), {"in_graph": True, "normalize": "centre-unit-sphere"}),  # shape lost
    (far_off, {"in_graph": True, "normalize": "none"}),  # a model that does not normalise sees the translation
    (far_off, {"in_graph": True}),  # a bare ONNX: whether it normalises is unknown
])
def test_far_off_clouds_are_refused_where_recentring_cannot_help(clouds, points, preprocessing):
    with pytest.raises(FoundryError, match="centre_cloud"):
        preprocess.feed_from_manifest(points(clouds), preprocessing)


@pytest.mark.parametrize("kind", ["random", "duplicated", "grid"])
def test_host_grouping_equals_the_graphs_on_duplicated_and_tied_clouds(kind):
    """The fast host FPS picks torch's centres, and its kNN the first k of a stable argsort (ONNX TopK's
    rule: equal values, lower index first). torch.topk picks among equidistant points at the k-th place
    arbitrarily, so against torch the neighbourhoods are compared as point sets where ties do not cross
    the k boundary (duplicates), and the indices must match exactly on a random cloud."""
    from foundry_edge.models.grouping import farthest_point_sample, knn_indices

    rng = np.random.default_rng(1)
    if kind == "random":
        pts = rng.normal(size=(2, 512, 3))
    elif kind == "duplicated":
        pts = np.repeat(rng.normal(size=(2, 64, 3)), 8, axis=1)
    else:
        grid = np.stack(np.meshgrid(*[np.arange(8)] * 3, indexing="ij"), -1).reshape(-1, 3)
        pts = np.broadcast_to(grid, (2, 512, 3))
    pts = np.ascontiguousarray(pts, dtype=np.float32)
    fps = exact.farthest_point_sample(pts, 32)
    assert np.array_equal(fps, farthest_point_sample(torch.from_numpy(pts), 32).numpy())
    centers = pts[np.arange(2)[:, None], fps]
    host = exact.knn_indices(centers, pts, 16)
    graph = knn_indices(torch.from_numpy(centers), torch.from_numpy(pts), 16).numpy()
    stable = np.argsort(exact.square_distance(centers, pts), axis=-1, kind="stable")[..., :16]
    assert np.array_equal(host, stable)
    rows = np.arange(2)[:, None, None]
    as_sets = lambda index: np.sort(pts[rows, index].view([("", np.float32)] * 3).squeeze(-1), axis=-1)
    if kind != "grid":
        assert np.array_equal(as_sets(host), as_sets(graph))
    if kind == "random":
        assert np.array_equal(host, graph)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("recentre", [True, False])
def test_plainly_valid_clouds_skip_the_per_cloud_checks_and_get_the_same_array(clouds, dtype, recentre, monkeypatch):
    batch = (clouds * 3 + 1).astype(dtype)
    want = np.stack([preprocess._checked(cloud, 8, "cloud", recentre) for cloud in batch])
    monkeypatch.setattr(preprocess, "_checked", lambda *args: pytest.fail("the per-cloud path ran"))
    got = preprocess.check_clouds(batch, 8, recentre=recentre)
    assert got.dtype == np.float32 and got.flags.c_contiguous and got.flags.writeable
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(preprocess.check_clouds(batch[0], 8, recentre=recentre), want[:1])


@pytest.mark.parametrize("points", [
    lambda c: far_off(c),  # recentred (float64) or refused: the per-cloud path decides
    lambda c: np.where(np.arange(c.shape[1])[None, :, None] == 5, np.inf, c),
    lambda c: np.zeros_like(c),  # no extent
    lambda c: c * 1e-12,
    lambda c: c.astype(np.int32),
])
def test_clouds_not_plainly_valid_take_the_per_cloud_path(clouds, points):
    assert not preprocess._plainly_valid(np.asarray(points(clouds)), 8)
    assert preprocess._plainly_valid(clouds, 8) and not preprocess._plainly_valid(clouds, clouds.shape[1] + 1)
