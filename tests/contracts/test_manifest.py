"""The export manifest: read back only for the very ONNX it was written for, in its schema, describing its graph."""

from __future__ import annotations

import hashlib
import json

import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

from foundry_edge.contracts.manifest import graph_problems, manifest_path, read_manifest  # noqa: E402
from foundry_edge.contracts.trtexec import trtexec_shapes  # noqa: E402
from foundry_edge.errors import FoundryError  # noqa: E402
from foundry_edge.fileio import write_json_atomic  # noqa: E402


def relu_model(metadata: dict | None = None):
    points = helper.make_tensor_value_info("points", TensorProto.FLOAT, ["batch", "num_points", 3])
    tokens = helper.make_tensor_value_info("tokens", TensorProto.FLOAT, ["batch", "num_points", 3])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["points"], ["tokens"])], "g", [points],
                                                [tokens]), opset_imports=[helper.make_opsetid("", 18)])
    helper.set_model_props(model, metadata or {})
    return model


def manifest_for(data: bytes) -> dict:
    return {"schema": "foundry-edge/manifest", "schema_version": 1,
            "model": {"name": "relu", "kind": "student", "config": {}, "class_names": None},
            "onnx": {"file": "model.onnx", "sha256": hashlib.sha256(data).hexdigest(), "opset": 18,
                     "precision": "fp32"},
            "grouping": "graph", "preprocessing": {"normalize": "none", "in_graph": True, "num_points": 256,
                                                   "num_groups": 16, "group_size": 8},
            "inputs": [{"name": "points", "dtype": "float32", "shape": ["batch", "num_points", 3]}],
            "outputs": [{"name": "tokens", "dtype": "float32", "shape": ["batch", "num_points", 3]}],
            "profiles": {"batch": [1, 1, 8], "num_points": [32, 256, 1024]}, "versions": {},
            "checks": {"passed": True, "items": []}}


def test_manifest_round_trip_and_schema_refusal(tmp_path):
    """A manifest is read back only for the very ONNX it was written for (its SHA-256) and in its schema."""
    data = relu_model().SerializeToString()
    for stem in ("model", "old"):
        (tmp_path / f"{stem}.onnx").write_bytes(data)
    manifest = manifest_for(data)
    write_json_atomic(manifest_path(tmp_path / "model.onnx"), manifest)
    assert read_manifest(tmp_path / "model.onnx") == manifest
    assert read_manifest(tmp_path / "other.onnx") is None
    assert trtexec_shapes(manifest) == ("--minShapes=points:1x32x3 --optShapes=points:1x256x3 "
                                        "--maxShapes=points:8x1024x3")
    write_json_atomic(manifest_path(tmp_path / "old.onnx"), {**manifest, "schema_version": 0})
    with pytest.raises(FoundryError, match="schema version 0"):
        read_manifest(tmp_path / "old.onnx")
    write_json_atomic(manifest_path(tmp_path / "old.onnx"), {**manifest, "profiles": {"batch": [8, 1, 1]}})
    with pytest.raises(FoundryError, match=r"schema.*'profiles.batch' must be \[min, opt, max\]"):
        read_manifest(tmp_path / "old.onnx")
    (tmp_path / "old.onnx").write_bytes(data + b" ")
    write_json_atomic(manifest_path(tmp_path / "old.onnx"), manifest)
    with pytest.raises(FoundryError, match="old.onnx does not match old.manifest.json .sha256"):
        read_manifest(tmp_path / "old.onnx")


def test_a_manifest_of_another_graph_is_refused_with_what_differs(tmp_path):
    stamped = {"foundry_edge.model": "relu", "foundry_edge.grouping": "graph",
               "foundry_edge.preprocessing": json.dumps({"num_points": 128, "in_graph": True})}
    model = relu_model(stamped)
    manifest = manifest_for(model.SerializeToString())
    assert graph_problems(manifest, model) == ["preprocessing.num_points 256 but the graph was exported with 128"]
    manifest["outputs"][0]["name"], manifest["onnx"]["precision"] = "features", "fp16"
    assert graph_problems(manifest, model) == [
        "outputs ['features'] but the graph has ['tokens']", "precision fp16 but the graph is fp32",
        "preprocessing.num_points 256 but the graph was exported with 128"]
    (tmp_path / "model.onnx").write_bytes(model.SerializeToString())
    write_json_atomic(manifest_path(tmp_path / "model.onnx"), manifest)
    with pytest.raises(FoundryError, match="model.manifest.json does not describe model.onnx: outputs"):
        read_manifest(tmp_path / "model.onnx")
