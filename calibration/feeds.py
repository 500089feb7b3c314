"""Calibration and evaluation feeds: point clouds -> the graph's own inputs, prepared as the manifest says.

graph grouping: raw clouds resampled to the manifest's num_points -> {"points": (B, N, 3)}.
host grouping: clouds normalised and grouped on the host (foundry_edge.data.preprocess.feed_from_manifest,
               exact or scalable as the manifest says) -> {"neighbourhoods": (B, G, K, 3), "centers": (B, G, 3)}.
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
    normalize: bool = True  # host grouping: the host centres and scales each cloud (the graph does not)
    method: str = "exact"  # host grouping: "exact" or "scalable" (ModelConfig.grouping)
    fps_candidates: int = 4

    def to_manifest(self) -> dict:
        """The manifest's `preprocessing` section, which foundry_edge.data.preprocess.feed_from_manifest reads."""
        return {"normalize": "centre-unit-sphere" if self.normalize else "none", "in_graph": self.grouping == "graph",
                "num_points": self.num_points, "num_groups": self.num_groups, "group_size": self.group_size,
                "method": self.method, "fps_candidates": self.fps_candidates}


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
                          int(pre.get("num_groups", 0)), int(pre.get("group_size", 0)),
                          pre.get("normalize") == "centre-unit-sphere", pre.get("method", "exact"),
                          int(pre.get("fps_candidates", 4)))
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


def prepare(cloud_set: CloudSet, pre: Preprocessing, input_names: Sequence[str], batch: int = 8,
            seed: int = 0) -> List[Feed]:
    """Clouds -> batched feeds for the graph's inputs, in order (B = `batch`, the last batch smaller)."""
    from foundry_edge.data.readers import validate_cloud
    from foundry_edge.data.transforms import resample
    from foundry_edge.data.preprocess import feed_from_manifest

    points = []
    for i, cloud in enumerate(cloud_set.clouds):
        cloud = validate_cloud(cloud, source=f"{cloud_set.source} sample {i}")
        points.append(cloud if len(cloud) == pre.num_points else resample(cloud, pre.num_points, [seed, i]))
    feeds, section = [], pre.to_manifest()
    for start in range(0, len(points), batch):
        feed = feed_from_manifest(np.stack(points[start:start + batch]), section)
        if sorted(feed) != sorted(input_names):
            raise FoundryError(f"expected {pre.grouping} grouping to feed the model's inputs {sorted(input_names)}, "
                               f"found it feeds {sorted(feed)}: fix the manifest's grouping or pass the matching --grouping")
        feeds.append(feed)
    return feeds


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


def open_clouds(specs: Sequence[str], samples: int, split: str, seed: int = 0, num_points: int = 1024,
                min_points: int = 1, drop_invalid: bool = False) -> CloudSet:
    """`samples` clouds of `num_points` from 'synthetic', cloud files, folders or data-set layouts.

    NaN/Inf points are refused unless `drop_invalid` drops them (a foundry_edge.data.DroppedPoints warning each).

    split "calibration" draws a synthetic split of its own and the train split of a data set; "test"
    is held out from both. More clouds than asked: an evenly spaced subset (so every class of a sorted
    layout is kept); fewer: an error, never a silent shortfall.
    """
    from foundry_edge import data

    if samples < 1:
        raise FoundryError(f"expected --samples >= 1, found {samples}: pass a positive count")
    specs = [str(s) for s in specs]
    if specs == ["synthetic"]:
        return _from_dataset(data.SyntheticShapes(samples, num_points, seed=seed, split=split), samples,
                             f"synthetic ({split} split, seed {seed})")
    if "synthetic" in specs:
        raise FoundryError("expected either 'synthetic' or paths, found both: pass --data synthetic alone")
    missing = [s for s in specs if not Path(s).exists()]
    if missing:
        raise FoundryError(f"expected existing files or folders, found nothing at {', '.join(missing)}: "
                           "check the paths or use --data synthetic")
    layout_split = "train" if split == "calibration" else split
    if len(specs) == 1 and (Path(specs[0]).is_dir() or Path(specs[0]).suffix in (".h5", ".hdf5")):
        dataset = data.open_dataset(specs[0], layout_split, num_points, seed=seed, drop_invalid=drop_invalid)
        return _from_dataset(dataset, samples, f"{specs[0]} ({layout_split} split)")
    clouds = data.load_clouds(specs, num_points, split=layout_split, seed=seed, min_points=min_points,
                              drop_invalid=drop_invalid)
    return _subset(CloudSet(list(clouds), None, ", ".join(specs)), samples)


def _from_dataset(dataset, samples: int, source: str) -> CloudSet:
    if len(dataset) < samples:
        raise FoundryError(f"expected {samples} clouds, found {len(dataset)} in {source}: "
                           f"add data or pass --samples {max(len(dataset), 1)}")
    pick = np.linspace(0, len(dataset) - 1, samples).round().astype(int)
    items = [dataset[int(i)] for i in pick]
    labels = [int(it["label"]) for it in items] if all("label" in it for it in items) else None
    return CloudSet([it["points"] for it in items], labels, source)


def _subset(found: CloudSet, samples: int) -> CloudSet:
    if len(found.clouds) < samples:
        raise FoundryError(f"expected {samples} clouds, found {len(found.clouds)} in {found.source}: "
                           f"add data or pass --samples {max(len(found.clouds), 1)}")
    pick = np.linspace(0, len(found.clouds) - 1, samples).round().astype(int)
    return CloudSet([found.clouds[i] for i in pick], None, found.source)
