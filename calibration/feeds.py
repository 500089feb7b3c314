"""Calibration and evaluation feeds: point clouds -> the graph's own inputs, prepared as the manifest says.

graph grouping: raw clouds resampled to the manifest's num_points -> {"points": (B, N, 3)}.
host grouping: clouds normalised and grouped on the host (foundry_edge.preprocess) ->
               {"neighbourhoods": (B, G, K, 3), "centers": (B, G, 3)}.
A feed is `dict[input_name, np.ndarray]` (docs/contracts.md); `FeedReader` serves a list of them to
ONNX Runtime's calibrators and can be rewound, so one set of feeds serves calibration and evaluation.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from foundry_edge.errors import FoundryError

Feed = Dict[str, np.ndarray]
GROUPINGS = ("graph", "host")


@dataclass(frozen=True)
class Preprocessing:
    """What the exported graph expects of its input clouds (the manifest's `preprocessing`)."""

    grouping: str
    num_points: int
    num_groups: int = 0
    group_size: int = 0

    def to_dict(self) -> dict:
        return {"grouping": self.grouping, "num_points": self.num_points,
                "num_groups": self.num_groups, "group_size": self.group_size}


@dataclass
class CloudSet:
    """Clouds (each (N, 3) float32), their class labels where known, and where they came from."""

    clouds: List[np.ndarray]
    labels: Optional[List[int]]
    source: str


def preprocessing_from(manifest: Optional[dict], points: Optional[int] = None, grouping: Optional[str] = None,
                       groups: Optional[int] = None, group_size: Optional[int] = None) -> Preprocessing:
    """The manifest's preprocessing, or the options when there is no manifest; options never override it."""
    given = {"num_points": points, "grouping": grouping, "num_groups": groups, "group_size": group_size}
    if manifest is None:
        if points is None or grouping is None:
            raise FoundryError("the model has no manifest beside it, so its preprocessing is unknown: pass --points N "
                               "and --grouping graph|host (with --groups G --group-size K for host grouping)")
        return _checked(Preprocessing(grouping, points, groups or 0, group_size or 0))
    pre = manifest.get("preprocessing", {})
    found = Preprocessing(manifest.get("grouping", "graph"), int(pre.get("num_points", 0)),
                          int(pre.get("num_groups", 0)), int(pre.get("group_size", 0)))
    clashes = [f"{k}={v} (manifest: {getattr(found, k)})" for k, v in given.items()
               if v is not None and v != getattr(found, k)]
    if clashes:
        raise FoundryError(f"options {', '.join(clashes)} contradict the model's manifest; the graph was exported "
                           "for the manifest's values: drop these options or export the model again")
    return _checked(found)


def _checked(pre: Preprocessing) -> Preprocessing:
    if pre.grouping not in GROUPINGS or pre.num_points < 1:
        raise FoundryError(f"expected grouping graph|host and num_points >= 1, found {pre.grouping!r} and "
                           f"{pre.num_points}: fix the manifest or the --grouping/--points options")
    if pre.grouping == "host" and (pre.num_groups < 1 or pre.group_size < 1):
        raise FoundryError(f"host grouping needs num_groups and group_size >= 1, found {pre.num_groups} and "
                           f"{pre.group_size}: pass --groups and --group-size")
    return pre


def check_cloud(cloud: np.ndarray, where: str) -> np.ndarray:
    """(N, 3) finite float32, or a FoundryError naming the sample."""
    cloud = np.asarray(cloud)
    if cloud.ndim != 2 or cloud.shape[1] != 3 or cloud.shape[0] < 1:
        raise FoundryError(f"{where}: expected a point cloud of shape (N, 3), found {cloud.shape}: "
                           "pass clouds with x, y, z columns")
    if not np.isfinite(cloud).all():
        bad = int((~np.isfinite(cloud)).any(axis=1).sum())
        raise FoundryError(f"{where}: expected finite coordinates, found {bad} points with NaN or inf: "
                           "clean the cloud or leave it out")
    return cloud.astype(np.float32, copy=False)


def resample(cloud: np.ndarray, num_points: int, seed: int) -> np.ndarray:
    """(M, 3) -> (num_points, 3): a seeded subset without replacement, or with replacement if M is short."""
    rng = np.random.default_rng(seed)
    index = rng.choice(len(cloud), size=num_points, replace=len(cloud) < num_points)
    return cloud[np.sort(index)] if len(cloud) >= num_points else cloud[index]


def prepare(cloud_set: CloudSet, pre: Preprocessing, input_names: Sequence[str], batch: int = 8,
            seed: int = 0) -> List[Feed]:
    """Clouds -> batched feeds for the graph's inputs, in order (B = `batch`, the last batch smaller)."""
    points = [resample(check_cloud(c, f"{cloud_set.source} sample {i}"), pre.num_points, seed + i)
              for i, c in enumerate(cloud_set.clouds)]
    feeds = []
    for start in range(0, len(points), batch):
        stacked = np.stack(points[start:start + batch])
        arrays = [stacked] if pre.grouping == "graph" else list(_group_on_host(stacked, pre))
        feeds.append(dict(zip(input_names, arrays)))
    if len(feeds[0]) != len(input_names):
        raise FoundryError(f"the model's inputs {list(input_names)} do not match {pre.grouping} grouping: "
                           "fix the manifest's grouping or pass the matching --grouping")
    return feeds


def _group_on_host(points: np.ndarray, pre: Preprocessing):
    """(B, N, 3) raw -> neighbourhoods (B, G, K, 3), centres (B, G, 3), as the host runtime does it."""
    from foundry_edge import preprocess

    return preprocess.group_clouds(points, pre.num_groups, pre.group_size)


def feeds_sha256(feeds: Sequence[Feed]) -> str:
    """A hash of exactly what is fed (names, shapes, bytes), so the cache notices any change."""
    digest = hashlib.sha256()
    for feed in feeds:
        for name in sorted(feed):
            array = np.ascontiguousarray(feed[name])
            digest.update(f"{name}{array.shape}{array.dtype}".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()


class FeedReader:
    """ONNX Runtime's CalibrationDataReader over prepared feeds (its `__subclasshook__` accepts any
    class with `get_next`), rewindable so the same feeds can be read again; `on_feed` reports progress."""

    def __init__(self, feeds: Sequence[Feed], on_feed: Optional[Callable[[Feed], None]] = None):
        self.feeds, self.on_feed, self._next = list(feeds), on_feed, 0

    def get_next(self) -> Optional[Feed]:
        if self._next >= len(self.feeds):
            return None
        feed = self.feeds[self._next]
        self._next += 1
        if self.on_feed is not None:
            self.on_feed(feed)
        return feed

    def rewind(self) -> None:
        self._next = 0

    def __len__(self) -> int:
        return len(self.feeds)

    def __iter__(self):
        self.rewind()
        return iter(self.get_next, None)


def open_clouds(specs: Sequence[str], samples: int, split: str, seed: int = 0) -> CloudSet:
    """`samples` clouds from 'synthetic' (the given split) or files, folders and data-set layouts.

    More clouds than asked: an evenly spaced subset (so every class of a sorted layout is kept);
    fewer: an error, never a silent shortfall.
    """
    if samples < 1:
        raise FoundryError(f"expected --samples >= 1, found {samples}: pass a positive count")
    if list(specs) == ["synthetic"]:
        from foundry_edge.data.synthetic import SyntheticShapes

        shapes = SyntheticShapes(samples, 2048, seed=seed, split=split)
        items = [shapes[i] for i in range(samples)]
        return CloudSet([it["points"] for it in items], [int(it["label"]) for it in items],
                        f"synthetic ({split} split, seed {seed})")
    if "synthetic" in specs:
        raise FoundryError("'synthetic' cannot be mixed with files: pass --data synthetic alone or only paths")
    return _subset(_read_paths(specs), samples)


def _subset(found: CloudSet, samples: int) -> CloudSet:
    if len(found.clouds) < samples:
        raise FoundryError(f"expected {samples} clouds, found {len(found.clouds)} in {found.source}: "
                           f"add data or pass --samples {len(found.clouds) or 1}")
    pick = np.linspace(0, len(found.clouds) - 1, samples).round().astype(int)
    labels = [found.labels[i] for i in pick] if found.labels is not None else None
    return CloudSet([found.clouds[i] for i in pick], labels, found.source)


def _read_paths(specs: Sequence[str]) -> CloudSet:
    from foundry_edge.data import load_clouds

    missing = [s for s in specs if not Path(s).exists()]
    if missing:
        raise FoundryError(f"expected existing files or folders, found none at {', '.join(missing)}: "
                           "check the paths or use --data synthetic")
    clouds, labels = load_clouds(list(specs))
    if not clouds:
        raise FoundryError(f"expected point clouds in {', '.join(specs)}, found none: "
                           "pass .npy/.ply/.pcd/.txt/.h5 files or a data-set folder")
    return CloudSet(list(clouds), labels, ", ".join(specs))
