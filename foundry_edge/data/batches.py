"""From data sets and user paths to batches: `iter_batches` for loops, `load_clouds` for the commands
(and `read_clouds` where stored sizes and labels matter, as in calibration).

`run`, `calibrate` and `profile` take whatever the user names (cloud files, folders, data-set layouts,
a saved (B, N, 3) batch, "synthetic[:N]") and need one (B, N, 3) float32 array of raw clouds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from foundry_edge.data.datasets import CLOUD_SUFFIXES, open_dataset
from foundry_edge.data.readers import cloud_from_table, read_table, validate_cloud
from foundry_edge.data.transforms import resample
from foundry_edge.errors import FoundryError


class Batches:
    """Re-iterable batches of a data set: dict(points (B, N, 3) f32, label (B,) i64[, parts (B, N) i64]).

    `shuffle` draws a new order each pass from `seed` and the pass number, so runs repeat exactly.
    """

    def __init__(self, dataset, batch_size: int, *, shuffle: bool = False, drop_last: bool = False, seed: int = 0):
        if batch_size < 1:
            raise FoundryError(f"batch_size must be >= 1, found {batch_size}")
        self.dataset, self.batch_size, self.shuffle, self.drop_last, self.seed = dataset, batch_size, shuffle, drop_last, seed
        self._passes = 0

    def __len__(self) -> int:
        full, rest = divmod(len(self.dataset), self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def __iter__(self) -> Iterator[dict]:
        order = np.arange(len(self.dataset))
        if self.shuffle:
            order = np.random.default_rng([self.seed, self._passes]).permutation(order)
        self._passes += 1
        for b in range(len(self)):
            items = [self.dataset[int(i)] for i in order[b * self.batch_size:(b + 1) * self.batch_size]]
            batch = {"points": np.stack([it["points"] for it in items]).astype(np.float32),
                     "label": np.array([it["label"] for it in items], dtype=np.int64)}
            if "parts" in items[0]:
                batch["parts"] = np.stack([it["parts"] for it in items])
            yield batch


def iter_batches(dataset, batch_size: int, **options) -> Batches:
    """Batches of `dataset` (anything with len and [i] -> dict(points, label[, parts])); see `Batches`."""
    return Batches(dataset, batch_size, **options)


Paths = Union[str, Path, Sequence[Union[str, Path]]]


def load_clouds(paths: Paths, num_points: int, limit: Optional[int] = None, *, split: str = "test", seed: int = 0,
                trust_pickle: bool = False, min_points: int = 1, drop_invalid: bool = False) -> np.ndarray:
    """User paths -> (B, N, 3) float32 raw clouds, each resampled to `num_points` (see `resample`).

    Each entry may be a cloud file, a .npy/.npz holding a (B, M, 3) batch, a data-set folder (its
    `split`), a folder of cloud files, or "synthetic[:N]". `limit` caps B; order follows the entries.
    A cloud file with fewer than `min_points` (a model's group size) is refused, not padded by resampling.
    A cloud file far from its origin comes back recentred (see `read_cloud`); `drop_invalid` drops NaN/Inf
    points (a DroppedPoints warning each) instead of refusing the cloud.
    """
    if num_points is None or num_points < 1:
        raise FoundryError(f"a batch needs num_points >= 1, found {num_points}; use read_clouds for stored sizes")
    clouds, _ = read_clouds(paths, num_points, limit, split=split, seed=seed, trust_pickle=trust_pickle,
                            min_points=min_points, drop_invalid=drop_invalid)
    return np.stack(clouds)


def read_clouds(paths: Paths, num_points: Optional[int] = None, limit: Optional[int] = None, *, split: str = "test",
                seed: int = 0, trust_pickle: bool = False, min_points: int = 1,
                drop_invalid: bool = False) -> Tuple[List[np.ndarray], Optional[List[int]]]:
    """Like `load_clouds`, but a list of (M_i, 3) float32 clouds at their stored sizes when `num_points` is
    None, and their labels (None unless every entry is a labelled data set or folder)."""
    entries = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not entries:
        raise FoundryError("expected at least one point-cloud path, folder or 'synthetic', found none")
    clouds: List[np.ndarray] = []
    labels: Optional[List[int]] = []
    for entry in entries:
        room = None if limit is None else limit - len(clouds)
        if room is not None and room <= 0:
            break
        found, found_labels = _clouds_of(entry, num_points, room, split, seed + len(clouds), trust_pickle, min_points,
                                         drop_invalid)
        clouds += found
        labels = labels + found_labels if labels is not None and found_labels is not None else None
    if not clouds:
        raise FoundryError(f"expected point clouds in {[str(e) for e in entries]}, found none")
    return clouds, labels


def _clouds_of(entry, num_points: Optional[int], room: Optional[int], split: str, seed: int, trust_pickle: bool,
               min_points: int = 1, drop_invalid: bool = False):
    """Up to `room` clouds of one entry (resampled with seeds seed, seed + 1, ...) and their labels or None."""
    path = Path(entry)
    if path.is_file() and path.suffix.lower() in CLOUD_SUFFIXES:
        clouds = _file_clouds(path, min_points, drop_invalid)[:room]
        return [c if num_points is None else resample(c, num_points, seed + i) for i, c in enumerate(clouds)], None
    dataset = open_dataset(entry, split, num_points, seed=seed, trust_pickle=trust_pickle, drop_invalid=drop_invalid)
    items = [dataset[i] for i in range(len(dataset) if room is None else min(room, len(dataset)))]
    return [it["points"] for it in items], [int(it["label"]) for it in items]


def _file_clouds(path: Path, min_points: int = 1, drop_invalid: bool = False) -> List[np.ndarray]:
    """The clouds of one file: a (B, M, 3) array saved with np.save / np.savez gives B, any other file one."""
    table = read_table(path)
    if isinstance(table, np.ndarray) and table.ndim == 3:
        return [validate_cloud(c, min_points, f"{path}[{i}]", drop_invalid=drop_invalid) for i, c in enumerate(table)]
    return [cloud_from_table(table, path, min_points=min_points, drop_invalid=drop_invalid)[0]]
