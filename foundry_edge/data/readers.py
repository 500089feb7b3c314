"""Read point-cloud files into `(N, 3) float32` arrays, with one validation for every format.

Formats by suffix: .npy, .npz, .ply (ascii and binary), .pcd (ascii, binary, binary_compressed),
.xyz/.txt/.csv/.pts (text), .las/.laz (laspy, extra `data`). A file is first read into a table of
named columns (views, no copies), then the coordinates are taken from `x y z` (or the first three
columns) into one float32 array and validated by `validate_cloud`.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import numpy as np

from foundry_edge.errors import FoundryError, require

Columns = Optional[Sequence[Union[int, str]]]
_MMAP_BYTES = 64 << 20        # .npy files above this are memory-mapped, not read whole
_TEXT_SUFFIXES = (".xyz", ".txt", ".csv", ".pts")
# Named fields that read_cloud_with_fields gathers into one array each, first match wins.
_VECTOR_FIELDS = {"normals": (("nx", "ny", "nz"), ("normal_x", "normal_y", "normal_z")),
                  "colors": (("red", "green", "blue"), ("r", "g", "b"), ("diffuse_red", "diffuse_green", "diffuse_blue"))}
_LABEL_FIELDS = ("label", "labels", "class", "classification", "part", "part_label", "segment", "semantic")


def validate_cloud(points, min_points: int = 1, source: str = "<array>") -> np.ndarray:
    """Check one cloud and return it as a C-contiguous (N, 3) float32 array.

    Refuses (with the file named): not 2-D with 3 columns, no points, NaN or Inf (how many, first row),
    fewer than `min_points` points.
    """
    arr = np.asarray(points)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise FoundryError(f"{source}: expected points of shape (N, 3), found {arr.shape}; "
                           "pass x y z columns (e.g. columns=(0, 1, 2))")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise FoundryError(f"{source}: expected real numeric coordinates, found dtype {arr.dtype}")
    if arr.shape[0] == 0:
        raise FoundryError(f"{source}: expected at least {max(min_points, 1)} points, found an empty cloud")
    arr = np.require(arr, dtype=np.float32, requirements=["C", "W"])  # copies a read-only memory map
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise FoundryError(f"{source}: expected finite coordinates, found {int(bad.sum())} points with NaN/Inf "
                           f"(first at row {int(np.argmax(bad))}); drop or fix those points")
    if arr.shape[0] < min_points:
        raise FoundryError(f"{source}: expected at least {min_points} points, found {arr.shape[0]}; "
                           "use a denser cloud or fewer points per cloud")
    return arr


def read_cloud(path, *, columns: Columns = None, min_points: int = 1) -> np.ndarray:
    """One cloud file -> (N, 3) float32. `columns`: three names (ply/pcd/las properties) or positions."""
    source = Path(path)
    return validate_cloud(coordinates(read_table(source), columns, source), min_points, str(source))


def read_cloud_with_fields(path, *, columns: Columns = None, min_points: int = 1) -> Dict[str, np.ndarray]:
    """One cloud file -> {"points" (N, 3) f32, and where present "normals" (N, 3) f32, "colors" (N, 3),
    "labels" (N,) i64, plus every other per-point column under its own name}.

    Unnamed arrays (npy, text): columns 0-2 are points, 3-5 normals (6+ columns), column 6 labels
    when there are exactly 7 (ShapeNetPart rows), the rest is "extra" (N, C - used).
    """
    source = Path(path)
    table = read_table(source)
    points = validate_cloud(coordinates(table, columns, source), min_points, str(source))
    fields = _named_fields(table) if isinstance(table, dict) else _array_fields(table)
    return {"points": points, **fields}


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
    """(N, 3) coordinates from a table: named x y z by default, else the first three columns."""
    if isinstance(table, dict):
        names = list(table)
        wanted = list(columns) if columns is not None else (["x", "y", "z"] if {"x", "y", "z"} <= set(names)
                                                           else names[:3])
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


def _read_las(source: Path) -> Dict[str, np.ndarray]:
    """LAS/LAZ through laspy: scaled x y z in float64, then every point dimension by name."""
    laspy = require("laspy", "data")
    try:
        las = laspy.read(source)
    except laspy.errors.LaspyException as exc:
        hint = " (LAZ needs a backend: pip install lazrs)" if "backend" in str(exc).lower() else ""
        raise FoundryError(f"{source}: laspy could not read it: {exc}{hint}") from None
    table = {"x": np.asarray(las.x), "y": np.asarray(las.y), "z": np.asarray(las.z)}
    for name in las.point_format.dimension_names:
        if name not in ("X", "Y", "Z"):
            table[name] = np.asarray(las[name])
    return table


def _read_ply(source: Path) -> np.ndarray:
    from foundry_edge.data.ply_pcd import read_ply

    return read_ply(source)


def _read_pcd(source: Path) -> np.ndarray:
    from foundry_edge.data.ply_pcd import read_pcd

    return read_pcd(source)


_READERS = {".npy": _read_npy, ".npz": _read_npz, ".ply": _read_ply, ".pcd": _read_pcd,
            ".las": _read_las, ".laz": _read_las}
CLOUD_SUFFIXES = tuple(sorted(set(_READERS) | set(_TEXT_SUFFIXES)))
