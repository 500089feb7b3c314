"""Readers on files the way they come from outside: map coordinates, lying headers, broken LAZ, organised PCDs.

Every file is written here, in its format's real layout, from a small deterministic object.
"""

from __future__ import annotations

import resource
import struct
import tracemalloc

import numpy as np
import pytest

from foundry_edge.data import DroppedPoints, centre_cloud, load_clouds, open_dataset, read_cloud, validate_cloud
from foundry_edge.data.readers import read_cloud_with_fields
from foundry_edge.errors import FoundryError

MAP_ORIGIN = np.array([5e5, 5e6, 100.0])  # a UTM easting/northing in metres


@pytest.fixture
def box(rng):
    """(2000, 3) float64 points on the surface of a 1 m box, on a 1 mm grid (so LAS at scale 0.001 is exact)."""
    pts = rng.uniform(-0.5, 0.5, size=(2000, 3))
    face = rng.integers(0, 3, size=2000)
    pts[np.arange(2000), face] = np.where(rng.random(2000) < 0.5, -0.5, 0.5)
    pts = np.round(pts * 1000) / 1000
    return pts - (pts.min(0) + pts.max(0)) / 2  # its own bounding-box centre at the origin


def write_ply_double(path, pts):
    head = (f"ply\nformat binary_little_endian 1.0\nelement vertex {len(pts)}\nproperty double x\n"
            "property double y\nproperty double z\nend_header\n")
    path.write_bytes(head.encode() + pts.astype("<f8").tobytes())


def write_pcd(path, fields, rows, data="binary", width=None, height=1, points=None):
    """`fields` [(name, TYPE, SIZE)], `rows` a structured array; WIDTH/HEIGHT/POINTS as given (defaults: unorganised)."""
    width = len(rows) if width is None else width
    head = (f"# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\nFIELDS {' '.join(f[0] for f in fields)}\n"
            f"SIZE {' '.join(str(f[2]) for f in fields)}\nTYPE {' '.join(f[1] for f in fields)}\n"
            f"COUNT {' '.join('1' for _ in fields)}\nWIDTH {width}\nHEIGHT {height}\nVIEWPOINT 0 0 0 1 0 0 0\n"
            f"POINTS {len(rows) if points is None else points}\nDATA {data}\n")
    body = rows.tobytes() if data == "binary" else "".join(" ".join(map(str, r)) + "\n" for r in rows.tolist()).encode()
    path.write_bytes(head.encode() + body)


def xyz_rows(pts, dtype="<f8"):
    rows = np.empty(len(pts), dtype=[("x", dtype), ("y", dtype), ("z", dtype)])
    rows["x"], rows["y"], rows["z"] = pts.T
    return rows


def write_las(path, pts, scale=1e-3, offset=None, laz=False):
    laspy = pytest.importorskip("laspy", reason="laspy (extra 'data') reads LAS")
    header = laspy.LasHeader(point_format=3, version="1.2")
    header.scales = np.full(3, scale)
    header.offsets = np.floor(pts.min(0)) if offset is None else offset
    las = laspy.LasData(header)
    las.x, las.y, las.z = pts.T
    las.write(path)
    return path


def write_map_cloud(tmp_path, suffix, pts):
    path = tmp_path / f"box{suffix}"
    if suffix == ".ply":
        write_ply_double(path, pts)
    elif suffix == ".pcd":
        write_pcd(path, [("x", "F", 8), ("y", "F", 8), ("z", "F", 8)], xyz_rows(pts))
    elif suffix == ".las":
        write_las(path, pts, offset=MAP_ORIGIN)
    else:
        np.savetxt(path, pts, fmt="%.6f")
    return path


@pytest.mark.parametrize("suffix", [".ply", ".pcd", ".las", ".xyz"])
def test_map_coordinates_keep_the_shape_and_give_the_origin(tmp_path, box, suffix):
    path = write_map_cloud(tmp_path, suffix, box + MAP_ORIGIN)
    fields = read_cloud_with_fields(path)
    points, origin = fields["points"], fields["origin"]
    assert points.dtype == np.float32 and origin.dtype == np.float64
    # float32 at northing 5e6 has steps of 0.5 m: cast before centring, a 1 m box keeps 2-3 values per axis
    assert np.abs(points - box).max() < 1e-3  # of the box's 1 m extent
    np.testing.assert_allclose(origin, MAP_ORIGIN, atol=1e-6)
    np.testing.assert_allclose(points + origin, box + MAP_ORIGIN, atol=1e-6)
    np.testing.assert_array_equal(read_cloud(path), points)


def test_float32_files_keep_working(tmp_path, box):
    near = (box * 3 + 0.25).astype(np.float32)  # an ordinary cloud: returned as stored, origin zero
    path = tmp_path / "near.pcd"
    write_pcd(path, [("x", "F", 4), ("y", "F", 4), ("z", "F", 4)], xyz_rows(near, "<f4"))
    fields = read_cloud_with_fields(path)
    np.testing.assert_array_equal(fields["points"], near)
    np.testing.assert_array_equal(fields["origin"], np.zeros(3))
    far = (box + [1000.0, 2000.0, 0.0]).astype(np.float32)  # what a float32 file can hold 2 km out: recentred
    write_pcd(path, [("x", "F", 4), ("y", "F", 4), ("z", "F", 4)], xyz_rows(far, "<f4"))
    fields = read_cloud_with_fields(path)
    assert np.abs(fields["origin"] - [1000.0, 2000.0, 0.0]).max() < 1e-3
    np.testing.assert_allclose(fields["points"] + fields["origin"], far, atol=1e-9)
    assert np.abs(fields["points"]).max() <= 0.5 + 1e-3


def test_arrays_at_map_coordinates_are_refused_until_centred(box):
    with pytest.raises(FoundryError, match=r"float32 steps are 0.5 \(50.0% of the extent\).*centre_cloud") as info:
        validate_cloud(box + MAP_ORIGIN, source="utm.npy")
    assert "utm.npy" in str(info.value) and "\n" not in str(info.value)
    points, origin = centre_cloud(box + MAP_ORIGIN)
    assert np.abs(points - box).max() < 1e-6 and points.dtype == np.float32
    np.testing.assert_allclose(origin, MAP_ORIGIN)
    single = validate_cloud(np.array([[5e5, 5e6, 100.0]]))  # one point has no shape to lose
    assert single.shape == (1, 3)


@pytest.mark.parametrize("scale", [1e30, 1e-30])
def test_extreme_scales_are_refused_not_collapsed(tmp_path, box, scale):
    np.save(tmp_path / "far.npy", box * scale)
    with pytest.raises(FoundryError, match=r"far.npy: expected a cloud extent between 1e-10 and 1e\+15"):
        read_cloud(tmp_path / "far.npy")
    with pytest.raises(FoundryError, match="rescale"):
        validate_cloud(box * scale)


# ---- headers that claim more than the file holds ----

def _lying_files(tmp_path):
    """~1 KB files whose headers claim 10^9 points (10^12 for the ascii PLY); each -> what the refusal says."""
    files = {}
    props = "property float x\nproperty float y\nproperty float z\n"
    (tmp_path / "bin.ply").write_bytes(f"ply\nformat binary_little_endian 1.0\nelement vertex {10**9}\n{props}"
                                       "end_header\n".encode() + bytes(1000))
    files["bin.ply"] = "header says 1000000000 PLY vertices"
    (tmp_path / "text.ply").write_text(f"ply\nformat ascii 1.0\nelement vertex {10**12}\n{props}end_header\n"
                                       + "0 0 0\n1 1 1\n" * 40)
    files["text.ply"] = "header says 1000000000000 PLY vertices of 3 values, found 80 rows"
    fields = [("x", "F", 4), ("y", "F", 4), ("z", "F", 4)]
    write_pcd(tmp_path / "bin.pcd", fields, xyz_rows(np.zeros((80, 3)), "<f4"), width=10**9, points=10**9)
    files["bin.pcd"] = "header says 1000000000 PCD points"
    write_pcd(tmp_path / "text.pcd", fields, xyz_rows(np.zeros((80, 3)), "<f4"), "ascii", width=10**9, points=10**9)
    files["text.pcd"] = "header says 1000000000 PCD points of 3 values, found 80 rows"
    return files


def _las_claiming(tmp_path, box, name, count):
    """A real 30-point LAS whose header then claims `count` points."""
    raw = bytearray(write_las(tmp_path / name, box[:30] + MAP_ORIGIN).read_bytes())
    struct.pack_into("<I", raw, 107, count)
    (tmp_path / name).write_bytes(bytes(raw))


def _peak_growth(read):
    """Peak bytes allocated (numpy buffers included) and peak RSS growth, in MB, while `read` runs."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    try:
        read()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak / 2**20, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024


def _refused_without_allocating(path, message):
    def read():
        with pytest.raises(FoundryError, match=message) as info:
            read_cloud(path)
        assert path.name in str(info.value) and "\n" not in str(info.value)

    assert path.stat().st_size < 4096
    allocated, rss = _peak_growth(read)
    assert allocated < 200 and rss < 200, (path.name, allocated, rss)


def test_lying_ply_and_pcd_headers_are_refused_without_allocating(tmp_path):
    for name, message in _lying_files(tmp_path).items():
        _refused_without_allocating(tmp_path / name, message)


def test_lying_las_headers_are_refused_without_allocating(tmp_path, box):
    _las_claiming(tmp_path, box, "huge.las", 10**9)
    _refused_without_allocating(tmp_path / "huge.las", "header says 1000000000 points of 34 bytes")
    # 404 bytes that start like LAS: laspy would read the ~4e9 VLRs its random header claims, one by one
    (tmp_path / "random.las").write_bytes(b"LASF" + np.random.default_rng(7).integers(0, 256, 400, np.uint8).tobytes())
    _refused_without_allocating(tmp_path / "random.las", "does not fit a file of 404 bytes")


def test_ascii_rows_must_match_the_count(tmp_path):
    head = "ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\n"
    (tmp_path / "more.ply").write_text(head + "end_header\n0 0 0\n1 1 1\n2 2 2\n")
    with pytest.raises(FoundryError, match="more.ply: header says 2 PLY vertices, found 1 lines after"):
        read_cloud(tmp_path / "more.ply")
    (tmp_path / "faces.ply").write_text(head + "element face 1\nproperty list uchar int vertex_indices\nend_header\n"
                                        "0 0 0\n1 1 1\n3 0 1 1\n")
    assert read_cloud(tmp_path / "faces.ply").shape == (2, 3)


def test_binary_compressed_pcd_cannot_claim_more_than_lzf_expands(tmp_path):
    lzf = pytest.importorskip("lzf", reason="python-lzf (extra 'data') reads PCD binary_compressed")
    count = 100_000_000  # 1.2 GB unpacked, announced by an 8-byte size field in front of 9 bytes of LZF
    packed = lzf.compress(bytes(64))
    path = tmp_path / "bomb.pcd"
    write_pcd(path, [("x", "F", 4), ("y", "F", 4), ("z", "F", 4)], xyz_rows(np.zeros((0, 3)), "<f4"),
              "binary_compressed", width=count, points=count)
    path.write_bytes(path.read_bytes() + np.array([len(packed), count * 12], "<u4").tobytes() + packed)
    _refused_without_allocating(path, "bomb.pcd: PCD binary_compressed sizes")


# ---- LAZ that lazrs cannot decode ----

@pytest.fixture
def laz_bytes(tmp_path, box):
    laspy = pytest.importorskip("laspy", reason="laspy reads LAZ")
    if not laspy.LazBackend.detect_available():
        pytest.skip("no LAZ backend (lazrs) installed")
    return write_las(tmp_path / "good.laz", box + MAP_ORIGIN, offset=MAP_ORIGIN).read_bytes()


def _laszip_vlr_at(raw: bytes) -> int:
    pos = struct.unpack_from("<H", raw, 94)[0]
    for _ in range(struct.unpack_from("<I", raw, 100)[0]):
        if raw[pos + 2:pos + 16] == b"laszip encoded":
            return pos + 54
        pos += 54 + struct.unpack_from("<H", raw, pos + 20)[0]
    raise AssertionError("laspy wrote no LASzip VLR")


def _patched(raw: bytes, fmt: str, at: int, value: int) -> bytes:
    out = bytearray(raw)
    struct.pack_into(fmt, out, at, value)
    return bytes(out)


def test_broken_laz_is_one_error_line(tmp_path, laz_bytes, box):
    assert np.abs(read_cloud(tmp_path / "good.laz") - box).max() < 1e-3  # the unbroken file reads
    vlr = _laszip_vlr_at(laz_bytes)
    table_at = struct.unpack_from("<q", laz_bytes, struct.unpack_from("<I", laz_bytes, 96)[0])[0]
    broken = {
        "truncated.laz": laz_bytes[:len(laz_bytes) // 2],
        "pointwise.laz": _patched(laz_bytes, "<H", vlr, 1),  # LASzip 1.x's compressor on a chunked body
        "chunk1.laz": _patched(laz_bytes, "<I", vlr + 12, 1),  # lazrs panics (capacity overflow) on this one
        "huge_chunk.laz": _patched(laz_bytes, "<I", vlr + 12, 2**31),  # lazrs would abort on a 73 GB allocation
        "chunk_table.laz": _patched(laz_bytes, "<I", table_at + 4, 2**31),  # ... and on a 34 GB one here
        "items.laz": _patched(laz_bytes, "<H", vlr + 32, 9),
        "scrambled.laz": laz_bytes[:400] + np.random.default_rng(3).integers(0, 256, len(laz_bytes) - 400,
                                                                              np.uint8).tobytes(),
    }
    for name, data in broken.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(FoundryError) as info:
            read_cloud(tmp_path / name)
        assert str(info.value).startswith(f"{tmp_path / name}: ") and "\n" not in str(info.value), name


# ---- properties and counts that do not make a cloud ----

def test_vertex_without_xyz_is_refused_naming_its_properties(tmp_path):
    for name, props in (("noz.ply", ("x", "y", "red")), ("swapped.ply", ("y", "x", "intensity"))):
        head = "".join(f"property float {p}\n" for p in props)
        (tmp_path / name).write_text(f"ply\nformat ascii 1.0\nelement vertex 2\n{head}end_header\n0 1 2\n3 4 5\n")
        with pytest.raises(FoundryError, match=rf"{name}: expected properties x, y and z, found \{list(props)}"):
            read_cloud(tmp_path / name)
    assert read_cloud(tmp_path / "swapped.ply", columns=("x", "y", "intensity")).tolist() == [[1, 0, 2], [4, 3, 5]]


@pytest.mark.parametrize("width,height,points,message", [
    ("-1", "1", "4", "expected PCD WIDTH to be one non-negative integer, found -1"),
    ("4", "-2", "4", "HEIGHT to be one non-negative integer, found -2"),
    ("3", "2", "4", "WIDTH 3 x HEIGHT 2 is 6 points, but POINTS says 4")])
def test_pcd_grid_must_be_consistent(tmp_path, width, height, points, message):
    path = tmp_path / "grid.pcd"
    write_pcd(path, [("x", "F", 4), ("y", "F", 4), ("z", "F", 4)], xyz_rows(np.zeros((4, 3)), "<f4"), "ascii",
              width=width, height=height, points=points)
    with pytest.raises(FoundryError, match=message):
        read_cloud(path)


# ---- organised clouds with invalid points ----

@pytest.fixture
def organised_pcd(tmp_path, rng):
    """A Kinect-style organised PCD: WIDTH 8 x HEIGHT 4, image rows 1 and 3 without depth (NaN)."""
    rows = np.empty(32, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4")])
    for i, name in enumerate("xyz"):
        rows[name] = rng.normal(size=32)
    rows["intensity"] = np.arange(32)
    for r in (1, 3):
        rows["x"][r * 8:(r + 1) * 8] = rows["y"][r * 8:(r + 1) * 8] = rows["z"][r * 8:(r + 1) * 8] = np.nan
    path = tmp_path / "kinect.pcd"
    write_pcd(path, [("x", "F", 4), ("y", "F", 4), ("z", "F", 4), ("intensity", "F", 4)], rows, width=8, height=4)
    return path, rows


def test_drop_invalid_drops_exactly_the_nan_rows(organised_pcd):
    path, rows = organised_pcd
    with pytest.raises(FoundryError, match=r"kinect.pcd: .*16 points with NaN/Inf \(first at row 8\).*drop_invalid"):
        read_cloud(path)
    valid = np.r_[0:8, 16:24]
    with pytest.warns(DroppedPoints, match=r"kinect.pcd: dropped 16 points with NaN/Inf \(first at row 8\) of 32"):
        fields = read_cloud_with_fields(path, drop_invalid=True)
    assert fields["dropped"] == 16
    np.testing.assert_array_equal(fields["points"], np.stack([rows[n][valid] for n in "xyz"], axis=1))
    np.testing.assert_array_equal(fields["intensity"], valid)  # the other columns lose the same rows
    with pytest.warns(DroppedPoints):
        assert load_clouds([path], 64, drop_invalid=True).shape == (1, 64, 3)
    with pytest.raises(FoundryError, match="first at row 8"):
        load_clouds([path], 64)
    with pytest.warns(DroppedPoints):
        assert np.isfinite(open_dataset(path.parent, "test", 16, drop_invalid=True)[0]["points"]).all()


def test_validate_cloud_drop_invalid_and_all_invalid():
    cloud = np.arange(15, dtype=np.float64).reshape(5, 3)
    cloud[[1, 3], 2] = np.inf
    with pytest.warns(DroppedPoints, match="dropped 2 points"):
        np.testing.assert_array_equal(validate_cloud(cloud, drop_invalid=True), cloud[[0, 2, 4]])
    with pytest.raises(FoundryError, match="NaN/Inf in all 5 points"):
        validate_cloud(np.full((5, 3), np.nan), drop_invalid=True)


def test_hdf5_with_mismatched_data_and_labels_is_refused(tmp_path, rng):
    h5py = pytest.importorskip("h5py", reason="h5py reads HDF5 layouts")
    with h5py.File(tmp_path / "ply_data_test0.h5", "w") as fh:
        fh["data"], fh["label"] = rng.normal(size=(3, 64, 3)).astype(np.float32), np.zeros((2, 1), np.uint8)
    with pytest.raises(FoundryError, match=r"ply_data_test0.h5: expected 'data' \(S, M, 3\+\) with S equal to the 2"):
        open_dataset(tmp_path, "test", 32)


def test_hdf5_chunk_that_does_not_decode_is_one_line(tmp_path, rng):
    h5py = pytest.importorskip("h5py", reason="h5py reads HDF5 layouts")
    path = tmp_path / "ply_data_test0.h5"
    with h5py.File(path, "w") as fh:
        fh.create_dataset("data", data=rng.normal(size=(2, 64, 3)).astype(np.float32), chunks=(1, 64, 3),
                          compression="gzip")
        fh["label"] = np.zeros((2, 1), np.uint8)
        chunk = fh["data"].id.get_chunk_info(1)
    raw = bytearray(path.read_bytes())
    raw[chunk.byte_offset:chunk.byte_offset + chunk.size] = b"\xff" * chunk.size
    path.write_bytes(bytes(raw))
    dataset = open_dataset(tmp_path, "test", 32)
    assert dataset[0]["points"].shape == (32, 3)  # the intact chunk still reads
    with pytest.raises(FoundryError, match="ply_data_test0.h5: HDF5 data could not be read") as info:
        dataset[1]
    assert "\n" not in str(info.value)
