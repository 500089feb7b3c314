"""How raw clouds become a graph's inputs: one typed description shared by export, calibration, the
runtimes and profiling (the manifest's `grouping` and `preprocessing` sections, docs/contracts.md).

Two separate questions, two fields:
- placement: where FPS + kNN run. "graph" (inside the exported model: it takes raw `points`) or "host"
  (numpy before the model: it takes `neighbourhoods` and `centers`);
- algorithm: which grouping. "exact" (FPS over every point, kNN over every point: the paper's) or
  "scalable" (FPS over stratified candidates, chunked kNN: large scenes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from foundry_edge.errors import FoundryError

PLACEMENTS = ("graph", "host")
ALGORITHMS = ("exact", "scalable")
NORMALIZE = "centre-unit-sphere"  # the manifest's word for "centre each cloud and scale it into the unit sphere"


@dataclass(frozen=True)
class Preprocessing:
    placement: str  # "graph" | "host"
    num_points: int  # points per cloud the graph was exported for (graph placement resamples to it)
    num_groups: int = 0  # G centres
    group_size: int = 0  # K neighbours per centre
    normalize: bool = True  # the model centres and scales each cloud (on the host, for host placement)
    algorithm: str = "exact"  # "exact" | "scalable"
    fps_candidates: int = 4  # scalable: candidates per centre
    fps_start: str = "farthest-from-centroid"

    @property
    def in_graph(self) -> bool:
        return self.placement == "graph"

    @property
    def input_names(self) -> tuple:
        return ("points",) if self.in_graph else ("neighbourhoods", "centers")

    @property
    def min_points(self) -> int:
        """A cloud needs G distinct points for FPS and K for one neighbourhood."""
        return max(self.num_groups, self.group_size, 1)

    def to_manifest(self) -> dict:
        """The manifest's `preprocessing` section (the file format keeps its historic keys)."""
        return {"normalize": NORMALIZE if self.normalize else "none", "in_graph": self.in_graph,
                "num_points": self.num_points, "num_groups": self.num_groups, "group_size": self.group_size,
                "fps_start": self.fps_start, "method": self.algorithm, "fps_candidates": self.fps_candidates}

    @classmethod
    def from_section(cls, section: dict, placement: Optional[str] = None) -> "Preprocessing":
        """A manifest's `preprocessing` section (and its `grouping`, where given) -> Preprocessing."""
        in_graph = section.get("in_graph", True)
        return cls(placement or ("graph" if in_graph else "host"), int(section.get("num_points") or 0),
                   int(section.get("num_groups") or 0), int(section.get("group_size") or 0),
                   section.get("normalize") == NORMALIZE, section.get("method", "exact"),
                   int(section.get("fps_candidates", 4)), section.get("fps_start", "farthest-from-centroid"))

    @classmethod
    def from_manifest(cls, manifest: dict) -> "Preprocessing":
        return cls.from_section(dict(manifest.get("preprocessing", {})), manifest.get("grouping"))

    def checked(self) -> "Preprocessing":
        """Itself, or a one-line error naming what a manifest or the options got wrong."""
        if self.placement not in PLACEMENTS or self.num_points < 1:
            raise FoundryError(f"expected grouping graph|host and num_points >= 1, found {self.placement!r} and "
                               f"{self.num_points}: fix the manifest or the --grouping/--points options")
        if self.algorithm not in ALGORITHMS:
            raise FoundryError(f"expected grouping method exact|scalable, found {self.algorithm!r}: fix the manifest")
        if not self.in_graph and (self.num_groups < 1 or self.group_size < 1):
            raise FoundryError(f"host grouping needs num_groups and group_size >= 1, found {self.num_groups} and "
                               f"{self.group_size}: pass --groups and --group-size")
        return self
