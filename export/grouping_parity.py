"""Host grouping against the model's own grouping, tie-aware, for exports with `--grouping host`.

Host grouping (numpy) and the model's (torch) do the same float32 arithmetic, but last bits can still differ
(a BLAS's rounding of a.b; the host's float64 normalisation against the model's float32 one). On a large scene
that is enough to tip a near-tie: FPS takes the other of two points whose distances to the chosen centres agree
to 1e-7, and every later centre follows from it; a kNN keeps the other of two points equally far from a centre.
Outputs then differ far beyond any tolerance (a token cosine of 0.95 at 327,680 points) while both groupings
are right. So the export judges grouping and network apart (export/validate.py): this check says where two
groupings part and whether it is at a near-tie (a real bug parts at a clear gap), and the network is compared
on the model's own groups.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NEAR_TIE = 1e-4  # relative gap between two squared distances that last-bit differences can tip
SAME_POINT = 1e-5  # coordinates (of unit-sphere clouds) that differ by less are the same point


@dataclass
class GroupingParity:
    groups: int  # per cloud, times clouds
    identical: int  # groups whose centre and neighbourhood are the model's
    fps_parted: list  # per cloud where FPS took another centre: (step, relative gap); empty when it never did
    knn_parted: int  # groups with the same centre whose neighbourhoods differ
    knn_gap: float  # the largest relative gap of a point one kNN kept and the other did not

    @property
    def passed(self) -> bool:
        return all(gap <= NEAR_TIE for _, gap in self.fps_parted) and self.knn_gap <= NEAR_TIE

    def detail(self) -> str:
        text = f"host grouping = model's in {self.identical} of {self.groups} groups"
        if self.fps_parted:
            steps = ", ".join(f"step {step} (gap {gap:.1e})" for step, gap in self.fps_parted)
            text += f"; FPS took another centre at {steps}, and the later centres follow from it"
        if self.knn_parted:
            text += f"; {self.knn_parted} neighbourhoods differ (largest gap {self.knn_gap:.1e})"
        if self.fps_parted or self.knn_parted:
            verdict = "near-ties" if self.passed else f"a gap above {NEAR_TIE:g} is not a near-tie"
            text += f": {verdict}"
        return text

    def to_dict(self) -> dict:
        return {"groups": self.groups, "identical": self.identical, "fps_parted": self.fps_parted,
                "knn_parted": self.knn_parted, "knn_gap": self.knn_gap, "near_tie": NEAR_TIE}


def compare_groupings(host: tuple, model: tuple) -> GroupingParity:
    """(neighbourhoods (B, G, K, 3), centres (B, G, 3)) from the host and from the model -> where they part."""
    host_nb, host_c = (np.asarray(a, dtype=np.float64) for a in host)
    ref_nb, ref_c = (np.asarray(a, dtype=np.float64) for a in model)
    batch, groups = host_c.shape[:2]
    identical, knn_parted, knn_gap, fps_parted = 0, 0, 0.0, []
    for b in range(batch):
        agree = np.linalg.norm(host_c[b] - ref_c[b], axis=-1) <= SAME_POINT
        common = groups if agree.all() else int(np.argmin(agree))  # FPS is sequential: the first parting counts
        if common < groups:
            fps_parted.append((common, _fps_gap(host_c[b, common], ref_c[b, common], ref_c[b, :common])))
        same, gap = _knn_parity(host_nb[b, :common], ref_nb[b, :common], ref_c[b, :common])
        identical += int(same.sum())
        knn_parted += int((~same).sum())
        knn_gap = max(knn_gap, gap)
    return GroupingParity(batch * groups, identical, fps_parted, knn_parted, knn_gap)


def _fps_gap(host_pick: np.ndarray, model_pick: np.ndarray, chosen: np.ndarray) -> float:
    """Relative gap between the two picks' squared distances to the centres chosen before (FPS takes the largest)."""
    if not len(chosen):  # the start: the point farthest from the centroid, which normalisation puts at the origin
        chosen = np.zeros((1, 3))
    dist = [float(((chosen - pick) ** 2).sum(-1).min()) for pick in (host_pick, model_pick)]
    return abs(dist[0] - dist[1]) / max(max(dist), 1e-30)


def _knn_parity(host_nb: np.ndarray, ref_nb: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, float]:
    """(G, K, 3) each, (G, 3) -> (G,) neighbourhood is the same set, and the largest gap between a point only
    one side kept and the farthest point the other side kept (a near-tie sits at the K-th distance), relative
    to (|centre| + |point|)^2: the scale of the rounding error of |a|^2 - 2 a.b + |b|^2, which can exceed a
    small distance itself."""
    if not len(host_nb):
        return np.zeros(0, dtype=bool), 0.0
    pair = np.linalg.norm(host_nb[:, :, None, :] - ref_nb[:, None, :, :], axis=-1)  # (G, K, K)
    host_only = pair.min(axis=2) > SAME_POINT
    ref_only = pair.min(axis=1) > SAME_POINT
    same = ~(host_only.any(axis=1) | ref_only.any(axis=1))
    gap = 0.0
    for g in np.flatnonzero(~same):
        host_sq, ref_sq = (host_nb[g] ** 2).sum(-1), (ref_nb[g] ** 2).sum(-1)
        kth = max(host_sq.max(), ref_sq.max())
        extra = np.concatenate([host_sq[host_only[g]], ref_sq[ref_only[g]]])
        scale = (2 * np.linalg.norm(centers[g]) + np.sqrt(kth)) ** 2
        gap = max(gap, float(np.abs(extra - kth).max() / max(scale, 1e-30)))
    return same, gap
