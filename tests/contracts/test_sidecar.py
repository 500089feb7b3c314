"""The engine sidecar: a plan loads only with a complete sidecar made for it, built by this TensorRT for this GPU."""

from __future__ import annotations

import hashlib
import json

import pytest

from foundry_edge.contracts.sidecar import (check_sidecar, read_sidecar, read_sidecar_unchecked, sidecar_gaps,
                                            sidecar_path, write_sidecar)
from foundry_edge.errors import FoundryError

SPECS = [{"name": "points", "dtype": "float32", "shape": ["batch", 1024, 3]}]


def complete(plan) -> dict:
    """What `foundry-edge build` writes for `plan`, less schema and version (write_sidecar adds them)."""
    digest = hashlib.sha256(plan.read_bytes()).hexdigest()
    return {"plan": {"file": plan.name, "sha256": digest, "bytes": plan.stat().st_size},
            "onnx": {"file": "model.onnx", "sha256": "0" * 64}, "precision": "fp16", "profiles": [],
            "device": {"tensorrt_module": "tensorrt", "tensorrt": "10.3.0", "gpu": "Orin", "compute_capability": "8.7"},
            "model": {"inputs": SPECS, "outputs": SPECS, "grouping": "graph", "preprocessing": {}}}


def test_sidecar_mismatch_is_refused_with_a_rebuild_hint():
    built = {"device": {"tensorrt_module": "tensorrt", "tensorrt": "10.3.0", "compute_capability": "8.7",
                        "gpu": "Orin"}}
    check_sidecar(built, {"tensorrt_module": "tensorrt", "tensorrt": "10.3.0", "compute_capability": "8.7", "gpu": "Orin"})
    with pytest.raises(FoundryError, match="TensorRT 10.3.0, this device has 8.6.2.*rebuild"):
        check_sidecar(built, {"tensorrt_module": "tensorrt", "tensorrt": "8.6.2", "compute_capability": "8.7"})
    with pytest.raises(FoundryError, match="compute capability 8.7, this device has 9.0"):
        check_sidecar(built, {"tensorrt_module": "tensorrt", "tensorrt": "10.3.0", "compute_capability": "9.0"})
    with pytest.raises(FoundryError, match="built for GPU Orin, this device has Orin NX.*--no-sidecar-check"):
        check_sidecar(built, {"tensorrt_module": "tensorrt", "tensorrt": "10.3.0", "compute_capability": "8.7",
                              "gpu": "Orin NX"})


def test_edited_sidecar_is_refused_before_tensorrt(tmp_path):
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"\0" * 64)
    sidecar_path(plan).write_text(json.dumps({"schema": "foundry-edge/engine", "device": {"tensorrt": "10.3"}}))
    with pytest.raises(FoundryError, match="complete sidecar.*without schema_version"):
        read_sidecar(plan)
    sidecar_path(plan).write_text("[1, 2]")
    with pytest.raises(FoundryError, match="found schema 'list'"):
        read_sidecar(plan)


def test_a_written_sidecar_reads_back_for_its_plan_only(tmp_path):
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"\1" * 64)
    assert write_sidecar(plan, complete(plan)) == tmp_path / "model.plan.json"
    assert read_sidecar(plan)["device"]["gpu"] == "Orin"
    plan.write_bytes(b"\2" * 64)
    with pytest.raises(FoundryError, match=r"model.plan does not match model.plan.json \(sha256"):
        read_sidecar(plan)
    with pytest.raises(FoundryError, match="expected the sidecar other.plan.json beside other.plan"):
        read_sidecar(tmp_path / "other.plan")


def test_gaps_name_each_missing_field_and_unchecked_reading_needs_only_the_model(tmp_path):
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"\1" * 64)
    data = {"schema_version": 1, **complete(plan)}
    assert sidecar_gaps(data) == []
    del data["device"]["gpu"], data["precision"]
    assert sidecar_gaps(data) == ["precision", "device.gpu"]
    assert sidecar_gaps({**data, "model": {**data["model"], "inputs": []}})[-1].startswith("model inputs and outputs")
    write_sidecar(plan, {"model": data["model"]})
    assert read_sidecar_unchecked(plan)["model"]["inputs"] == SPECS
    write_sidecar(plan, {"device": data["device"]})
    assert read_sidecar_unchecked(plan) is None and read_sidecar_unchecked(tmp_path / "none.plan") is None
