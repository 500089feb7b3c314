"""Scalable grouping for large scenes: the torch graph version, its numpy twin, and what they refuse."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from foundry_edge.data.grouping import scalable as sg
from foundry_edge.errors import FoundryError
from foundry_edge.models import create_model
from foundry_edge.models.grouping import farthest_point_sample, knn_indices, square_distance
from foundry_edge.models.model import normalize_cloud
from foundry_edge.models.scalable_grouping import ScalableGrouping, chunked_knn
from foundry_edge.data.synthetic import synthetic_scene

from tests.conftest import tiny_overrides

pytest.importorskip("scipy")
pytest.importorskip("fpsample")


@pytest.fixture(scope="module")
def scene():
    return synthetic_scene(3000, seed=3)


def _plane(n=2000):
    rng = np.random.default_rng(5)
    xy = rng.uniform(-1, 1, size=(n, 2))
    return np.column_stack([xy, 0.3 * xy[:, 0]]).astype(np.float32)  # a tilted plane


def _sorted_distances(neighbourhoods):
    return np.sort((np.asarray(neighbourhoods) ** 2).sum(-1), axis=-1)


def test_graph_and_host_pick_the_same_centres_and_neighbourhoods(scene):
    grouping = ScalableGrouping(num_groups=96, group_size=16, fps_candidates=4, knn_chunk=40)
    with torch.no_grad():
        neighbourhoods, centers = grouping(torch.from_numpy(scene)[None])
    host_neighbourhoods, host_centers = sg.group_scene(scene, 96, 16, fps_candidates=4)
    np.testing.assert_array_equal(centers[0].numpy(), host_centers)
    np.testing.assert_array_equal(neighbourhoods[0].numpy(), host_neighbourhoods)  # tests/data/test_grouping_parity.py: ties


def test_chunked_knn_matches_exact_knn(scene):
    points = torch.from_numpy(scene)[None]
    centers = points[:, ::37]  # 82 centres: chunks of 25 leave a ragged last chunk
    chunked = chunked_knn(centers, points, 16, chunk=25)
    exact = knn_indices(centers, points, 16)
    dist = square_distance(centers, points)[0]
    np.testing.assert_allclose(torch.gather(dist, 1, chunked[0]).numpy(),
                               torch.gather(dist, 1, exact[0]).numpy(), atol=1e-6)
    host = sg.knn(scene, centers[0].numpy(), 16)  # the graph's float32 ranking, lowest index on ties
    np.testing.assert_array_equal(host, np.argsort(dist.numpy(), axis=1, kind="stable")[:, :16])


@pytest.mark.parametrize("cloud", ["scene", "plane", "sphere"])
def test_fps_coverage_stays_close_to_exact_fps(cloud, scene):
    points = {"scene": scene, "plane": _plane(),
              "sphere": (lambda v: v / np.linalg.norm(v, axis=1, keepdims=True))(
                  np.random.default_rng(2).normal(size=(2500, 3))).astype(np.float32)}[cloud]
    exact = farthest_point_sample(torch.from_numpy(points)[None], 128)[0].numpy()
    scalable = sg.select_centers(points, 128, fps_candidates=4)
    ratio = sg.coverage(points, points[scalable]) / sg.coverage(points, points[exact])
    assert 0.9 <= ratio <= 1.6, ratio


def test_candidates_cover_every_point_within_one_octree_cell(scene):
    count = 400
    candidates = sg.stratified_candidates(scene, count)
    assert len(np.unique(candidates)) == count
    cells = sg.grid_cells(scene)
    level = max(lv for lv in range(sg.MORTON_BITS + 1)
                if len(np.unique(cells // (1 << (sg.MORTON_BITS - lv)), axis=0)) <= count)
    extent = np.ptp(scene, axis=0).max()
    cell_diagonal = np.sqrt(3) * extent / 2 ** level * (1 + 1e-3)
    assert sg.coverage(scene, scene[candidates]) <= cell_diagonal


def test_grouping_does_not_depend_on_point_order(scene):
    shuffled = scene[np.random.default_rng(0).permutation(len(scene))]
    _, a = sg.group_scene(scene, 64, 16)
    _, b = sg.group_scene(shuffled, 64, 16)
    assert {tuple(p) for p in a} == {tuple(p) for p in b}


def test_scalable_model_runs_on_graph_and_host_grouping_alike(scene):
    overrides = dict(tiny_overrides("foundry-edge16"), num_points=len(scene), num_groups=64, group_size=16,
                     grouping="scalable", knn_chunk=24)
    model = create_model("foundry-edge16", **overrides)
    points = torch.from_numpy(scene)[None]
    with torch.no_grad():
        graph = model(points)
        normalized = normalize_cloud(points)
        neighbourhoods, centers = sg.group_scene(normalized[0].numpy(), 64, 16)
        host = model.forward_grouped(torch.from_numpy(neighbourhoods)[None], torch.from_numpy(centers)[None])
    np.testing.assert_allclose(graph["tokens"].numpy(), host["tokens"].numpy(), atol=1e-4)
    assert create_model("foundry-edge16", **tiny_overrides("foundry-edge16")).config.grouping == "exact"


def test_scalable_grouping_exports_to_one_loop_and_matches_at_another_size(tmp_path, scene):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    grouping = ScalableGrouping(num_groups=32, group_size=8, fps_candidates=4, knn_chunk=16).eval()
    path = tmp_path / "grouping.onnx"
    example = torch.from_numpy(np.stack([scene[:1500], scene[1500:]]))
    torch.onnx.export(grouping, (example,), str(path), dynamo=True, external_data=False, opset_version=18,
                      input_names=["points"], dynamic_shapes=({0: "batch", 1: "num_points"},))
    ops = [node.op_type for node in onnx.load(str(path)).graph.node]
    assert ops.count("Loop") == 1
    other = np.stack([scene, scene[::-1]]).copy()  # a second shape: 3000 points
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    neighbourhoods, centers = session.run(None, {"points": other})
    with torch.no_grad():
        ref_neighbourhoods, ref_centers = grouping(torch.from_numpy(other))
    np.testing.assert_array_equal(centers, ref_centers.numpy())
    np.testing.assert_allclose(_sorted_distances(neighbourhoods), _sorted_distances(ref_neighbourhoods), atol=1e-5)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((0, 3), np.float32), "at least 16 points"),
    (np.ones((500, 3), np.float32), "identical"),
    (np.where(np.arange(1500)[:, None] == 7, np.nan, 1.0) * np.random.default_rng(0).normal(size=(1500, 3)),
     "NaN or infinite"),
    (np.zeros((500, 2), np.float32), "(N, 3)"),
])
def test_bad_scenes_are_refused_with_one_clear_line(bad, message):
    with pytest.raises(FoundryError, match=message.replace("(", r"\(").replace(")", r"\)")):
        sg.group_scene(bad, 32, 16)


def test_a_plane_groups_fine():
    neighbourhoods, centers = sg.group_scene(_plane(), 64, 16)
    assert np.isfinite(neighbourhoods).all() and len(np.unique(centers, axis=0)) == 64


def test_config_refuses_an_unknown_grouping():
    with pytest.raises(FoundryError, match="grouping must be one of"):
        create_model("foundry-edge16", **tiny_overrides("foundry-edge16"), grouping="voxel")


def test_budget_check_refuses_a_scene_too_large_and_names_the_size_that_fits():
    from foundry_edge.models import get_config
    from foundry_edge.models.memory import GIB, check_budget, estimate_peak_bytes, max_points_within

    config = get_config("pointjepa-vits", num_points=1 << 18, num_groups=1 << 12, grouping="scalable")
    budget = estimate_peak_bytes(config.replace(num_points=1 << 16)) + 1
    fit = max_points_within(config, budget)
    assert (1 << 16) * 0.99 <= fit < 1 << 18
    assert estimate_peak_bytes(config.replace(num_points=fit)) <= budget
    with pytest.raises(FoundryError, match=f"largest scene that fits is about {fit} points"):
        check_budget(config, budget)
    assert check_budget(config, 64 * GIB) == estimate_peak_bytes(config)


def test_memory_estimate_grows_with_the_scene_and_the_teacher_attention():
    from foundry_edge.models import get_config
    from foundry_edge.models.memory import estimate_peak_bytes

    def at(preset, n):
        return estimate_peak_bytes(get_config(preset, num_points=n, num_groups=n // 64, grouping="scalable"))

    assert at("foundry-edge16", 1 << 18) < at("foundry-edge16", 1 << 19)
    # the teacher's attention is quadratic in the tokens, the student's encoder sees s of them
    teacher_growth = at("pointjepa-vits", 1 << 20) / at("pointjepa-vits", 1 << 19)
    student_growth = at("foundry-s16", 1 << 20) / at("foundry-s16", 1 << 19)
    assert teacher_growth > student_growth


def test_group_clouds_batches_the_host_feed(scene):
    neighbourhoods, centers = sg.group_clouds(np.stack([scene, scene[::-1]]), 32, 8)
    assert neighbourhoods.shape == (2, 32, 8, 3) and centers.shape == (2, 32, 3)
    np.testing.assert_array_equal(np.sort(centers[0], axis=0), np.sort(centers[1], axis=0))
