"""LAS/LAZ through laspy, with the header checked against the file before laspy or lazrs allocate.

laspy trusts the header (it reads `number_of_vlrs` records without stopping at the end of the file and
sizes the point buffer from the point count), and lazrs sizes its buffers from the LASzip VLR and the
chunk table, aborting the process when such an allocation fails. So those counts are checked against
the file size here first (LAS 1.0-1.4 header, ASPRS LAS 1.4 R15; LASzip VLR and chunk table, laszip.org),
and what laspy or lazrs still raise, lazrs's Rust panics included, becomes one FoundryError line.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import BinaryIO, Dict

import numpy as np

from foundry_edge.errors import FoundryError, require

_HEADER_MIN = 227            # LAS 1.0-1.2 header bytes (1.3: 235, 1.4: 375)
_VLR_HEADER = 54
_LAZ_MAX_RATIO = 1000        # LASzip packs points 5-20x; a point count needing more than this is not in the file
_MAX_CHUNK_BYTES = 1 << 30   # lazrs allocates one chunk of points up front
_VARIABLE_CHUNKS = 0xFFFFFFFF


def read_las(source: Path) -> Dict[str, np.ndarray]:
    """LAS/LAZ -> x y z in float64 (scale and offset applied), then every point dimension by name."""
    laspy = require("laspy", "data")
    check_las_header(source)
    try:
        with laspy.open(source, read_evlrs=False) as reader:
            points = reader.read_points(-1)
    except BaseException as exc:
        if not _decoder_error(exc, laspy):
            raise
        hint = " (LAZ needs a backend: pip install lazrs)" if "backend" in str(exc).lower() else ""
        first = str(exc).splitlines()[0] if str(exc) else "corrupt"
        raise FoundryError(f"{source}: laspy/lazrs could not decode it ({type(exc).__name__}: {first}){hint}; "
                           "check or re-export the file") from None
    table = {"x": np.asarray(points.x), "y": np.asarray(points.y), "z": np.asarray(points.z)}
    for name in points.point_format.dimension_names:
        if name not in ("X", "Y", "Z"):
            table[name] = np.asarray(points[name])
    return table


def _decoder_error(exc: BaseException, laspy) -> bool:
    """laspy's and lazrs's errors, and lazrs's Rust panics: pyo3_runtime.PanicException derives from
    BaseException, so it is matched by module and name here rather than by a broad except."""
    kind = type(exc)
    return (isinstance(exc, (laspy.errors.LaspyException, ValueError, EOFError, OSError))
            or (kind.__module__, kind.__name__) in {("lazrs", "LazrsError"), ("pyo3_runtime", "PanicException")})


def check_las_header(source: Path) -> None:
    """Refuse a LAS/LAZ whose header counts (VLRs, points, LASzip chunks) do not fit the file's size."""
    size = os.path.getsize(source)
    with open(source, "rb") as fh:
        head = fh.read(375)
        if len(head) < _HEADER_MIN or head[:4] != b"LASF":
            raise FoundryError(f"{source}: expected a LAS file (starting with 'LASF', a header of at least "
                               f"{_HEADER_MIN} bytes), found {head[:4]!r} in {size} bytes: check the file")
        minor = head[25]
        header_size, offset, num_vlrs = struct.unpack_from("<HII", head, 94)
        format_id, record_length, count = struct.unpack_from("<BHI", head, 104)
        if minor >= 4:
            if len(head) < 255:
                raise FoundryError(f"{source}: LAS 1.{minor} header is cut at {len(head)} bytes: the file is truncated")
            count = struct.unpack_from("<Q", head, 247)[0]
        if not _HEADER_MIN <= header_size <= offset <= size or num_vlrs * _VLR_HEADER > offset - header_size:
            raise FoundryError(f"{source}: LAS header of {header_size} bytes with {num_vlrs} VLRs before points at "
                               f"byte {offset} does not fit a file of {size} bytes: the file is truncated or corrupt")
        scale_offset = struct.unpack_from("<6d", head, 131)
        if not np.isfinite(scale_offset).all() or 0 in scale_offset[:3]:
            raise FoundryError(f"{source}: LAS scales {scale_offset[:3]} and offsets {scale_offset[3:]} must be "
                               "finite, scales non-zero: the header is corrupt")
        data, need = size - offset, count * record_length
        compressed = bool(format_id & 0x80) and not format_id & 0x40
        if need > (_LAZ_MAX_RATIO if compressed else 1) * data:
            found = f"{data} bytes" + (f" (LAZ packs at most ~{_LAZ_MAX_RATIO}x)" if compressed else "")
            raise FoundryError(f"{source}: header says {count} points of {record_length} bytes ({need} bytes), "
                               f"found {found} of point data: the file is truncated or its header corrupt")
        if compressed:
            _check_laszip(fh, source, size, header_size, num_vlrs, offset, count, record_length)


def _check_laszip(fh: BinaryIO, source: Path, size: int, header_size: int, num_vlrs: int, offset: int, count: int,
                  record_length: int) -> None:
    """The LASzip VLR's items must add up to the point record; its chunk size and chunk table must fit."""
    vlr = _laszip_vlr(fh, source, header_size, num_vlrs, offset)
    compressor, chunk_size, num_items = (struct.unpack_from(f, vlr, at)[0] for f, at in (("<H", 0), ("<I", 12),
                                                                                          ("<H", 32)))
    items = [struct.unpack_from("<HHH", vlr, 34 + 6 * i) for i in range(min(num_items, (len(vlr) - 34) // 6))]
    if len(vlr) != 34 + 6 * num_items or not items or sum(size for _, size, _ in items) != record_length:
        raise FoundryError(f"{source}: LASzip VLR lists {num_items} items in {len(vlr)} bytes for points of "
                           f"{record_length} bytes: the LAZ header is corrupt")
    if compressor not in (2, 3):
        return  # pointwise (LASzip 1.x): no chunk table
    if chunk_size != _VARIABLE_CHUNKS and not 0 < chunk_size * record_length <= _MAX_CHUNK_BYTES:
        raise FoundryError(f"{source}: LASzip chunk size {chunk_size} points of {record_length} bytes is outside "
                           f"1..{_MAX_CHUNK_BYTES} bytes: the LAZ header is corrupt")
    fh.seek(offset)
    table_at = _read_int(fh, "<q", source)
    if table_at == -1:  # a writer that could not seek back stores the chunk table's offset at the end
        fh.seek(size - 8)
        table_at = _read_int(fh, "<q", source)
    if not offset + 8 <= table_at <= size - 8:
        raise FoundryError(f"{source}: LAZ chunk table at byte {table_at} lies outside the {size}-byte file: "
                           "the file is truncated or corrupt")
    fh.seek(table_at + 4)
    chunks = _read_int(fh, "<I", source)
    most = count if chunk_size == _VARIABLE_CHUNKS else -(-count // chunk_size)
    if chunks > most:
        raise FoundryError(f"{source}: LAZ chunk table lists {chunks} chunks for {count} points (at most {most}): "
                           "the file is corrupt")


def _laszip_vlr(fh: BinaryIO, source: Path, header_size: int, num_vlrs: int, offset: int) -> bytes:
    pos, found = header_size, None
    for _ in range(num_vlrs):
        fh.seek(pos)
        head = fh.read(_VLR_HEADER)
        length = struct.unpack_from("<H", head, 20)[0] if len(head) == _VLR_HEADER else None
        if length is None or pos + _VLR_HEADER + length > offset:
            raise FoundryError(f"{source}: LAS VLR at byte {pos} runs past the point data at byte {offset}: "
                               "the header is corrupt")
        if head[2:18].rstrip(b"\0") == b"laszip encoded" and struct.unpack_from("<H", head, 18)[0] == 22204:
            found = fh.read(length)
        pos += _VLR_HEADER + length
    if found is None:
        raise FoundryError(f"{source}: expected a LASzip VLR ('laszip encoded', record 22204) in a compressed LAS, "
                           "found none: the LAZ header is corrupt")
    return found


def _read_int(fh: BinaryIO, fmt: str, source: Path) -> int:
    raw = fh.read(struct.calcsize(fmt))
    if len(raw) != struct.calcsize(fmt):
        raise FoundryError(f"{source}: LAZ point data ends before its chunk table: the file is truncated")
    return struct.unpack(fmt, raw)[0]
