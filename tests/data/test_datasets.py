"""Data-set layouts written in their real formats, read through open_dataset; batches and load_clouds."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from foundry_edge.data import SyntheticShapes, iter_batches, load_clouds, open_dataset, read_clouds
from foundry_edge.data.datasets import SCANOBJECTNN_CLASSES, detect_layout
from foundry_edge.errors import FoundryError


def clouds_of(rng, count, points=64, cols=3):
    return rng.normal(size=(count, points, cols)).astype(np.float32)


def write_h5(path, data, labels):
    h5py = pytest.importorskip("h5py", reason="h5py (extra 'data') reads HDF5 layouts")
    with h5py.File(path, "w") as fh:
        fh["data"], fh["label"] = data, labels.reshape(-1, 1).astype(np.uint8)


def test_modelnet40_h5_reads_every_file_in_order(tmp_path, rng):
    parts = [clouds_of(rng, 3), clouds_of(rng, 2)]
    for i, data in enumerate(parts):
        write_h5(tmp_path / f"ply_data_train{i}.h5", data, np.array([i] * len(data)))
    write_h5(tmp_path / "ply_data_test0.h5", clouds_of(rng, 1), np.array([1]))
    (tmp_path / "shape_names.txt").write_text("airplane\nbathtub\n")
    ds = open_dataset(tmp_path, "train", num_points=32)
    assert detect_layout(tmp_path, "train")[0] == "modelnet40-h5"
    assert len(ds) == 5 and ds.classes == ["airplane", "bathtub"]
    item = ds[3]
    assert item["points"].shape == (32, 3) and item["label"] == 1
    assert set(map(tuple, item["points"])) <= set(map(tuple, parts[1][0]))  # a subset of its own cloud
    np.testing.assert_array_equal(ds[3]["points"], item["points"])  # same on every read
    assert len(open_dataset(tmp_path, "test", num_points=32)) == 1
    with pytest.raises(FoundryError, match="ply_data_val"):
        open_dataset(tmp_path, "val", 32)
    (tmp_path / "broken.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 8)
    with pytest.raises(FoundryError, match="broken.h5: not a readable HDF5"):
        open_dataset(tmp_path / "broken.h5", "test", 32)


def test_scanobjectnn_variants_must_be_chosen(tmp_path, rng):
    split = tmp_path / "main_split"
    split.mkdir()
    for variant, count in (("", 2), ("_augmentedrot_scale75", 4)):
        write_h5(split / f"training_objectdataset{variant}.h5", clouds_of(rng, count), np.arange(count))
    with pytest.raises(FoundryError, match="several ScanObjectNN variants"):
        open_dataset(tmp_path, "train", 32)
    ds = open_dataset(tmp_path, "train", 32, variant="_augmentedrot_scale75")
    assert len(ds) == 4 and ds.classes == list(SCANOBJECTNN_CLASSES)
    assert len(open_dataset(tmp_path, "train", 32, variant="")) == 2
    with pytest.raises(FoundryError, match="do not apply"):
        open_dataset(tmp_path, "train", 32, noise=0.1)
    with pytest.raises(FoundryError, match="do not apply to the synthetic"):
        open_dataset("synthetic:4", "train", 32, variant="")
    assert open_dataset("synthetic:4", "train", 32, classes=["torus"]).classes == ["torus"]


def test_shapenet55_labels_from_sorted_synsets(tmp_path, rng):
    (tmp_path / "shapenet_pc").mkdir()
    names = {"train": ["04379243-a.npy", "02691156-b.npy"], "test": ["03001627-c.npy"]}
    for split, files in names.items():
        (tmp_path / f"{split}.txt").write_text("\n".join(files) + "\n")
        for name in files:
            np.save(tmp_path / "shapenet_pc" / name, clouds_of(rng, 1, 100)[0])
    train, test = open_dataset(tmp_path, "train", 64), open_dataset(tmp_path, "test", 64)
    assert train.classes == test.classes == ["02691156", "03001627", "04379243"]
    assert [it["label"] for it in train] == [2, 0] and test[0]["label"] == 1


def test_shapenet_part_reads_points_and_part_labels(tmp_path, rng):
    (tmp_path / "synsetoffset2category.txt").write_text("Airplane\t02691156\nChair\t03001627\n")
    (tmp_path / "train_test_split").mkdir()
    for split, shapes in {"train": [("03001627", "s1")], "val": [("02691156", "s2")], "test": []}.items():
        (tmp_path / "train_test_split" / f"shuffled_{split}_file_list.json").write_text(
            json.dumps([f"shape_data/{syn}/{name}" for syn, name in shapes]))
    rows = {}
    for synset, name, part0 in (("03001627", "s1", 12), ("02691156", "s2", 0)):
        (tmp_path / synset).mkdir()
        pts = rng.normal(size=(40, 6))
        parts = part0 + rng.integers(0, 4, size=40)
        rows[name] = (pts[:, :3].astype(np.float32), parts)
        np.savetxt(tmp_path / synset / f"{name}.txt", np.column_stack([pts, parts]), fmt="%.6f")
    ds = open_dataset(tmp_path, "trainval", 64)
    assert ds.classes == ["Airplane", "Chair"] and [it["label"] for it in ds] == [1, 0]
    item = ds[0]
    stored, stored_parts = rows["s1"]
    distance = np.linalg.norm(item["points"][:, None] - stored[None], axis=-1)
    assert distance.min(1).max() < 1e-5  # every point is a row of its file ...
    np.testing.assert_array_equal(item["parts"], stored_parts[distance.argmin(1)])  # ... with that row's part
    with pytest.raises(FoundryError, match="no samples"):
        open_dataset(tmp_path, "test", 64)


def test_cloud_folder_labels_from_subfolders(tmp_path, rng):
    for cls in ("mug", "chair"):
        (tmp_path / cls).mkdir()
        np.save(tmp_path / cls / "a.npy", clouds_of(rng, 1)[0])
    np.savetxt(tmp_path / "chair" / "b.xyz", clouds_of(rng, 1)[0])
    ds = open_dataset(tmp_path, "test", 16)
    assert ds.classes == ["chair", "mug"] and sorted(it["label"] for it in ds) == [0, 0, 1]
    with pytest.raises(FoundryError, match="found nothing"):
        open_dataset(tmp_path / "missing", "test", 16)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FoundryError, match="found none"):
        open_dataset(tmp_path / "empty", "test", 16)


def test_pickles_refused_unless_trusted(tmp_path, rng):
    clouds = list(clouds_of(rng, 3, 100, cols=6))
    dat = tmp_path / "modelnet40_test_8192pts_fps.dat"
    dat.write_bytes(pickle.dumps((clouds, [np.array([2]), np.array([0]), np.array([1])])))
    fewshot = tmp_path / "fold0.pkl"
    fewshot.write_bytes(pickle.dumps({"train": [(c, 1, "x") for c in clouds[:2]], "test": [(clouds[2], 0, "y")]}))
    for spec in (tmp_path, dat, fewshot):
        with pytest.raises(FoundryError, match="can run code"):
            open_dataset(spec, "test", 32)
    ds = open_dataset(tmp_path, "test", 32, trust_pickle=True)
    assert len(ds) == 3 and ds[0]["label"] == 2
    assert set(map(tuple, ds[1]["points"])) <= set(map(tuple, clouds[1][:, :3]))
    assert len(open_dataset(fewshot, "train", 32, trust_pickle=True)) == 2


def test_iter_batches_is_reiterable_and_seeded():
    ds = SyntheticShapes(10, 64)
    batches = iter_batches(ds, 4)
    first, again = list(batches), list(batches)
    assert [b["points"].shape for b in first] == [(4, 64, 3), (4, 64, 3), (2, 64, 3)]
    assert all(np.array_equal(a["points"], b["points"]) for a, b in zip(first, again))
    assert first[0]["parts"].shape == (4, 64) and first[0]["label"].dtype == np.int64
    assert len(iter_batches(ds, 4, drop_last=True)) == 2
    one, two = iter_batches(ds, 10, shuffle=True, seed=1), iter_batches(ds, 10, shuffle=True, seed=1)
    assert np.array_equal(next(iter(one))["label"], next(iter(two))["label"])
    assert sorted(next(iter(one))["label"]) == sorted(first[0]["label"].tolist() + first[1]["label"].tolist()
                                                     + first[2]["label"].tolist())


def test_load_clouds_mixes_files_batches_folders_and_synthetic(tmp_path, rng):
    np.save(tmp_path / "batch.npy", clouds_of(rng, 3, 50))
    np.savetxt(tmp_path / "one.xyz", clouds_of(rng, 1, 20)[0])  # fewer points: padded
    folder = tmp_path / "folder"
    folder.mkdir()
    np.save(folder / "c.npy", clouds_of(rng, 1, 80)[0])
    batch = load_clouds([tmp_path / "batch.npy", tmp_path / "one.xyz", folder, "synthetic:2"], 32)
    assert batch.shape == (7, 32, 3) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch, load_clouds([tmp_path / "batch.npy", tmp_path / "one.xyz", folder,
                                                      "synthetic:2"], 32))
    assert load_clouds(tmp_path / "batch.npy", 32, limit=2).shape == (2, 32, 3)
    with pytest.raises(FoundryError, match="found nothing"):
        load_clouds(tmp_path / "nope.ply", 32)
    with pytest.raises(FoundryError, match="at least one"):
        load_clouds([], 32)


def test_read_clouds_keeps_stored_sizes_and_labels(tmp_path, rng):
    for cls, size in (("a", 30), ("b", 70)):
        (tmp_path / "set" / cls).mkdir(parents=True)
        np.save(tmp_path / "set" / cls / "x.npy", clouds_of(rng, 1, size)[0])
    clouds, labels = read_clouds(tmp_path / "set")
    assert [len(c) for c in clouds] == [30, 70] and labels == [0, 1]
    np.save(tmp_path / "loose.npy", clouds_of(rng, 1, 10)[0])
    clouds, labels = read_clouds([tmp_path / "set", tmp_path / "loose.npy"], limit=2)
    assert len(clouds) == 2 and labels == [0, 1]  # the limit stops before the unlabelled file
    assert read_clouds([tmp_path / "set", tmp_path / "loose.npy"])[1] is None
    with pytest.raises(FoundryError, match="num_points >= 1"):
        load_clouds(tmp_path / "set", None)


def test_load_clouds_refuses_a_cloud_smaller_than_a_group_instead_of_padding_it(tmp_path, rng):
    tiny = tmp_path / "one_point.npy"
    np.save(tiny, rng.normal(size=(1, 3)).astype(np.float32))
    assert load_clouds([tiny], 64).shape == (1, 64, 3)  # no minimum asked: resampling pads, as documented
    with pytest.raises(FoundryError, match="one_point.npy"):
        load_clouds([tiny], 64, min_points=16)


def test_calibration_refuses_clouds_smaller_than_the_models_groups(tmp_path, rng):
    from foundry_edge.data.loader import CloudLoader

    np.save(tmp_path / "small.npy", rng.normal(size=(5, 3)).astype(np.float32))
    with pytest.raises(FoundryError, match="small.npy"):
        CloudLoader([str(tmp_path / "small.npy")], 256, 1, split="calibration", min_points=8)()
