"""Calibration and evaluation feeds: clouds (foundry_edge.data.loader) -> the graph's own inputs, prepared as
the manifest says.

graph grouping: raw clouds resampled to the manifest's num_points -> {"points": (B, N, 3)}.
host grouping: clouds normalised and grouped on the host (foundry_edge.data.preprocess.feed_from_manifest,
               exact or scalable as the manifest says) -> {"neighbourhoods": (B, G, K, 3), "centers": (B, G, 3)}.
A feed is `dict[input_name, np.ndarray]` (docs/contracts.md); `FeedReader` serves a list of them to
ONNX Runtime's calibrators and can be rewound, so one set of feeds serves calibration and evaluation.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from foundry_edge.contracts.preprocessing import Preprocessing
from foundry_edge.data.loader import Clouds
from foundry_edge.errors import FoundryError

Feed = Dict[str, np.ndarray]
OPTION_FIELDS = {"num_points": "num_points", "grouping": "placement", "num_groups": "num_groups",
                 "group_size": "group_size"}  # preprocessing_from's options -> Preprocessing's fields


def preprocessing_from(manifest: Optional[dict], points: Optional[int] = None, grouping: Optional[str] = None,
                       groups: Optional[int] = None, group_size: Optional[int] = None) -> Preprocessing:
    """The manifest's preprocessing, or the options when there is no manifest; options never override it."""
    given = {"num_points": points, "grouping": grouping, "num_groups": groups, "group_size": group_size}
    if manifest is None:
        if points is None or grouping is None:
            raise FoundryError("the model has no manifest beside it, so its preprocessing is unknown: pass --points N "
                               "and --grouping graph|host (with --groups G --group-size K for host grouping)")
        return Preprocessing(grouping, points, groups or 0, group_size or 0).checked()
    found = Preprocessing.from_section(manifest.get("preprocessing", {}), manifest.get("grouping", "graph"))
    clashes = [f"{k}={v} (manifest: {getattr(found, OPTION_FIELDS[k])})" for k, v in given.items()
               if v is not None and v != getattr(found, OPTION_FIELDS[k])]
    if clashes:
        raise FoundryError(f"options {', '.join(clashes)} contradict the model's manifest; the graph was exported "
                           "for the manifest's values: drop these options or export the model again")
    return found.checked()


def prepare(clouds: Clouds, pre: Preprocessing, input_names: Sequence[str], batch: int = 8,
            seed: int = 0) -> List[Feed]:
    """Clouds -> batched feeds for the graph's inputs, in order (B = `batch`, the last batch smaller)."""
    from foundry_edge.data.readers import validate_cloud
    from foundry_edge.data.transforms import resample
    from foundry_edge.data.preprocess import feed_from_manifest

    points = []
    for i, cloud in enumerate(clouds):
        cloud = validate_cloud(cloud, source=f"{clouds.source} sample {i}")
        points.append(cloud if len(cloud) == pre.num_points else resample(cloud, pre.num_points, [seed, i]))
    feeds, section = [], pre.to_manifest()
    for start in range(0, len(points), batch):
        feed = feed_from_manifest(np.stack(points[start:start + batch]), section)
        if sorted(feed) != sorted(input_names):
            raise FoundryError(f"expected {pre.placement} grouping to feed the model's inputs {sorted(input_names)}, "
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
