"""Read point-cloud files into `(N, 3) float32` arrays, with one validation for every format.

Formats by suffix: .npy, .npz, .ply (ascii and binary), .pcd (ascii, binary, binary_compressed),
.xyz/.txt/.csv/.pts (text), .las/.laz (laspy, extra `data`). A file is first read into a table of
named columns in the file's own precision (views, no copies); header counts are checked against the
file size before anything is allocated (ply_pcd.py, las.py). The coordinates are then taken from
`x y z`, checked, moved to a float64 origin when float32 would round the shape (see `read_cloud`),
and only then cast to float32.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np

from foundry_edge.data.las import read_las
from foundry_edge.data.ply_pcd import read_pcd, read_ply
from foundry_edge.errors import FoundryError

Columns = Optional[Sequence[Union[int, str]]]
_MMAP_BYTES = 64 << 20        # .npy files above this are memory-mapped, not read whole
_TEXT_SUFFIXES = (".xyz", ".txt", ".csv", ".pts")
# float32 rounding at the largest coordinate, as a fraction of the cloud's extent: above the first a file's
# cloud is recentred before the cast (see read_cloud), above the second an array is refused (validate_cloud).
_RECENTRE_STEP, _REFUSE_STEP = 2.0 ** -16, 2.0 ** -10
# Extents a float32 model can normalise: its radius stays above the graph's 1e-12 clamp and its squares finite.
_EXTENT_RANGE = (1e-10, 1e15)
# Named fields that read_cloud_with_fields gathers into one array each, first match wins.
_VECTOR_FIELDS = {"normals": (("nx", "ny", "nz"), ("normal_x", "normal_y", "normal_z")),
                  "colors": (("red", "green", "blue"), ("r", "g", "b"), ("diffuse_red", "diffuse_green", "diffuse_blue"))}
_LABEL_FIELDS = ("label", "labels", "class", "classification", "part", "part_label", "segment", "semantic")


class DroppedPoints(UserWarning):
    """Rows with NaN/Inf dropped under `drop_invalid=True`; the message names the cloud and how many."""


def validate_cloud(points, min_points: int = 1, source: str = "<array>", *, drop_invalid: bool = False) -> np.ndarray:
    """Check one cloud and return it as a C-contiguous (N, 3) float32 array, coordinates as given.

    Refuses (with the file named): not 2-D with 3 columns, no points, NaN or Inf (how many, first row)
    unless `drop_invalid` drops those rows (a `DroppedPoints` warning says how many, as does
    len(points) - len(result)), fewer than `min_points` points, a degenerate cloud (all points identical, or
    an extent below 1e-10) or an extent above 1e15, and
    coordinates so far from the origin that float32 would round them by more than 1/1024 of the extent:
    centre those in float64 first (`centre_cloud`; `read_cloud` does it for files).
    """
    arr, _ = _finite_rows(points, min_points, source, drop_invalid)
    lo, hi = _bounds(arr)
    return _to_float32(arr, lo, hi, np.zeros(3), source)


def centre_cloud(points, source: str = "<array>") -> Tuple[np.ndarray, np.ndarray]:
    """(N, 3) finite points in any precision -> (N, 3) float32 around the origin, origin (3,) float64.

    The origin is the bounding-box centre, subtracted in float64 before the cast, so a cloud at map
    coordinates keeps its shape; `points + origin` is the input in its own frame again.
    """
    arr, _ = _finite_rows(points, 1, source, False)
    lo, hi = _bounds(arr)
    origin = (lo + hi) / 2
    return _to_float32(arr, lo, hi, origin, source), origin


def read_cloud(path, *, columns: Columns = None, min_points: int = 1, drop_invalid: bool = False) -> np.ndarray:
    """One cloud file -> (N, 3) float32. `columns`: three names (ply/pcd/las properties) or positions.

    Coordinates are read in the file's precision and returned as stored, unless float32 would round them
    by more than 1/65536 of the cloud's extent (a cloud more than ~100 extents from the origin, as at map
    coordinates): then they come back around their bounding-box centre, subtracted in float64, and
    `read_cloud_with_fields` gives that origin. A model that normalises its input (the default) sees the
    same cloud either way; positions it returns are then relative to the origin. `drop_invalid` drops rows
    with NaN/Inf (organised PCDs hold them by design; PCL's removeNaNFromPointCloud) instead of refusing.
    """
    source = Path(path)
    return cloud_from_table(read_table(source), source, columns=columns, min_points=min_points,
                            drop_invalid=drop_invalid)[0]


def read_cloud_with_fields(path, *, columns: Columns = None, min_points: int = 1,
                           drop_invalid: bool = False) -> Dict[str, np.ndarray]:
    """One cloud file -> {"points" (N, 3) f32 as `read_cloud` gives them, "origin" (3,) f64 (file coordinates
    are points + origin; zeros unless recentred), "dropped" (rows with NaN/Inf dropped by `drop_invalid`),
    and where present "normals" (N, 3) f32, "colors" (N, 3), "labels" (N,) i64, plus every other
    per-point column under its own name}.

    Unnamed arrays (npy, text): columns 0-2 are points, 3-5 normals (6+ columns), column 6 labels
    when there are exactly 7 (ShapeNetPart rows), the rest is "extra" (N, C - used).
    """
    source = Path(path)
    table = read_table(source)
    points, origin, keep = cloud_from_table(table, source, columns=columns, min_points=min_points,
                                            drop_invalid=drop_invalid)
    fields = _named_fields(table) if isinstance(table, dict) else _array_fields(table)
    if keep is not None:
        fields = {name: value[keep] for name, value in fields.items()}
    return {"points": points, **fields, "origin": origin, "dropped": 0 if keep is None else int((~keep).sum())}


def cloud_from_table(table, source: Path, *, columns: Columns = None, min_points: int = 1,
                     drop_invalid: bool = False) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """A file's table -> points (N, 3) f32, origin (3,) f64, and the rows kept (None when all are); see `read_cloud`."""
    arr, keep = _finite_rows(coordinates(table, columns, source), min_points, str(source), drop_invalid)
    lo, hi = _bounds(arr)
    step, extent, _ = _float32_step(lo, hi)
    origin = (lo + hi) / 2 if step > _RECENTRE_STEP * extent else np.zeros(3)
    return _to_float32(arr, lo, hi, origin, str(source)), origin, keep


def _finite_rows(points, min_points: int, source: str, drop_invalid: bool) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """(N, 3) real points in their own dtype, and the rows kept when `drop_invalid` dropped some."""
    arr = np.asarray(points)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise FoundryError(f"{source}: expected points of shape (N, 3), found {arr.shape}; "
                           "pass x y z columns (e.g. columns=(0, 1, 2))")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise FoundryError(f"{source}: expected real numeric coordinates, found dtype {arr.dtype}")
    if arr.shape[0] == 0:
        raise FoundryError(f"{source}: expected at least {max(min_points, 1)} points, found an empty cloud")
    bad, keep = ~np.isfinite(arr).all(axis=1), None
    if bad.any():
        found = f"{int(bad.sum())} points with NaN/Inf (first at row {int(np.argmax(bad))})"
        if not drop_invalid:
            raise FoundryError(f"{source}: expected finite coordinates, found {found}; drop or fix those points "
                               "(--drop-invalid on the command line, drop_invalid=True in Python, drops them)")
        if bad.all():
            raise FoundryError(f"{source}: expected finite coordinates, found NaN/Inf in all {len(arr)} points")
        warnings.warn(f"{source}: dropped {found} of {len(arr)}", DroppedPoints, stacklevel=3)
        keep = ~bad
        arr = arr[keep]
    if arr.shape[0] < min_points:
        raise FoundryError(f"{source}: expected at least {min_points} points, found {arr.shape[0]}; "
                           "use a denser cloud or fewer points per cloud")
    return arr, keep


def _bounds(arr: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    return arr.min(axis=0).astype(np.float64), arr.max(axis=0).astype(np.float64)


def _float32_step(lo: np.ndarray, hi: np.ndarray) -> Tuple[float, float, float]:
    """(float32 spacing at the largest coordinate, extent = largest bounding-box side, that coordinate)."""
    reach = min(float(np.abs(np.concatenate([lo, hi])).max()), float(np.finfo(np.float32).max))
    return float(np.spacing(np.float32(reach))), float((hi - lo).max()), reach


def _to_float32(arr: np.ndarray, lo: np.ndarray, hi: np.ndarray, origin: np.ndarray, source: str) -> np.ndarray:
    """arr - origin (in float64) as float32, refused where float32 would lose the shape (see validate_cloud)."""
    step, extent, reach = _float32_step(lo - origin, hi - origin)
    if len(arr) > 1 and not extent:
        raise FoundryError(f"{source}: expected a cloud with a shape, found all {len(arr)} points identical: a model "
                           "would give it a confident answer about nothing; check the file or drop the cloud")
    if extent and not _EXTENT_RANGE[0] <= extent <= _EXTENT_RANGE[1]:
        raise FoundryError(f"{source}: expected a cloud extent between {_EXTENT_RANGE[0]:g} and {_EXTENT_RANGE[1]:g} "
                           f"(float32 models square coordinates to normalise them), found {extent:.3g}: "
                           "rescale the coordinates (e.g. to metres)")
    if extent and step > _REFUSE_STEP * extent:
        raise FoundryError(f"{source}: coordinates reach {reach:.9g} for an extent of {extent:.3g}, where float32 "
                           f"steps are {step:.3g} ({step / extent:.1%} of the extent) and the shape is lost; subtract "
                           "a float64 origin first (foundry_edge.data.centre_cloud), as read_cloud does for files")
    if not origin.any():
        return np.require(arr, dtype=np.float32, requirements=["C", "W"])  # copies a read-only memory map
    return np.subtract(arr, origin, dtype=np.float64).astype(np.float32)


def read_table(source: Path):
    """The raw per-point columns: a dict name -> (N,) or (N, k) array, or a 2-D array for unnamed data."""
    if not source.is_file():
        raise FoundryError(f"expected a point-cloud file, found nothing at {source}: check the path")
    suffix = source.suffix.lower()
    reader = _READERS.get(suffix) or (_read_text if suffix in _TEXT_SUFFIXES else None)
    if reader is None:
        raise FoundryError(f"{source}: unknown point-cloud suffix '{suffix}'; expected one of {list(CLOUD_SUFFIXES)}")
    try:
        table = reader(source)
    except (ValueError, EOFError, OSError, UnicodeDecodeError, zipfile.BadZipFile) as exc:
        raise FoundryError(f"{source}: not a readable {suffix[1:]} point cloud ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else 'corrupt'}); check or re-export the file") from None
    if isinstance(table, np.ndarray) and table.dtype.names:
        table = {name: table[name] for name in table.dtype.names}
    return table


def coordinates(table, columns: Columns, source: Path) -> np.ndarray:
    """(N, 3) coordinates from a table in its own precision: named x y z by default (a table without them is
    refused rather than read from other columns), else three `columns` by name or position."""
    if isinstance(table, dict):
        names = list(table)
        if columns is None and not {"x", "y", "z"} <= set(names):
            raise FoundryError(f"{source}: expected properties x, y and z, found {names}; pass the three coordinate "
                               "properties as columns=(...)")
        wanted = list(columns) if columns is not None else ["x", "y", "z"]
        picked = [names[c] if isinstance(c, int) and -len(names) <= c < len(names) else c for c in wanted]
        unknown = [c for c in picked if c not in table]
        if unknown or len(picked) != 3:
            raise FoundryError(f"{source}: expected three coordinate columns, asked for {wanted}; "
                               f"the file has {names}: pass three of those as columns")
        if any(table[c].ndim != 1 for c in picked):
            raise FoundryError(f"{source}: coordinate columns {picked} must be scalar per point")
        return np.stack([table[c] for c in picked], axis=1) if table[picked[0]].size else np.empty((0, 3))
    if table.ndim != 2:
        return table  # validate_cloud names the shape
    wanted = list(columns) if columns is not None else [0, 1, 2]
    if len(wanted) != 3 or not all(isinstance(c, int) and -table.shape[1] <= c < table.shape[1] for c in wanted):
        raise FoundryError(f"{source}: expected three column positions below {table.shape[1]}, found {wanted}")
    return table[:, wanted] if table.shape[1] != 3 or wanted != [0, 1, 2] else table


def _named_fields(table: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    out, used = {}, {"x", "y", "z"}
    for key, candidates in _VECTOR_FIELDS.items():
        names = next((c for c in candidates if set(c) <= set(table)), None)
        if names:
            out[key] = np.stack([table[n] for n in names], axis=1)
            used |= set(names)
    if "colors" not in out and ("rgb" in table or "rgba" in table):
        name = "rgb" if "rgb" in table else "rgba"                  # PCL packs 0x00RRGGBB into 4 bytes
        packed = np.ascontiguousarray(table[name]).view(np.uint32)
        out["colors"] = np.stack([(packed >> s) & 0xFF for s in (16, 8, 0)], axis=1).astype(np.uint8)
        used.add(name)
    label = next((n for n in _LABEL_FIELDS if n in table), None)
    if label:
        out["labels"] = table[label].astype(np.int64)
        used.add(label)
    out.update({k: v for k, v in table.items() if k not in used and not k.startswith("_")})
    if "normals" in out:
        out["normals"] = out["normals"].astype(np.float32)
    return out


def _array_fields(table: np.ndarray) -> Dict[str, np.ndarray]:
    cols, out, used = table.shape[1], {}, 3
    if cols >= 6:
        out["normals"], used = table[:, 3:6].astype(np.float32), 6
    if cols == 7:
        out["labels"], used = table[:, 6].astype(np.int64), 7
    if cols > used:
        out["extra"] = table[:, used:]
    return out


# ---- one reader per format: path -> table ----

def _read_npy(source: Path) -> np.ndarray:
    mmap = "r" if os.path.getsize(source) > _MMAP_BYTES else None
    return np.load(source, allow_pickle=False, mmap_mode=mmap)


def _read_npz(source: Path) -> Dict[str, np.ndarray]:
    """The `points`, `xyz` or `data` array (or the only one); other arrays of the same length as fields."""
    with np.load(source, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    key = next((k for k in ("points", "xyz", "data") if k in arrays), None)
    if key is None and len(arrays) != 1:
        raise FoundryError(f"{source}: expected an array named points, xyz or data (or a single array), "
                           f"found {sorted(arrays)}: rename the points array")
    main = arrays.pop(key or next(iter(arrays)))
    side = {k: v for k, v in arrays.items() if v.ndim >= 1 and len(v) == len(main)}
    if not side or main.ndim != 2 or main.shape[1] < 3:
        return main  # read like a .npy; validate_cloud names a wrong shape
    table = {"x": main[:, 0], "y": main[:, 1], "z": main[:, 2]}
    if main.shape[1] > 3:
        table["extra"] = main[:, 3:]
    table.update(side)
    return table


def _read_text(source: Path) -> np.ndarray:
    """Whitespace- or comma-separated rows; leading lines without 3 numbers (headers, a count) are skipped."""
    skip, delimiter = 0, None
    with open(source, "r", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            text = line.strip()
            if text and not text.startswith("#") and _count_numbers(text) >= 3:
                delimiter = "," if "," in text else None
                break
            skip += 1
        else:
            raise FoundryError(f"{source}: expected rows of at least 3 numbers (x y z), found none")
    return np.loadtxt(source, dtype=np.float64, delimiter=delimiter, skiprows=skip, ndmin=2, comments="#")


def _count_numbers(text: str) -> int:
    try:
        return len([float(v) for v in text.replace(",", " ").split()])
    except ValueError:
        return 0


_READERS = {".npy": _read_npy, ".npz": _read_npz, ".ply": read_ply, ".pcd": read_pcd, ".las": read_las,
            ".laz": read_las}
CLOUD_SUFFIXES = tuple(sorted(set(_READERS) | set(_TEXT_SUFFIXES)))
