"""One cloud loader for every command that feeds clouds to a model: calibration, verify, run, profiling and
export validation (the data contract of docs/contracts.md: loaders that can be iterated more than once).

    loader = CloudLoader(["scans/"], num_points=1024, samples=64, split="calibration")
    for cloud in loader: ...        # (N, 3) float32; a second pass gives the same clouds
    loader().points                 # (M, N, 3) float32, with names, origins, labels and what was done to each

Sources: "synthetic" (SyntheticShapes of a split), "example" (export's off-centre ellipsoids, see
foundry_edge.data.synthetic.example_clouds), cloud files (one cloud each; a (B, M, 3) .npy/.npz stack gives B),
folders and data-set layouts (their split); no specs at all means "synthetic". Loading is deterministic
for a seed and done once: the loader keeps what it read, so it is re-iterable without reading again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List, Optional, Sequence

import numpy as np

from foundry_edge.errors import FoundryError

GENERATED = ("synthetic", "example")
DATASET_SUFFIXES = (".h5", ".hdf5", ".dat", ".pkl", ".pickle")  # files open_dataset reads as a whole data set
LAYOUT_SPLITS = {"calibration": "train", "verify": "test"}  # a command's split -> a data-set layout's split


@dataclass
class Clouds:
    """Clouds as a runtime takes them, and what was done to each on the way (`run` says it, `run -o` saves origins)."""

    points: np.ndarray  # (M, N, 3) float32
    names: List[str]
    origins: np.ndarray  # (M, 3) float64: a file's coordinates are points + origin (zeros: not moved)
    read: List[int]      # points read from each file (generated, for synthetic shapes)
    dropped: List[int]   # of those, points with NaN/Inf dropped (drop_invalid)
    seed: int = 0
    labels: Optional[List[int]] = None  # class labels, where every source has them
    source: str = ""     # where the clouds came from, in words

    def __len__(self) -> int:
        return len(self.points)

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.points)

    def notes(self) -> List[str]:
        """One line per cloud: points read, dropped, recentred, and resampled to N by which rule."""
        lines = []
        for name, read, dropped, origin in zip(self.names, self.read, self.dropped, self.origins):
            steps = [f"{read} points {'generated' if name.split(':')[0] in GENERATED else 'read'}"]
            if dropped:
                steps.append(f"{dropped} with NaN/Inf dropped")
            if origin.any():
                steps.append(f"recentred on origin ({', '.join(f'{v:.10g}' for v in origin)}) in float64")
            steps.append(resampling(read - dropped, self.points.shape[1], self.seed))
            lines.append(f"{name}: {', '.join(steps)}")
        return lines


def resampling(found: int, n: int, seed: int) -> str:
    """What foundry_edge.data.transforms.resample does to a cloud of `found` points, in words."""
    if found > n:
        return f"subsampled to {n} by a random choice without repeats (seed {seed})"
    if found < n:
        return f"padded to {n} by repeating {n - found} randomly drawn points (every point kept once, seed {seed})"
    return f"all {n} used"


@dataclass
class CloudLoader:
    """`samples` clouds of `num_points` from `specs`; calling it loads them (once), iterating it yields them.

    `samples`: how many to generate ('synthetic', 'example'), or an evenly spaced subset of what files and data
    sets hold (so every class of a sorted layout is kept); None takes every cloud found. Fewer than asked is an
    error, never a silent shortfall. `split`: synthetic shapes draw that split; a data-set layout reads
    LAYOUT_SPLITS' mapping of it ("calibration" -> train, "verify" -> test). A cloud file with fewer than
    `min_points` (the model's group size) is refused: resampling would only repeat points. NaN/Inf points are
    refused unless `drop_invalid` drops them (a DroppedPoints warning each); a file far from its origin comes
    back recentred (foundry_edge.data.read_cloud). Each file's cloud is resampled with `seed`.
    """

    specs: Sequence[str]
    num_points: Optional[int]
    samples: Optional[int] = None
    split: str = "test"
    seed: int = 0
    min_points: int = 1
    drop_invalid: bool = False
    _loaded: Optional[Clouds] = field(default=None, init=False, repr=False, compare=False)

    def __call__(self) -> Clouds:
        if self._loaded is None:
            self._loaded = self._load()
        return self._loaded

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self())

    def __len__(self) -> int:
        return len(self())

    def _load(self) -> Clouds:
        if not self.num_points:
            raise FoundryError("expected the model to say how many points a cloud has, found a dynamic point axis "
                               "and no manifest: keep <stem>.manifest.json beside the ONNX, or export with "
                               "--static-points")
        if self.samples is not None and self.samples < 1:
            raise FoundryError(f"expected --samples >= 1, found {self.samples}: pass a positive count (at least 1 "
                               "synthetic cloud)")
        specs = [str(s) for s in self.specs] or ["synthetic"]
        generated = [s for s in specs if s in GENERATED]
        if generated and len(specs) > 1:
            raise FoundryError(f"expected either '{generated[0]}' or paths, found both: pass --data "
                               f"{generated[0]} alone")
        if generated:
            return self._generated(generated[0])
        missing = [s for s in specs if not Path(s).exists()]
        if missing:
            raise FoundryError(f"expected existing files or folders, found nothing at {', '.join(missing)}: "
                               "check the paths")
        return _subset(self._read(specs), self.samples)

    def _generated(self, kind: str) -> Clouds:
        from foundry_edge.data.synthetic import SyntheticShapes, example_clouds

        if self.samples is None:
            raise FoundryError(f"expected a number of {kind} clouds to generate, found none: pass --samples N")
        count, n = self.samples, self.num_points
        if kind == "example":
            points, names, labels = example_clouds(count, n, self.seed), [f"example:{i}" for i in range(count)], None
            source = f"example clouds (seed {self.seed})"
        else:
            shapes = SyntheticShapes(count, n, seed=self.seed, split=self.split)
            items = list(shapes)
            points, labels = np.stack([it["points"] for it in items]), [int(it["label"]) for it in items]
            names = [f"synthetic:{shapes.classes[label]}" for label in labels]
            source = f"synthetic ({self.split} split, seed {self.seed})"
        return Clouds(points.astype(np.float32), names, np.zeros((count, 3)), [n] * count, [0] * count, self.seed,
                      labels, source)

    def _read(self, specs: List[str]) -> Clouds:
        """Every cloud of every entry, in order; labels only when every entry is a labelled data set."""
        from foundry_edge.data.transforms import resample

        parts = [self._dataset(s) if _is_dataset(Path(s)) else self._file(Path(s)) for s in specs]
        names = [name for part in parts for name in part[0]]
        clouds = [c if len(c) == self.num_points else resample(c, self.num_points, self.seed)
                  for part in parts for c in part[1]]
        origins, read, dropped = (sum((part[k] for part in parts), []) for k in (2, 3, 4))
        labels = None if any(part[5] is None for part in parts) else sum((part[5] for part in parts), [])
        source = ", ".join(f"{s} ({LAYOUT_SPLITS.get(self.split, self.split)} split)" if _is_dataset(Path(s)) else s
                           for s in specs)
        return Clouds(np.stack(clouds).astype(np.float32), names, np.stack(origins), read, dropped, self.seed,
                      labels, source)

    def _file(self, path: Path) -> tuple:
        """A cloud file -> (names, clouds, origins, read, dropped, labels=None); a (B, M, 3) array gives B clouds."""
        from foundry_edge.data.readers import cloud_from_table, read_table, validate_cloud

        table = read_table(path)
        if isinstance(table, np.ndarray) and table.ndim == 3:
            clouds = [validate_cloud(c, self.min_points, f"{path}[{i}]", drop_invalid=self.drop_invalid)
                      for i, c in enumerate(table)]
            return ([f"{path}[{i}]" for i in range(len(clouds))], clouds, [np.zeros(3)] * len(clouds),
                    [table.shape[1]] * len(clouds), [table.shape[1] - len(c) for c in clouds], None)
        cloud, origin, keep = cloud_from_table(table, path, min_points=self.min_points, drop_invalid=self.drop_invalid)
        dropped = 0 if keep is None else int((~keep).sum())
        return [str(path)], [cloud], [origin], [len(cloud) + dropped], [dropped], None

    def _dataset(self, spec: Path) -> tuple:
        """A folder or data-set file -> its split's clouds (at num_points already) and labels."""
        from foundry_edge.data.datasets import open_dataset

        split = LAYOUT_SPLITS.get(self.split, self.split)
        dataset = open_dataset(str(spec), split, self.num_points, seed=self.seed, drop_invalid=self.drop_invalid)
        items = [dataset[i] for i in _evenly_spaced(len(dataset), self.samples, f"{spec} ({split} split)")]
        count = len(items)
        return ([f"{spec}[{i}]" for i in range(count)], [it["points"] for it in items], [np.zeros(3)] * count,
                [self.num_points] * count, [0] * count, [int(it["label"]) for it in items])


def _is_dataset(path: Path) -> bool:
    return path.is_dir() or path.suffix.lower() in DATASET_SUFFIXES


def _evenly_spaced(found: int, samples: Optional[int], source: str) -> List[int]:
    """Indices of `samples` of `found` items, evenly spaced (all of them when `samples` is None)."""
    if samples is None:
        return list(range(found))
    if found < samples:
        raise FoundryError(f"expected {samples} clouds, found {found} in {source}: "
                           f"add data or pass --samples {max(found, 1)}")
    return [int(i) for i in np.linspace(0, found - 1, samples).round().astype(int)]


def _subset(found: Clouds, samples: Optional[int]) -> Clouds:
    pick = _evenly_spaced(len(found), samples, found.source)
    return Clouds(found.points[pick], [found.names[i] for i in pick], found.origins[pick],
                  [found.read[i] for i in pick], [found.dropped[i] for i in pick], found.seed,
                  None if found.labels is None else [found.labels[i] for i in pick], found.source)
