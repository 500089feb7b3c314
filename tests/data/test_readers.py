"""Readers: every format written by hand in its real layout, read back exactly; bad files refused."""

from __future__ import annotations

import numpy as np
import pytest

from foundry_edge.data.readers import read_cloud, read_cloud_with_fields, validate_cloud
from foundry_edge.errors import FoundryError


@pytest.fixture
def cloud(rng):
    """(50, 3) float32 points, (50, 3) normals, (50,) labels."""
    pts = rng.normal(size=(50, 3)).astype(np.float32)
    normals = pts / np.linalg.norm(pts, axis=1, keepdims=True)
    return pts, normals.astype(np.float32), rng.integers(0, 4, size=50)


def write_ply(path, pts, normals, labels, fmt="ascii", faces=False):
    dtype = np.dtype([("x", "f4"), ("y", "f4"), ("z", "f4"), ("nx", "f4"), ("ny", "f4"), ("nz", "f4"),
                      ("label", "u1")])
    head = (f"ply\nformat {fmt} 1.0\ncomment written by a test\nelement vertex {len(pts)}\n"
            + "".join(f"property {t} {n}\n" for n, t in [("x", "float"), ("y", "float"), ("z", "float"),
                                                          ("nx", "float"), ("ny", "float"), ("nz", "float"),
                                                          ("label", "uchar")])
            + ("element face 1\nproperty list uchar int vertex_indices\n" if faces else "") + "end_header\n")
    with open(path, "wb") as fh:
        fh.write(head.encode("ascii"))
        if fmt == "ascii":
            for p, n, l in zip(pts, normals, labels):
                fh.write((" ".join(f"{v:.9g}" for v in (*p, *n)) + f" {l}\n").encode())
            if faces:
                fh.write(b"3 0 1 2\n")
        else:
            order = "<" if fmt == "binary_little_endian" else ">"
            rows = np.empty(len(pts), dtype=dtype.newbyteorder(order))
            for i, name in enumerate("x y z".split()):
                rows[name], rows["n" + name] = pts[:, i], normals[:, i]
            rows["label"] = labels
            fh.write(rows.tobytes())
    return path


def write_pcd(path, pts, labels, data="ascii"):
    head = (f"# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\nFIELDS x y z label\nSIZE 4 4 4 4\n"
            f"TYPE F F F U\nCOUNT 1 1 1 1\nWIDTH {len(pts)}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\n"
            f"POINTS {len(pts)}\nDATA {data}\n")
    rows = np.empty(len(pts), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("label", "<u4")])
    for i, name in enumerate("xyz"):
        rows[name] = pts[:, i]
    rows["label"] = labels
    with open(path, "wb") as fh:
        fh.write(head.encode("ascii"))
        if data == "ascii":
            fh.write("".join(f"{a:.9g} {b:.9g} {c:.9g} {l}\n" for a, b, c, l in rows.tolist()).encode())
        elif data == "binary":
            fh.write(rows.tobytes())
        else:
            import lzf

            raw = b"".join(np.ascontiguousarray(rows[n]).tobytes() for n in rows.dtype.names)
            packed = lzf.compress(raw)
            fh.write(np.array([len(packed), len(raw)], dtype="<u4").tobytes() + packed)
    return path


@pytest.mark.parametrize("fmt", ["ascii", "binary_little_endian", "binary_big_endian"])
def test_ply_all_encodings_with_fields(tmp_path, cloud, fmt):
    pts, normals, labels = cloud
    path = write_ply(tmp_path / "c.ply", pts, normals, labels, fmt, faces=True)
    np.testing.assert_array_equal(read_cloud(path), pts)
    fields = read_cloud_with_fields(path)
    np.testing.assert_array_equal(fields["normals"], normals)
    np.testing.assert_array_equal(fields["labels"], labels)
    np.testing.assert_array_equal(read_cloud(path, columns=("nx", "ny", "nz")), normals)


@pytest.mark.parametrize("data", ["ascii", "binary", "binary_compressed"])
def test_pcd_all_encodings(tmp_path, cloud, data):
    if data == "binary_compressed":
        pytest.importorskip("lzf", reason="python-lzf (extra 'data') reads PCD binary_compressed")
    pts, _, labels = cloud
    path = write_pcd(tmp_path / "c.pcd", pts, labels, data)
    np.testing.assert_array_equal(read_cloud(path), pts)
    np.testing.assert_array_equal(read_cloud_with_fields(path)["labels"], labels)


def test_npy_npz_and_memory_map(tmp_path, cloud, monkeypatch):
    pts, normals, labels = cloud
    np.save(tmp_path / "a.npy", np.concatenate([pts, normals], axis=1))
    np.testing.assert_array_equal(read_cloud(tmp_path / "a.npy"), pts)
    np.testing.assert_array_equal(read_cloud_with_fields(tmp_path / "a.npy")["normals"], normals)
    monkeypatch.setattr("foundry_edge.data.readers._MMAP_BYTES", 0)
    mapped = read_cloud(tmp_path / "a.npy")
    mapped += 1  # a writable copy, not the read-only map
    np.testing.assert_allclose(mapped, pts + 1)
    np.savez(tmp_path / "b.npz", xyz=pts, labels=labels)
    np.testing.assert_array_equal(read_cloud(tmp_path / "b.npz"), pts)
    np.testing.assert_array_equal(read_cloud_with_fields(tmp_path / "b.npz")["labels"], labels)
    np.savez(tmp_path / "only.npz", pts.astype(np.float64))
    np.testing.assert_allclose(read_cloud(tmp_path / "only.npz"), pts)
    np.savez(tmp_path / "two.npz", a=pts, b=pts)
    with pytest.raises(FoundryError, match="points, xyz or data"):
        read_cloud(tmp_path / "two.npz")


def test_pickled_npy_refused(tmp_path):
    np.save(tmp_path / "o.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(FoundryError, match="o.npy"):
        read_cloud(tmp_path / "o.npy")


@pytest.mark.parametrize("suffix,sep,header", [(".xyz", " ", ""), (".txt", "\t", "x y z nx ny nz label\n"),
                                              (".csv", ",", "x,y,z,nx,ny,nz,label\n"), (".pts", " ", "50\n")])
def test_text_formats(tmp_path, cloud, suffix, sep, header):
    pts, normals, labels = cloud
    path = tmp_path / f"c{suffix}"
    rows = "".join(sep.join(f"{v:.9g}" for v in (*p, *n)) + f"{sep}{l}\n" for p, n, l in zip(pts, normals, labels))
    path.write_text(header + rows)
    np.testing.assert_array_equal(read_cloud(path), pts)
    fields = read_cloud_with_fields(path)
    np.testing.assert_array_equal(fields["labels"], labels)
    np.testing.assert_allclose(fields["normals"], normals)


def test_las_and_laz(tmp_path, cloud):
    laspy = pytest.importorskip("laspy", reason="laspy (extra 'data') reads LAS")
    pts, _, labels = cloud
    header = laspy.LasHeader(point_format=3, version="1.2")
    header.scales, header.offsets = np.array([1e-4] * 3), np.zeros(3)
    las = laspy.LasData(header)
    las.x, las.y, las.z = pts[:, 0], pts[:, 1], pts[:, 2]
    las.classification = labels.astype(np.uint8)
    las.write(tmp_path / "c.las")
    np.testing.assert_allclose(read_cloud(tmp_path / "c.las"), pts, atol=1e-4)
    np.testing.assert_array_equal(read_cloud_with_fields(tmp_path / "c.las")["labels"], labels)
    if laspy.LazBackend.detect_available():
        las.write(tmp_path / "c.laz")
        np.testing.assert_allclose(read_cloud(tmp_path / "c.laz"), pts, atol=1e-4)


def test_validate_cloud_refusals():
    good = np.arange(15.0).reshape(5, 3)
    assert validate_cloud(good).dtype == np.float32
    with pytest.raises(FoundryError, match="s.npy: expected a cloud with a shape, found all 5 points identical"):
        validate_cloud(np.ones((5, 3)), source="s.npy")
    bad = good.copy()
    bad[2, 1], bad[4, 0] = np.nan, np.inf
    with pytest.raises(FoundryError, match=r"2 points with NaN/Inf \(first at row 2\)"):
        validate_cloud(bad, source="s.npy")
    with pytest.raises(FoundryError, match=r"shape \(N, 3\), found \(5, 2\)"):
        validate_cloud(np.zeros((5, 2)))
    with pytest.raises(FoundryError, match="empty"):
        validate_cloud(np.zeros((0, 3)))
    with pytest.raises(FoundryError, match="at least 10 points, found 5"):
        validate_cloud(good, min_points=10, source="s.npy")


def test_bad_files_are_refused_naming_the_file(tmp_path, cloud):
    pts, normals, labels = cloud
    full = write_ply(tmp_path / "t.ply", pts, normals, labels, "binary_little_endian").read_bytes()
    (tmp_path / "t.ply").write_bytes(full[:-10])
    cases = {"t.ply": "truncated", "empty.ply": "header", "empty.txt": "at least 3 numbers", "nan.xyz": "NaN",
             "wide.npy": r"\(N, 3\)", "short.csv": "at least 3 numbers", "junk.npy": "not a readable",
             "missing.ply": "found nothing", "cloud.obj": "unknown point-cloud suffix"}
    (tmp_path / "empty.ply").write_bytes(b"")
    (tmp_path / "empty.txt").write_text("x y z\n")
    (tmp_path / "nan.xyz").write_text("0 0 0\nnan 1 2\n")
    np.save(tmp_path / "wide.npy", np.zeros((4, 3, 2)))
    (tmp_path / "short.csv").write_text("1,2\n3,4\n")
    (tmp_path / "junk.npy").write_bytes(b"\x93NUMPY garbage")
    (tmp_path / "cloud.obj").write_text("v 0 0 0\n")
    (tmp_path / "trunc_ascii.ply").write_text("ply\nformat ascii 1.0\nelement vertex 5\nproperty float x\n"
                                              "property float y\nproperty float z\nend_header\n0 0 0\n1 1 1\n")
    cases["trunc_ascii.ply"] = "truncated"
    for name, message in cases.items():
        with pytest.raises(FoundryError, match=message) as info:
            read_cloud(tmp_path / name)
        assert name in str(info.value)
    (tmp_path / "ok.xyz").write_text("0 0 0\n1 1 1\n")
    with pytest.raises(FoundryError, match="ok.xyz: expected at least 100 points, found 2"):
        read_cloud(tmp_path / "ok.xyz", min_points=100)
