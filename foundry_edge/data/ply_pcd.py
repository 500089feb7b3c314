"""PLY and PCD parsing with numpy structured dtypes: the header is parsed here, the body read in one go.

Both return a numpy structured array with one named field per property, read straight from the file
(binary: one `np.fromfile`; ascii: one `np.loadtxt` over the lines present), so there is no copy beyond
the read itself. Header counts are never trusted: binary data must fit the bytes that follow the header,
ascii data must have exactly the lines claimed, and nothing is allocated for a count before that holds.
Formats: PLY 1.0 (paulbourke.net/dataformats/ply), PCD v0.7 (pointclouds.org/documentation/tutorials/
pcd_file_format.html).
"""

from __future__ import annotations

import itertools
import os
import warnings
from pathlib import Path
from typing import List, Tuple

import numpy as np

from foundry_edge.errors import FoundryError, require

_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
              "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
              "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}
_PLY_FORMATS = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}
_LZF_MAX_RATIO = 88  # an LZF back-reference expands 3 bytes into at most 264


def _read_header(fh, first: bytes, last: bytes, source: Path, limit: int = 1 << 16) -> List[str]:
    """Header lines up to and including the line starting with `last`; the file position ends after it."""
    lines = []
    while True:
        raw = fh.readline(limit)
        if not raw or sum(len(x) for x in lines) > limit:
            raise FoundryError(f"{source}: expected a header ending with '{last.decode()}', found none; "
                               "the file is truncated or not in this format")
        line = raw.decode("ascii", errors="replace").strip()
        if not lines and not raw.startswith(first):
            raise FoundryError(f"{source}: expected a file starting with '{first.decode()}', found {raw[:16]!r}; "
                               "check the file's format and suffix")
        lines.append(line)
        if raw.startswith(last):
            return lines


def _check_size(source: Path, offset: int, count: int, itemsize: int, what: str) -> None:
    size = os.path.getsize(source)
    if size < offset + count * itemsize:
        raise FoundryError(f"{source}: header says {count} {what} ({count * itemsize} bytes of data), found "
                           f"{max(size - offset, 0)} bytes; the file is truncated: export it again")


# ---- PLY ----

def _ply_elements(lines: List[str], source: Path) -> Tuple[str, list]:
    """(format, [(element name, count, [(property, dtype) or (property, None) for lists])])."""
    fmt, elements = None, []
    for line in lines[1:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info", "end_header"):
            continue
        if words[0] == "format" and len(words) >= 2 and words[1] in _PLY_FORMATS:
            fmt = words[1]
        elif words[0] == "element" and len(words) == 3 and words[2].isdigit():
            elements.append((words[1], int(words[2]), []))
        elif words[0] == "property" and elements and len(words) == 3 and words[1] in _PLY_TYPES:
            elements[-1][2].append((words[2], _PLY_TYPES[words[1]]))
        elif words[0] == "property" and elements and len(words) == 5 and words[1] == "list":
            elements[-1][2].append((words[4], None))
        else:
            raise FoundryError(f"{source}: unexpected PLY header line {line!r}; expected format/element/property "
                               "lines as in PLY 1.0: the file is corrupt or not PLY")
    if fmt is None:
        raise FoundryError(f"{source}: expected a PLY 'format ascii|binary_little_endian|binary_big_endian 1.0' "
                           "line, found none: the file is corrupt")
    return fmt, elements


def read_ply(source: Path) -> np.ndarray:
    """The `vertex` element of a PLY file as a structured array (one field per scalar property)."""
    with open(source, "rb") as fh:
        lines = _read_header(fh, b"ply", b"end_header", source)
        offset = fh.tell()
        fmt, elements = _ply_elements(lines, source)
        names = [e[0] for e in elements]
        if "vertex" not in names:
            raise FoundryError(f"{source}: expected a PLY 'vertex' element, found {names or 'none'}")
        skip_rows, skip_bytes = 0, 0
        for name, count, props in elements:
            vertex = name == "vertex"
            if any(dtype is None for _, dtype in props) and (vertex or fmt != "ascii"):
                raise FoundryError(f"{source}: PLY element '{name}' with list properties "
                                   f"{'is the vertex element' if vertex else 'comes before the vertices'}; "
                                   "expected scalar vertex properties first: re-export with vertices first")
            if vertex:
                break
            skip_rows += count
            skip_bytes += count * np.dtype([(p, t) for p, t in props]).itemsize if fmt != "ascii" else 0
        order = _PLY_FORMATS[fmt] or "<"
        dtype = np.dtype([(p, order + t) for p, t in props])
        if fmt == "ascii":
            after = sum(e[1] for e in elements[names.index("vertex") + 1:])
            if sum(1 for _ in itertools.islice(fh, skip_rows)) < skip_rows:
                raise FoundryError(f"{source}: header says {skip_rows} PLY rows before the vertices, found fewer: "
                                   "the file is truncated")
            return _ascii_rows(fh, dtype, count, source, "PLY vertices", after)
        _check_size(source, offset + skip_bytes, count, dtype.itemsize, "PLY vertices")
        fh.seek(offset + skip_bytes)
        return np.fromfile(fh, dtype=dtype, count=count)


def _ascii_rows(fh, dtype: np.dtype, count: int, source: Path, what: str, after: int = 0) -> np.ndarray:
    """`count` text rows, one value per (flattened) field of `dtype`, then `after` more non-blank lines (later
    elements). Only the lines present are parsed, so a claimed count allocates nothing it does not find."""
    from numpy.lib import recfunctions

    width = sum(int(np.prod(dtype[n].shape)) for n in dtype.names)
    with warnings.catch_warnings():  # an empty body is named below, not warned about
        warnings.simplefilter("ignore", UserWarning)
        rows = np.loadtxt(itertools.islice(fh, count), dtype=np.float64, ndmin=2, comments=None)
    if rows.shape != (count, width) and not (count == 0 and rows.size == 0):
        raise FoundryError(f"{source}: header says {count} {what} of {width} values, found {rows.shape[0]} rows of "
                           f"{rows.shape[1] if rows.size else 0}: the file is truncated or corrupt")
    more = sum(1 for line in fh if line.strip())
    if more != after:
        raise FoundryError(f"{source}: header says {count} {what}" + (f" and {after} more rows" if after else "")
                           + f", found {more} lines after the {what}: the header's counts are wrong")
    return recfunctions.unstructured_to_structured(rows.reshape(count, width), dtype=dtype)


# ---- PCD ----

def _pcd_header(lines: List[str], source: Path) -> dict:
    head = {}
    for line in lines:
        words = line.split()
        if words and not words[0].startswith("#"):
            head[words[0].upper()] = words[1:]
    missing = [k for k in ("FIELDS", "SIZE", "TYPE", "DATA") if k not in head]
    if missing:
        raise FoundryError(f"{source}: expected PCD header entries FIELDS, SIZE, TYPE and DATA, missing {missing}: "
                           "the file is corrupt or not PCD")
    return head


def _pcd_dtype(head: dict, source: Path) -> np.dtype:
    """One field per PCD FIELD: TYPE F/I/U with SIZE bytes, COUNT > 1 as a sub-array; '_' is padding."""
    fields, sizes, types = head["FIELDS"], head["SIZE"], head["TYPE"]
    counts = head.get("COUNT", ["1"] * len(fields))
    if not len(fields) == len(sizes) == len(types) == len(counts):
        raise FoundryError(f"{source}: PCD FIELDS/SIZE/TYPE/COUNT have different lengths "
                           f"({len(fields)}/{len(sizes)}/{len(types)}/{len(counts)}): the header is corrupt")
    spec = []
    for i, (name, size, kind, count) in enumerate(zip(fields, sizes, types, counts)):
        if kind not in ("F", "I", "U") or size not in ("1", "2", "4", "8") or not count.isdigit():
            raise FoundryError(f"{source}: PCD field '{name}' has TYPE {kind} SIZE {size} COUNT {count}; expected "
                               "TYPE F/I/U, SIZE 1/2/4/8: the header is corrupt")
        base = "<" + {"F": "f", "I": "i", "U": "u"}[kind] + size
        spec.append((f"_{i}" if name == "_" else name, base, (int(count),)) if int(count) > 1
                    else (f"_{i}" if name == "_" else name, base))
    return np.dtype(spec)


def read_pcd(source: Path) -> np.ndarray:
    """A PCD file (DATA ascii, binary or binary_compressed) as a structured array."""
    with open(source, "rb") as fh:
        lines = _read_header(fh, b"", b"DATA", source)
        offset = fh.tell()
        head = _pcd_header(lines, source)
        dtype = _pcd_dtype(head, source)
        count = _pcd_count(head, source)
        kind = head["DATA"][0].lower() if head["DATA"] else ""
        if kind == "ascii":
            return _ascii_rows(fh, dtype, count, source, "PCD points")
        if kind == "binary":
            _check_size(source, offset, count, dtype.itemsize, "PCD points")
            return np.fromfile(fh, dtype=dtype, count=count)
        if kind == "binary_compressed":
            return _pcd_compressed(fh.read(), dtype, count, source)
    raise FoundryError(f"{source}: PCD DATA is '{kind}', expected ascii, binary or binary_compressed")


def _pcd_count(head: dict, source: Path) -> int:
    """POINTS, or WIDTH x HEIGHT (an organised cloud's grid); each a non-negative integer, and POINTS equal to
    WIDTH x HEIGHT when all three are given, as PCL's reader requires."""
    found = {}
    for key in ("WIDTH", "HEIGHT", "POINTS"):
        if key in head:
            if len(head[key]) != 1 or not head[key][0].isdigit():
                raise FoundryError(f"{source}: expected PCD {key} to be one non-negative integer, found "
                                   f"{' '.join(head[key]) or 'nothing'}: the header is corrupt")
            found[key] = int(head[key][0])
    if "WIDTH" in found and "HEIGHT" in found:
        grid = found["WIDTH"] * found["HEIGHT"]
        if found.get("POINTS", grid) != grid:
            raise FoundryError(f"{source}: PCD WIDTH {found['WIDTH']} x HEIGHT {found['HEIGHT']} is {grid} points, "
                               f"but POINTS says {found['POINTS']}: the header is corrupt")
        return grid
    if "POINTS" in found:
        return found["POINTS"]
    raise FoundryError(f"{source}: expected PCD POINTS or WIDTH and HEIGHT in the header, found neither")


def _pcd_compressed(body: bytes, dtype: np.dtype, count: int, source: Path) -> np.ndarray:
    """binary_compressed: uint32 sizes, then LZF of the fields stored one after another (column-major)."""
    lzf = require("lzf", "data")
    if len(body) < 8:
        raise FoundryError(f"{source}: PCD binary_compressed data is {len(body)} bytes, expected at least 8: truncated")
    packed, unpacked = np.frombuffer(body[:8], dtype="<u4")
    if unpacked != count * dtype.itemsize or len(body) < 8 + packed or unpacked > _LZF_MAX_RATIO * packed:
        raise FoundryError(f"{source}: PCD binary_compressed sizes ({packed} packed, {unpacked} unpacked) do not match "
                           f"{count} points of {dtype.itemsize} bytes and {len(body) - 8} bytes present: truncated")
    raw = lzf.decompress(body[8:8 + packed], int(unpacked)) if unpacked else b""
    if raw is None or len(raw) != unpacked:
        raise FoundryError(f"{source}: PCD binary_compressed data does not decompress to {unpacked} bytes: corrupt")
    out, start = np.empty(count, dtype=dtype), 0
    for name in dtype.names:
        field = dtype[name]
        out[name] = np.frombuffer(raw, dtype=field.base, count=count * int(np.prod(field.shape)),
                                  offset=start).reshape((count,) + field.shape)
        start += count * field.itemsize
    return out
