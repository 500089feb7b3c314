"""Host grouping (numpy) picks the graph's centres and neighbourhoods, bit for bit, ties included (issue 15).

All three paths run: the compiled loops where numba is installed, fpsample where installed (numba hidden)
and the numpy loop (numba and fpsample hidden). The graph's kNN
rule is ONNX TopK's, lowest index first among equal distances: torch.topk in eager mode orders equal
distances arbitrarily, so the graph's neighbourhoods here are a stable argsort of the graph's own distances
(torch's square_distance), and torch.topk's picks must have the same distances.
"""

from __future__ import annotations

import os
import signal
import sys

import numpy as np
import pytest

from foundry_edge.data.grouping import exact
from foundry_edge.data.synthetic import synthetic_scene
from foundry_edge.data.transforms import normalize

torch = pytest.importorskip("torch")
from foundry_edge.models import grouping as graph  # noqa: E402  (needs torch)
from foundry_edge.models.scalable_grouping import ScalableGrouping  # noqa: E402

NUMPY_FPS = exact._fps_numpy  # the test's own reference calls, not counted by the fps_path fixture


def _cloud(kind: str, batch: int = 2, n: int = 512) -> np.ndarray:
    rng = np.random.default_rng(7)
    if kind == "random":
        pts = rng.normal(size=(batch, n, 3))
    elif kind == "duplicated":
        pts = np.repeat(rng.normal(size=(batch, n // 8, 3)), 8, axis=1)
    else:  # grid: every distance an exact tie with many others
        side = round(n ** (1 / 3))
        grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)
        pts = np.stack([grid[rng.permutation(len(grid))] for _ in range(batch)])
    return normalize(np.ascontiguousarray(pts, dtype=np.float32))


def hide_numba(monkeypatch):
    monkeypatch.setitem(sys.modules, "numba", None)  # `import numba` raises ImportError: the numpy/fpsample code
    assert exact._compiled() is None


@pytest.fixture(params=["numba", "fpsample", "numpy"])
def fps_path(request, monkeypatch):
    """Which FPS runs; counts the numpy loop's (or the compiled one's) calls so a test can tell the path it took."""
    calls, compiled_calls = [], []
    if request.param == "numba":
        pytest.importorskip("numba")
        from foundry_edge.data.grouping import compiled

        monkeypatch.setattr(compiled, "fps", lambda *args, fps=compiled.fps: compiled_calls.append(1) or fps(*args))
    else:
        hide_numba(monkeypatch)
    if request.param == "fpsample":
        pytest.importorskip("fpsample")
    elif request.param == "numpy":
        monkeypatch.setitem(sys.modules, "fpsample", None)  # `import fpsample` raises ImportError
    monkeypatch.setattr(exact, "_fps_numpy", lambda *args: calls.append(1) or NUMPY_FPS(*args))
    yield request.param, calls
    assert bool(calls) == (request.param == "numpy"), f"the {request.param} FPS did not run"
    assert bool(compiled_calls) == (request.param == "numba"), f"the {request.param} FPS did not run"


def _graph_knn(centers: np.ndarray, points: np.ndarray, k: int) -> np.ndarray:
    """(B, G, 3), (B, N, 3) -> the graph's kNN: its float32 distances, first k by (distance, index)."""
    dist = graph.square_distance(torch.from_numpy(centers), torch.from_numpy(points)).numpy()
    index = np.argsort(dist, axis=-1, kind="stable")[..., :k]
    eager = graph.knn_indices(torch.from_numpy(centers), torch.from_numpy(points), k).numpy()
    np.testing.assert_array_equal(np.take_along_axis(dist, eager, -1), np.take_along_axis(dist, index, -1))
    return index


def _last_index_fps(points: np.ndarray, num_samples: int) -> np.ndarray:
    """(B, N, 3) FPS with ties to the last index (fpsample as it is, the old scalable host): must differ."""
    flipped = points[:, ::-1]
    return (points.shape[1] - 1) - NUMPY_FPS(flipped, num_samples, (points.shape[1] - 1) - _start(points))


def _start(points: np.ndarray) -> np.ndarray:
    return ((points - points.mean(axis=1, keepdims=True)) ** 2).sum(-1).argmax(axis=1)


@pytest.mark.parametrize("kind", ["random", "duplicated", "grid"])
def test_exact_host_grouping_is_the_graphs(kind, fps_path):
    pts = _cloud(kind)
    with torch.no_grad():
        graph_fps = graph.farthest_point_sample(torch.from_numpy(pts), 64).numpy()
        neighbourhoods, centers = graph.group_points(torch.from_numpy(pts), 64, 16)
    host_fps = exact.farthest_point_sample(pts, 64)
    np.testing.assert_array_equal(host_fps, graph_fps)
    host_centers = exact.gather_points(pts, host_fps)
    host_knn = exact.knn_indices(host_centers, pts, 16)
    graph_knn = _graph_knn(centers.numpy(), pts, 16)
    np.testing.assert_array_equal(host_knn, graph_knn)
    host_neighbourhoods, host_centers = exact.group(pts, 64, 16)
    np.testing.assert_array_equal(host_centers, centers.numpy())
    np.testing.assert_array_equal(host_neighbourhoods, exact.gather_points(pts, graph_knn) - host_centers[:, :, None])
    if kind == "random":  # no ties: torch.topk's own picks too
        np.testing.assert_array_equal(host_neighbourhoods, neighbourhoods.numpy())
    if kind != "random":  # the cloud has ties that the old rules would have broken the other way
        assert not np.array_equal(_last_index_fps(pts, 64), graph_fps)
        last_index = np.argsort(exact.square_distance(host_centers, pts)[..., ::-1], -1, kind="stable")[..., :16]
        assert not np.array_equal(pts.shape[1] - 1 - last_index, host_knn)


def test_the_numpy_fps_and_fpsample_agree_on_tied_clouds():
    fpsample = pytest.importorskip("fpsample")
    for kind in ["duplicated", "grid", "random"]:
        pts = _cloud(kind, batch=3, n=729)
        numpy_path = NUMPY_FPS(pts, 200, _start(pts))
        np.testing.assert_array_equal(exact.farthest_point_sample(pts, 200), numpy_path)
        plain = np.stack([fpsample.fps_sampling(p, 200, start_idx=int(s)) for p, s in zip(pts, _start(pts))])
        if kind != "random":  # fpsample unreversed keeps the last of equal distances
            assert not np.array_equal(plain, numpy_path)
    few = np.repeat(_cloud("random", batch=1, n=40)[:, :5], 4, axis=1)  # more samples than distinct points
    np.testing.assert_array_equal(exact.farthest_point_sample(few, 12), NUMPY_FPS(few, 12, _start(few)))


@pytest.mark.parametrize("kind", ["scene", "duplicated", "grid"])
def test_scalable_host_grouping_is_the_graphs(kind, fps_path):
    pytest.importorskip("scipy")
    from foundry_edge.data.grouping import scalable as sg

    pts = {"scene": lambda: normalize(synthetic_scene(6000, seed=4)[None])[0],
           "duplicated": lambda: _cloud("duplicated", batch=1, n=4096)[0],
           "grid": lambda: _cloud("grid", batch=1, n=4096)[0]}[kind]()
    module = ScalableGrouping(num_groups=128, group_size=32, fps_candidates=4, knn_chunk=64)
    with torch.no_grad():
        index = module.select_centers(torch.from_numpy(pts)[None])[0].numpy()
        neighbourhoods, centers = module(torch.from_numpy(pts)[None])
    np.testing.assert_array_equal(sg.select_centers(pts, 128, fps_candidates=4), index)
    host_neighbourhoods, host_centers = sg.group_scene(pts, 128, 32, fps_candidates=4)
    np.testing.assert_array_equal(host_centers, centers[0].numpy())
    graph_knn = _graph_knn(host_centers[None], pts[None], 32)[0]
    host_knn = sg.knn(pts, host_centers, 32)
    np.testing.assert_array_equal(host_knn, graph_knn)
    np.testing.assert_array_equal(host_neighbourhoods, pts[graph_knn] - host_centers[:, None])
    if kind == "scene":  # no ties at the k-th place: torch.topk's own picks too
        np.testing.assert_array_equal(host_neighbourhoods, neighbourhoods[0].numpy())


@pytest.mark.parametrize("kind", ["scene", "grid"])
def test_scalable_knn_needs_the_float32_reranking(kind):
    """The k-d tree's own float64 order is not the graph's; the re-ranked one is, with any margin."""
    spatial = pytest.importorskip("scipy.spatial")
    from foundry_edge.data.grouping import scalable as sg

    pts = (synthetic_scene(20000, seed=2) if kind == "scene" else _cloud("grid", batch=1, n=4096)[0] * 3)
    pts = np.ascontiguousarray(pts, dtype=np.float32)
    centers = pts[sg.select_centers(pts, 256)]
    want = exact.knn_indices(centers[None], pts[None], 32)[0]
    _, tree_order = spatial.cKDTree(pts).query(centers, k=32)
    assert not np.array_equal(tree_order, want)
    for margin in (0, 4, 16, 64):  # 0: every row needs the full-row fallback
        np.testing.assert_array_equal(sg.knn(pts, centers, 32, margin=margin), want)


@pytest.mark.parametrize("width", [17, 36, 48])
def test_scalable_reranking_has_the_bits_of_the_full_distance_matrix(width):
    """The candidates' distances equal square_distance's (one matmul) bit for bit. A per-centre matrix-vector
    product did not (OpenBLAS rounds gemv's tail rows without FMA): 36 candidates broke the parity."""
    pytest.importorskip("scipy")
    from foundry_edge.data.grouping import scalable as sg

    pts = normalize(synthetic_scene(5000, seed=1)[None])[0] * 3
    centers = pts[::47]  # 107 centres: not a multiple of the block
    candidates = np.random.default_rng(width).integers(0, len(pts), size=(len(centers), width))
    full = exact.square_distance(centers[None], pts[None])[0]
    np.testing.assert_array_equal(sg._graph_distance(pts, centers, candidates),
                                  np.take_along_axis(full, candidates, 1))


def test_scalable_fps_without_fpsample_picks_the_same_centres(monkeypatch):
    pytest.importorskip("scipy")
    from foundry_edge.data.grouping import scalable as sg

    pts = _cloud("grid", batch=1, n=4096)[0]
    with_fpsample = sg.select_centers(pts, 96)
    monkeypatch.setitem(sys.modules, "fpsample", None)
    np.testing.assert_array_equal(sg.select_centers(pts, 96), with_fpsample)


def _numpy_grouping(pts: np.ndarray, num_groups: int, k: int, monkeypatch):
    """FPS, kNN and neighbourhoods by the numpy code: numba and fpsample hidden for the call."""
    with monkeypatch.context() as patch:
        hide_numba(patch)
        patch.setitem(sys.modules, "fpsample", None)
        fps = exact.farthest_point_sample(pts, num_groups)
        knn = exact.knn_indices(exact.gather_points(pts, fps), pts, k)
        neighbourhoods, centers = exact.group(pts, num_groups, k)
    return fps, knn, neighbourhoods


@pytest.mark.parametrize("n", [1024, 64])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("kind", ["random", "duplicated", "grid"])
def test_compiled_grouping_is_the_numpy_and_the_graph_grouping(kind, batch, n, monkeypatch):
    compiled = pytest.importorskip("foundry_edge.data.grouping.compiled")
    pts = _cloud(kind, batch=batch, n=n)
    num_groups, k = (64, 32) if n > 64 else (16, 8)
    want_fps, want_knn, want_groups = _numpy_grouping(pts, num_groups, k, monkeypatch)
    assert exact._compiled() is compiled
    fps = exact.farthest_point_sample(pts, num_groups)
    np.testing.assert_array_equal(fps, want_fps)
    with torch.no_grad():
        np.testing.assert_array_equal(fps, graph.farthest_point_sample(torch.from_numpy(pts), num_groups).numpy())
    centers = exact.gather_points(pts, fps)
    knn = exact.knn_indices(centers, pts, k)
    np.testing.assert_array_equal(knn, want_knn)
    np.testing.assert_array_equal(knn, _graph_knn(centers, pts, k))
    neighbourhoods, _ = exact.group(pts, num_groups, k)
    assert neighbourhoods.dtype == np.float32 and neighbourhoods.shape == (batch, num_groups, k, 3)
    np.testing.assert_array_equal(neighbourhoods, want_groups)
    if kind != "random":  # ties decide: the other rule would pick other points
        np.testing.assert_raises(AssertionError, np.testing.assert_array_equal, _last_index_fps(pts, num_groups), fps)


def test_compiled_grouping_on_200_random_clouds(monkeypatch):
    """No difference from the numpy path where near-ties are likeliest to part them: 200 clouds of 1024."""
    pytest.importorskip("foundry_edge.data.grouping.compiled")
    rng = np.random.default_rng(15)
    pts = normalize(rng.normal(size=(200, 1024, 3)).astype(np.float32))
    want_fps, want_knn, _ = _numpy_grouping(pts, 64, 32, monkeypatch)
    fps = exact.farthest_point_sample(pts, 64)
    knn = exact.knn_indices(exact.gather_points(pts, fps), pts, 32)
    assert (fps != want_fps).any(axis=1).sum() == 0 and (knn != want_knn).any(axis=(1, 2)).sum() == 0


def test_compiled_edge_cases_follow_the_numpy_path(monkeypatch):
    compiled = pytest.importorskip("foundry_edge.data.grouping.compiled")
    few = np.repeat(_cloud("random", batch=2, n=40)[:, :5], 4, axis=1)  # 20 points, 5 distinct
    knn_all = exact.knn_indices(few[:, :3], few, 25)  # k > N: all N
    start = exact.farthest_point_sample_from(few[0], 12, 7)
    with monkeypatch.context() as patch:
        hide_numba(patch)
        np.testing.assert_array_equal(knn_all, exact.knn_indices(few[:, :3], few, 25))
        np.testing.assert_array_equal(start, exact.farthest_point_sample_from(few[0], 12, 7))
        np.testing.assert_array_equal(exact.farthest_point_sample(few, 12), compiled.fps(few, 12, compiled.fps_start(few)))
    assert knn_all.shape == (2, 3, 20)
    assert compiled.knn(few[:, :3], few, 0, True).shape == (2, 3, 0)


def test_compiled_start_has_the_bits_of_numpys_centroid():
    """fps_start sums as numpy's mean over axis 1 does (point after point, float32): a numpy that sums
    otherwise would move a near-tied start, and this test says so."""
    compiled = pytest.importorskip("foundry_edge.data.grouping.compiled")
    for seed in range(100):
        rng = np.random.default_rng(seed)
        pts = (rng.normal(size=(2, int(rng.integers(8, 4000)), 3)) * 10 ** rng.uniform(-3, 3)).astype(np.float32)
        want = ((pts - pts.mean(axis=1, keepdims=True)) ** 2).sum(-1).argmax(axis=1)
        np.testing.assert_array_equal(compiled.fps_start(pts), want)


def test_compiled_knn_rounds_a_dot_b_as_numpys_matmul(monkeypatch):
    """The dot product's rounding is the one numpy's matmul has (an FMA chain on OpenBLAS): the other
    rounding parts from it on random clouds, at the last bit of distances that decide near-ties."""
    compiled = pytest.importorskip("foundry_edge.data.grouping.compiled")
    pts = _cloud("random", batch=1, n=1024) * 3
    centers = pts[:, :256]
    fused = compiled.matmul_is_fused()
    matmul = np.matmul(centers, pts.transpose(0, 2, 1))
    plain = ((centers[..., :1] * pts[:, None, :, 0] + centers[..., 1:2] * pts[:, None, :, 1])
             + centers[..., 2:] * pts[:, None, :, 2])
    assert np.array_equal(matmul, plain) != fused
    hide_numba(monkeypatch)
    np.testing.assert_array_equal(compiled.knn(centers, pts, 32, fused), exact.knn_indices(centers, pts, 32))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_host_grouping_works_in_a_forked_child_after_the_parent_used_its_threads():
    """The thread pool that splits a batch is the parent's; a forked child (a DataLoader worker) makes its own."""
    from foundry_edge.data.preprocess import host_feed

    clouds = np.random.default_rng(0).standard_normal((4, 256, 3)).astype(np.float32)
    parent = host_feed(clouds, 16, 8)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's result is its exit code
        signal.alarm(30)  # a pool without threads would wait forever: a killed child fails the test instead
        child = host_feed(clouds, 16, 8)
        os._exit(0 if all(np.array_equal(parent[k], child[k]) for k in parent) else 3)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.skipif(exact._compiled() is None, reason="numba is not installed (the [fast] extra)")
@pytest.mark.parametrize("shape, scale, offset", [((1, 1024, 3), 1.0, 0.0), ((3, 777, 3), 40.0, 1e3),
                                                  ((2, 64, 3), 1e-3, -5.0)])
def test_compiled_normalisation_has_numpys_bits(shape, scale, offset):
    from foundry_edge.data.preprocess import normalize_clouds

    rng = np.random.default_rng(int(scale * 7) + shape[1])
    clouds = (rng.normal(size=shape) * scale + offset).astype(np.float32)
    clouds[0, 5] = clouds[0, 6]  # a duplicated point
    got = normalize_clouds(clouds)
    assert got.dtype == np.float32 and np.array_equal(got, normalize(clouds))
