"""Data set layouts as indexable, re-iterable data sets of dict(points (n, 3) f32, label int[, parts (n,) i64]).

Every layout reads one sample on access (nothing is loaded whole), and resamples it to `num_points`
with `resample_indices(..., seed=[seed, index])`, so an item is the same on every read
(`num_points=None` keeps each cloud as stored).
`open_dataset(spec, split, num_points)` picks the layout from a path, or builds "synthetic[:N]";
`drop_invalid=True` drops points with NaN/Inf from each sample instead of refusing it.
"""

from __future__ import annotations

import json
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from foundry_edge.data.readers import CLOUD_SUFFIXES, read_cloud, read_cloud_with_fields, validate_cloud
from foundry_edge.data.synthetic import SyntheticShapes
from foundry_edge.data.transforms import resample_indices
from foundry_edge.errors import FoundryError, require

# ScanObjectNN's 15 classes in label order (Uy et al., ICCV 2019, training/test h5 files).
SCANOBJECTNN_CLASSES = ("bag", "bin", "box", "cabinet", "chair", "desk", "display", "door", "shelf", "table",
                        "bed", "pillow", "sink", "sofa", "toilet")
DEFAULT_SYNTHETIC_SAMPLES = 128


class PointDataset:
    """Base: subclasses set `classes`, `__len__` and `_load(index) -> (points (M, 3), label, parts or None)`;
    they drop NaN/Inf rows of a sample when `drop_invalid` is set (open_dataset sets it), else refuse them."""

    classes: List[str]
    drop_invalid: bool = False

    def __init__(self, num_points: Optional[int], seed: int = 0):
        if num_points is not None and num_points < 1:
            raise FoundryError(f"num_points must be >= 1 (or None for each cloud's own size), found {num_points}")
        self.num_points, self.seed = num_points, int(seed)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        raise NotImplementedError

    def _load(self, index: int) -> Tuple[np.ndarray, int, Optional[np.ndarray]]:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} samples")
        index %= len(self)
        points, label, parts = self._load(index)
        keep = (slice(None) if self.num_points is None
                else resample_indices(len(points), self.num_points, seed=[self.seed, index]))
        item = {"points": np.asarray(points[keep], dtype=np.float32), "label": int(label)}
        if parts is not None:
            item["parts"] = np.asarray(parts, dtype=np.int64)[keep]
        return item

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} samples, {self.num_classes} classes, {self.num_points or 'all'} points)"


def _natural_key(path: Path):
    """ply_data_train2.h5 before ply_data_train10.h5."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


class H5Dataset(PointDataset):
    """HDF5 files with `data` (S, M, 3+) and `label` (S,) or (S, 1): ModelNet40 (PointNet) and ScanObjectNN."""

    def __init__(self, files: Sequence[Path], classes: Optional[Sequence[str]], num_points: Optional[int], seed: int = 0):
        super().__init__(num_points, seed)
        self.files, self._handles = list(files), {}
        labels = []
        for path in self.files:
            with _open_h5(path) as fh, _h5_errors(path):
                if "data" not in fh or "label" not in fh:
                    raise FoundryError(f"{path}: expected HDF5 datasets 'data' and 'label', found {sorted(fh)}")
                shape, count = fh["data"].shape, fh["label"].size
                if len(shape) != 3 or shape[2] < 3 or shape[0] != count:
                    raise FoundryError(f"{path}: expected 'data' (S, M, 3+) with S equal to the {count} labels, "
                                       f"found {shape}: check or download the file again")
                labels.append(np.asarray(fh["label"]).reshape(-1).astype(np.int64))
        self.labels = np.concatenate(labels) if labels else np.zeros(0, np.int64)
        self._rows = [(f, r) for f, lab in enumerate(labels) for r in range(len(lab))]
        top = int(self.labels.max()) + 1 if len(self.labels) else 0
        self.classes = list(classes) if classes else [str(i) for i in range(top)]

    def __len__(self) -> int:
        return len(self._rows)

    def _load(self, index):
        f, row = self._rows[index]
        if f not in self._handles:
            self._handles[f] = _open_h5(self.files[f])
        with _h5_errors(self.files[f]):
            data = np.asarray(self._handles[f]["data"][row])
        return (validate_cloud(data[:, :3], 1, f"{self.files[f]} row {row}", drop_invalid=self.drop_invalid),
                self.labels[index], None)

    def __getstate__(self):  # open HDF5 handles do not pickle (DataLoader workers reopen them)
        return {**self.__dict__, "_handles": {}}


def _open_h5(path: Path):
    h5py = require("h5py", "data")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise FoundryError(f"{path}: not a readable HDF5 file ({exc}); check or download it again") from None


@contextmanager
def _h5_errors(path: Path):
    """h5py's errors on a damaged file (a chunk that does not decode, a bad dataset header) as one line."""
    try:
        yield
    except (OSError, RuntimeError, ValueError, KeyError, IndexError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else "corrupt"
        raise FoundryError(f"{path}: HDF5 data could not be read ({type(exc).__name__}: {first}); "
                           "check or download the file again") from None


def modelnet40_h5(root: Path, split: str, num_points: Optional[int], seed: int = 0) -> H5Dataset:
    """PointNet's `ply_data_{train,test}*.h5` with `shape_names.txt` beside them."""
    files = sorted(root.glob(f"ply_data_{split}*.h5"), key=_natural_key)
    if not files:
        raise FoundryError(f"{root}: expected ModelNet40 files ply_data_{split}*.h5, found none; split is train or test")
    names = root / "shape_names.txt"
    classes = names.read_text().split() if names.is_file() else None
    return H5Dataset(files, classes, num_points, seed)


def scanobjectnn_h5(root: Path, split: str, num_points: Optional[int], seed: int = 0, variant: Optional[str] = None) -> H5Dataset:
    """`{training,test}_objectdataset{variant}.h5`; variant "" (OBJ_BG) or e.g. "_augmentedrot_scale75" (PB_T50_RS)."""
    prefix = {"train": "training", "training": "training", "test": "test"}.get(split)
    if prefix is None:
        raise FoundryError(f"ScanObjectNN splits are train and test, found {split!r}")
    folder = root / "main_split" if not list(root.glob("*_objectdataset*.h5")) else root
    found = {p.name[len(prefix) + len("_objectdataset"):-3]: p for p in folder.glob(f"{prefix}_objectdataset*.h5")}
    if variant is None and len(found) > 1:
        raise FoundryError(f"{folder}: several ScanObjectNN variants {sorted(found)}; pass variant= one of them "
                           "(\"\" is OBJ_BG, \"_augmentedrot_scale75\" is PB_T50_RS)")
    chosen = found.get(variant) if variant is not None else next(iter(found.values()), None)
    if chosen is None:
        raise FoundryError(f"{folder}: expected {prefix}_objectdataset{variant or ''}.h5, found {sorted(found) or 'none'}")
    return H5Dataset([chosen], SCANOBJECTNN_CLASSES, num_points, seed)


class FileListDataset(PointDataset):
    """One cloud file per sample with a label each; `fields=True` also reads per-point part labels."""

    def __init__(self, files: Sequence[Path], labels: Sequence[int], classes: Sequence[str], num_points: Optional[int],
                 seed: int = 0, parts: bool = False):
        super().__init__(num_points, seed)
        self.files, self.labels, self.classes, self._parts = list(files), list(labels), list(classes), parts

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, index):
        if not self._parts:
            return read_cloud(self.files[index], drop_invalid=self.drop_invalid), self.labels[index], None
        fields = read_cloud_with_fields(self.files[index], drop_invalid=self.drop_invalid)
        if "labels" not in fields:
            raise FoundryError(f"{self.files[index]}: expected per-point part labels (x y z nx ny nz part rows), "
                               f"found fields {sorted(fields)}")
        return fields["points"], self.labels[index], fields["labels"]


def _list_file(root: Path, split: str) -> Path:
    for path in (root / f"{split}.txt", root / "ShapeNet-55" / f"{split}.txt"):
        if path.is_file():
            return path
    raise FoundryError(f"{root}: expected ShapeNet55 split list {split}.txt (or ShapeNet-55/{split}.txt), found none")


def shapenet55(root: Path, split: str, num_points: Optional[int], seed: int = 0) -> FileListDataset:
    """Point-BERT's layout: `shapenet_pc/<synset>-<model>.npy` and `train.txt`/`test.txt`; classes are the
    sorted synset ids of both lists, so train and test share one label map."""
    names = _list_file(root, split).read_text().split()
    every = set(names)
    for other in ("train", "test"):
        if other != split:
            try:
                every |= set(_list_file(root, other).read_text().split())
            except FoundryError:
                pass
    synsets = sorted({n.split("-")[0] for n in every})
    index = {s: i for i, s in enumerate(synsets)}
    files = [root / "shapenet_pc" / n for n in names]
    return FileListDataset(files, [index[n.split("-")[0]] for n in names], synsets, num_points, seed)


def shapenet_part(root: Path, split: str, num_points: Optional[int], seed: int = 0) -> FileListDataset:
    """`<synset>/<id>.txt` rows x y z nx ny nz part, classes from `synsetoffset2category.txt`, lists from
    `train_test_split/shuffled_{split}_file_list.json`; split train, val, test or trainval."""
    categories = [line.split() for line in (root / "synsetoffset2category.txt").read_text().splitlines() if line.strip()]
    classes, synsets = [c[0] for c in categories], [c[1] for c in categories]
    entries = []
    for part in (["train", "val"] if split == "trainval" else [split]):
        listing = root / "train_test_split" / f"shuffled_{part}_file_list.json"
        if not listing.is_file():
            raise FoundryError(f"{root}: expected {listing.relative_to(root)} (split train, val, test or trainval), found none")
        try:
            entries += json.loads(listing.read_text())
        except ValueError as exc:
            raise FoundryError(f"{listing}: expected a JSON list of shape_data/<synset>/<id>, found bad JSON ({exc})") from None
    files, labels = [], []
    for entry in entries:
        synset, shape = entry.split("/")[-2:]
        if synset in synsets:
            files.append(root / synset / f"{shape}.txt")
            labels.append(synsets.index(synset))
    return FileListDataset(files, labels, classes, num_points, seed, parts=True)


def cloud_folder(root: Path, split: str, num_points: Optional[int], seed: int = 0) -> FileListDataset:
    """Every cloud file under `root` (or `root/<split>` if that exists); the first sub-folder names the
    class (sorted), files at the top level get class 0 of one class named after the folder."""
    base = root / split if (root / split).is_dir() else root
    files = sorted(p for p in base.rglob("*") if p.suffix.lower() in CLOUD_SUFFIXES and p.is_file())
    if not files:
        raise FoundryError(f"{base}: expected point-cloud files ({', '.join(CLOUD_SUFFIXES)}), found none")
    groups = [p.relative_to(base).parts[0] if len(p.relative_to(base).parts) > 1 else "" for p in files]
    classes = sorted(set(groups)) if any(groups) else [base.name]
    return FileListDataset(files, [classes.index(g) if any(groups) else 0 for g in groups], classes, num_points, seed)


class ArrayDataset(PointDataset):
    """Clouds already in memory: a list of (M, 3+) arrays and their labels (pickled Point-MAE data)."""

    def __init__(self, clouds: Sequence[np.ndarray], labels: Sequence[int], num_points: Optional[int], seed: int = 0,
                 source: str = "<arrays>"):
        super().__init__(num_points, seed)
        self.clouds, self.labels, self.source = list(clouds), [int(np.asarray(l).reshape(-1)[0]) for l in labels], source
        self.classes = [str(i) for i in range(max(self.labels, default=-1) + 1)]

    def __len__(self) -> int:
        return len(self.clouds)

    def _load(self, index):
        cloud = np.asarray(self.clouds[index])
        return validate_cloud(cloud[:, :3] if cloud.ndim == 2 else cloud, 1, f"{self.source}[{index}]",
                              drop_invalid=self.drop_invalid), self.labels[index], None


def _unpickle(path: Path, trust_pickle: bool):
    if not trust_pickle:
        raise FoundryError(f"{path}: this is a Python pickle, and unpickling can run code from the file; pass "
                           "trust_pickle=True (--trust-pickle) only for a file from a source you trust, or convert it to .npz")
    import pickle

    try:
        with open(path, "rb") as fh:
            return pickle.load(fh)
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError) as exc:
        raise FoundryError(f"{path}: not a readable pickle ({type(exc).__name__}: {exc}); check the file") from None


def pointmae_pickle(path: Path, split: str, num_points: Optional[int], seed: int = 0, trust_pickle: bool = False) -> ArrayDataset:
    """Point-MAE's `modelnet40_{split}_8192pts_fps.dat` ([clouds (8192, 6)], [labels]) or a few-shot
    `{way}way_{shot}shot/{fold}.pkl` ({"train"/"test": [(cloud, label, name), ...]})."""
    data = _unpickle(path, trust_pickle)
    if isinstance(data, dict):
        if split not in data:
            raise FoundryError(f"{path}: few-shot pickle has splits {sorted(data)}, asked for {split!r}")
        rows = data[split]
        return ArrayDataset([r[0] for r in rows], [r[1] for r in rows], num_points, seed, str(path))
    if isinstance(data, (list, tuple)) and len(data) == 2:
        return ArrayDataset(data[0], data[1], num_points, seed, str(path))
    raise FoundryError(f"{path}: expected Point-MAE's [clouds, labels] or a few-shot dict, found {type(data).__name__}")


def detect_layout(root: Path, split: str) -> Tuple[str, Callable]:
    """(name, builder) of the layout a folder holds, in order from the most specific."""
    if (root / "synsetoffset2category.txt").is_file():
        return "shapenetpart", shapenet_part
    if (root / "shapenet_pc").is_dir():
        return "shapenet55", shapenet55
    if list(root.glob("ply_data_*.h5")):
        return "modelnet40-h5", modelnet40_h5
    if list(root.glob("*_objectdataset*.h5")) or list(root.glob("main_split/*_objectdataset*.h5")):
        return "scanobjectnn-h5", scanobjectnn_h5
    if (root / f"modelnet40_{split}_8192pts_fps.dat").is_file():
        return "pointmae-dat", _pointmae_dat
    return "folder", cloud_folder


def _pointmae_dat(root: Path, split: str, num_points: Optional[int], seed: int = 0, trust_pickle: bool = False) -> ArrayDataset:
    return pointmae_pickle(root / f"modelnet40_{split}_8192pts_fps.dat", split, num_points, seed, trust_pickle)


def _check_options(layout: str, build: Callable, options: dict) -> None:
    """Refuse options the layout does not take, rather than drop them quietly."""
    import inspect

    known = set(inspect.signature(build).parameters) - {"root", "path", "files", "split", "num_points",
                                                         "num_samples", "seed", "trust_pickle"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise FoundryError(f"option(s) {unknown} do not apply to the {layout} layout (it takes {sorted(known) or 'none'})")


def open_dataset(spec, split: str = "train", num_points: Optional[int] = 1024, *, seed: int = 0, trust_pickle: bool = False,
                 drop_invalid: bool = False, **options) -> PointDataset:
    """A data set from "synthetic", "synthetic:N", a data-set folder, a .dat/.pkl pickle or one .h5 file.

    `options` go to the layout that takes them (ScanObjectNN `variant`, synthetic `classes`/`noise`, one
    .h5 file's `classes` names); others are refused.
    `num_points=None` keeps stored sizes (synthetic shapes then have 1024 points).
    `drop_invalid` drops NaN/Inf points of each sample (a DroppedPoints warning per sample) instead of refusing it.
    """
    dataset = _open(spec, split, num_points, seed, trust_pickle, options)
    if isinstance(dataset, PointDataset):  # synthetic shapes have no invalid points
        dataset.drop_invalid = drop_invalid
    return dataset


def _open(spec, split: str, num_points: Optional[int], seed: int, trust_pickle: bool, options: dict) -> PointDataset:
    text = str(spec)
    if text == "synthetic" or text.startswith("synthetic:"):
        count = text.partition(":")[2] or str(DEFAULT_SYNTHETIC_SAMPLES)
        if not count.isdigit():
            raise FoundryError(f"expected 'synthetic' or 'synthetic:N' with N a count, found {text!r}")
        _check_options("synthetic", SyntheticShapes, options)
        return SyntheticShapes(int(count), num_points or 1024, seed=seed, split=split, **options)
    root = Path(spec)
    if not root.exists():
        raise FoundryError(f"expected a data set folder or file, found nothing at {root}: check the path")
    if root.is_file():
        if root.suffix in (".dat", ".pkl", ".pickle"):
            _check_options("pointmae-pickle", pointmae_pickle, options)
            return pointmae_pickle(root, split, num_points, seed, trust_pickle)
        if root.suffix in (".h5", ".hdf5"):
            _check_options("hdf5 file", H5Dataset, options)
            return H5Dataset([root], options.get("classes"), num_points, seed)
        raise FoundryError(f"{root}: expected a data set folder, .dat/.pkl or .h5; use load_clouds for single clouds")
    name, build = detect_layout(root, split)
    _check_options(name, build, options)
    if name == "pointmae-dat":
        options["trust_pickle"] = trust_pickle
    dataset = build(root, split, num_points, seed, **options)
    if len(dataset) == 0:
        raise FoundryError(f"{root}: the {name} layout has no samples in split {split!r}: check the folder and split")
    return dataset
