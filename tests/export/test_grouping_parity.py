"""The tie-aware comparison of host and model grouping: near-ties pass, real differences fail."""

import numpy as np

from foundry_edge.export.grouping_parity import NEAR_TIE, compare_groupings


def _groups(rng, batch=2, groups=6, k=4):
    centers = rng.normal(size=(batch, groups, 3))
    neighbourhoods = rng.normal(scale=0.1, size=(batch, groups, k, 3))
    return neighbourhoods, centers


def test_identical_groupings_agree_everywhere():
    nb, c = _groups(np.random.default_rng(0))
    parity = compare_groupings((nb, c), (nb + 1e-7, c - 1e-7))  # last-bit differences are the same points
    assert parity.passed and parity.identical == parity.groups == 12 and not parity.fps_parted
    assert "= model's in 12 of 12 groups" in parity.detail()


def test_fps_parting_at_a_near_tie_passes_and_at_a_clear_gap_fails():
    rng = np.random.default_rng(1)
    nb, c = _groups(rng, batch=1)
    chosen = c[0, :3]
    # Two picks equally far (to 1e-9) from the nearest chosen centre: a near-tie.
    tie = c.copy()
    direction = np.array([1.0, 0.0, 0.0])
    far = chosen[0] + 5 * direction
    tie[0, 3] = far
    mirrored = c.copy()
    mirrored[0, 3] = chosen[0] + 5 * (1 + 1e-9) * np.array([0.0, 1.0, 0.0])
    near = compare_groupings((nb, tie), (nb, mirrored))
    assert near.passed and near.fps_parted[0][0] == 3 and near.fps_parted[0][1] < NEAR_TIE
    assert near.identical == 3  # groups after the parting follow from it and are not compared
    wrong = mirrored.copy()
    wrong[0, 3] = chosen[0] + 2.5 * np.array([0.0, 1.0, 0.0])  # half the distance: not a tie
    assert not compare_groupings((nb, tie), (nb, wrong)).passed


def test_knn_swap_at_the_kth_distance_passes_and_a_swap_inside_fails():
    rng = np.random.default_rng(2)
    c = rng.normal(size=(1, 1, 3))
    ring = np.array([[0.1, 0, 0], [0, 0.2, 0], [0, 0, 0.3], [0.4, 0, 0]])
    other = ring.copy()
    other[3] = [0, 0.4 * (1 + 1e-8), 0]  # the K-th neighbour swapped for one as far
    near = compare_groupings((ring[None, None], c), (other[None, None], c))
    assert near.passed and near.knn_parted == 1 and near.identical == 0
    inside = ring.copy()
    inside[0] = [0, 0, -0.1]  # the nearest neighbour differs: a kNN bug, not a tie
    far = compare_groupings((inside[None, None], c), (ring[None, None], c))
    assert not far.passed and far.knn_gap > NEAR_TIE and "not a near-tie" in far.detail()
