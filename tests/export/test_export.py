"""Exports of every preset at tiny size, each with another option mix (every TensorRT target among them),
checked from the outside: the written files, their dims and opset, the ops in the graph, ONNX Runtime at
a third shape, the manifest."""

from __future__ import annotations

import hashlib
import os
import warnings

import numpy as np
import pytest

from tests.conftest import tiny_overrides
from foundry_edge.errors import FoundryError
from foundry_edge.models.registry import list_presets

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

SMALL = dict(num_points=128, num_groups=8, depth=1)  # below TINY: the dynamo export dominates test time
FORBIDDEN = {"OneHot", "ScatterND", "ScatterElements", "Attention"}


def small(preset: str, **extra) -> dict:
    out = dict(tiny_overrides(preset), **SMALL)
    if "num_supertokens" in out:
        out.update(num_supertokens=3, gate_budget=2)
    return {**out, **extra}


# Every preset, each with another option mix (the teacher of foundry-s16 covers pointjepa-vits), and
# every target: trt8.5 (opset 17, LayerNorm decomposed), trt8.6 (17), trt10 (default 18; 17 by conversion), trt11.
CASES = {
    "foundry-edge16": dict(overrides=small("foundry-edge16", num_classes=4), target="trt8.5"),
    "foundry-gate16": dict(overrides=small("foundry-gate16", num_classes=4), opset=17),
    "foundry-s16": dict(overrides=small("foundry-s16"), teacher="pointjepa-vits", target="trt8.6",
                        teacher_overrides=small("pointjepa-vits"), grouping="host", static=True),
    "pointmae-vits": dict(overrides=small("pointmae-vits"), opset=19, dynamic_points=False, outputs=("tokens",)),
    "pointbert-vits": dict(overrides=small("pointbert-vits", grouping="scalable"), target="trt11", opset=20,
                           grouping="host", max_batch=4),
    "foundry-t16": dict(overrides=small("foundry-t16", num_part_classes=3), simplify=False, num_points=160),
    "foundry-s16-kmeans": dict(overrides=small("foundry-s16-kmeans"), static=True, batch=1,
                               outputs=("tokens", "assignment")),
    "foundry-s16-fps": dict(overrides=small("foundry-s16-fps"), simplifier="onnxslim", dynamic_batch=False),
}


def test_every_registered_preset_has_an_export_case():
    covered = set(CASES) | {case["teacher"] for case in CASES.values() if "teacher" in case}
    assert covered == set(list_presets())


def export_case(preset, out_dir, **changes):
    """Export CASES[preset] with `changes`; "simplifier" forces onnxsim or onnxslim."""
    from foundry_edge.export import ExportOptions, export_model, simplify

    case = {**CASES[preset], **changes}
    simplifier = case.pop("simplifier", None)
    with warnings.catch_warnings(), pytest.MonkeyPatch.context() as patch:
        warnings.simplefilter("ignore")
        if simplifier:
            patch.setattr(simplify, "simplifier_name", lambda: simplifier)
        return export_model(ExportOptions(model=preset, output_dir=out_dir, **case))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """preset -> ExportResult of CASES[preset], exported once per module (the export dominates the time)."""
    cache = {}

    def get(preset):
        if preset not in cache:
            cache[preset] = export_case(preset, tmp_path_factory.mktemp(preset))
        return cache[preset]

    return get


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def resolve_dims(spec: dict, sizes: dict) -> tuple:
    return tuple(sizes[d] if isinstance(d, str) else d for d in spec["shape"])


def expected_opset(case: dict) -> int:
    return case.get("opset") or (17 if case.get("target") in ("trt8.5", "trt8.6") else 18)


def assert_fits_target(model, manifest, case: dict):
    """The opset is the target's, the IR version the lowest that holds it (ONNX Runtime 1.16/1.17 refuse IR 10);
    at opset 17 Reduce axes are attributes (ReduceSum: an initializer); LayerNormalization is decomposed for
    trt8.5 only."""
    target = case.get("target", "trt10")
    opset = expected_opset(case)
    assert manifest["onnx"]["opset"] == opset == model.opset_import[0].version
    assert manifest["onnx"]["ir_version"] == model.ir_version == {17: 8, 18: 8, 19: 9, 20: 9}[opset]
    assert [c["passed"] for c in manifest["checks"]["items"] if c["name"] == "ir version"] == [True]
    assert manifest["export_options"]["target"] == target and manifest["export_options"]["opset"] == opset
    initializers = {i.name for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type.startswith("Reduce"):
            attributes = {a.name for a in node.attribute}
            if opset == 17 and node.op_type != "ReduceSum":
                assert len(node.input) == 1 and "axes" in attributes and "noop_with_empty_axes" not in attributes
            else:
                assert node.input[1] in initializers
    layer_norms = sum(node.op_type == "LayerNormalization" for node in model.graph.node)
    assert (layer_norms == 0) == (target == "trt8.5")
    assert ("decompose-layernorm" in manifest["onnx"]["rewrites"]) == (target == "trt8.5")
    assert ("opset17" in manifest["onnx"]["rewrites"]) == (opset == 17)


def assert_deployable(artifact, case: dict):
    """What a user of the files relies on, checked without the export's own check code."""
    import onnx
    import onnxruntime as ort

    from foundry_edge.contracts.manifest import read_manifest
    from foundry_edge.data.synthetic import example_clouds
    from foundry_edge.data.preprocess import feed_from_manifest

    path = artifact.onnx_path
    manifest = read_manifest(path)
    assert manifest == artifact.manifest and manifest["checks"]["passed"]
    assert manifest["onnx"]["file"] == path.name and manifest["onnx"]["sha256"] == sha256(path)
    cost = manifest["cost"]  # what `profile` reports without torch: FLOPs = fixed + per_point * N
    assert cost["params"] > 0 and cost["flops_per_cloud"]["fixed"] > 0 and cost["flops_per_cloud"]["per_point"] >= 0
    assert cost["num_groups"] == manifest["preprocessing"].get("num_groups", cost["num_groups"])
    model = onnx.load(str(path))
    ops = {node.op_type for node in model.graph.node}
    assert not ops & FORBIDDEN
    assert_fits_target(model, manifest, case)
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
    assert [dims(v) for v in model.graph.output] == [o["shape"] for o in manifest["outputs"]]
    assert [dims(v) for v in model.graph.input] == [i["shape"] for i in manifest["inputs"]]
    static = case.get("static", False)
    assert ("batch" in manifest["inputs"][0]["shape"]) == (not static and case.get("dynamic_batch", True))
    for name, (low, opt, high) in manifest["profiles"].items():
        assert low <= opt <= high
    # A third shape, other than both the trace and the check shapes, wherever an axis is dynamic.
    profiles = manifest["profiles"]
    batch = 4 if "batch" in profiles else manifest["export_options"]["batch"]
    points = manifest["preprocessing"]["num_points"] + (17 if "num_points" in profiles else 0)
    feed = feed_from_manifest(example_clouds(batch, points, seed=7), manifest["preprocessing"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = dict(zip([o["name"] for o in manifest["outputs"]], session.run(None, feed)))
    for spec in manifest["outputs"]:
        assert outputs[spec["name"]].shape == resolve_dims(spec, {"batch": batch, "num_points": points})
        assert str(outputs[spec["name"]].dtype) == spec["dtype"]
        assert np.isfinite(outputs[spec["name"]]).all()


@pytest.mark.parametrize("preset", list(CASES))
def test_preset_exports_checked_and_deployable(preset, exported):
    from foundry_edge.export.trt_check import find_tensorrt

    case = CASES[preset]
    result = exported(preset)
    assert result.passed
    assert [a.role for a in result.artifacts] == (["model", "teacher"] if "teacher" in case else ["model"])
    for artifact in result.artifacts:
        assert_deployable(artifact, case)
        checks = {c.name: c for c in artifact.checks}
        parity = [c for name, c in checks.items() if name.startswith("onnxruntime vs torch b")]
        # a second shape on every dynamic axis; host grouping also takes another point count
        assert len(parity) == (1 if case.get("static") and case.get("grouping") != "host" else 2)
        if case.get("grouping") == "host":  # grouping and network judged apart, at each shape
            for c in parity:
                shape = c.name.rsplit(" ", 2)[-2:]
                grouping = checks["host grouping vs torch " + " ".join(shape)]
                assert grouping.passed and grouping.metrics["identical"] == grouping.metrics["groups"] > 0
                assert checks["onnxruntime vs torch on torch's groups " + " ".join(shape)].passed
                assert not c.skipped  # identical groupings: the raw path is judged too
        assert len({c.name for c in parity}) == len(parity)
        for c in parity:  # a student's agreement comes with the health of the clouds it was measured on
            figures = c.metrics["outputs"].get("assignment")
            assert (figures is not None) == any(o["name"] == "assignment" for o in artifact.manifest["outputs"])
            if figures is not None:
                assert figures["flip_rate"] == 0.0 and figures["health"]["clouds"] == c.metrics["batch"]
                assert figures["informative"] == (not figures["health"]["collapsed"])
                assert "SuperTokens used" in c.detail
        if find_tensorrt() is not None:  # the student, the teacher and the gate parse in TensorRT(-RTX)
            assert not checks["tensorrt parser"].skipped and checks["tensorrt parser"].passed
    manifest = result.manifest
    assert manifest["grouping"] == case.get("grouping", "graph")
    assert manifest["versions"]["simplifier"].split()[0] == ("none" if case.get("simplify") is False
                                                             else case.get("simplifier", "onnxsim"))
    assert manifest["model"]["checkpoint"]["source"].startswith(f"preset:{preset}")


def test_gate_export_keeps_the_gate_outputs_and_budget_topk(exported):
    import onnx

    result = exported("foundry-gate16")
    names = [o["name"] for o in result.manifest["outputs"]]
    assert names == ["tokens", "centers", "assignment", "assignment_margin", "gate_prob", "logits"]
    model = onnx.load(str(result.onnx_path))
    topk = [n for n in model.graph.node if n.op_type == "TopK"]
    # FPS is unrolled (no TopK); kNN, the gate budget and the margin's top-2 are TopK with constants (initializers).
    constants = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    assert len(topk) == 3 and all(n.input[1] in constants for n in topk)
    assert sorted(int(constants[n.input[1]][0]) for n in topk) == [2, 2, 8]  # margin top-2, gate budget, group size


def test_same_options_give_byte_identical_files_cli_and_api(exported, tmp_path, capsys):
    from foundry_edge.cli import main

    api = exported("foundry-edge16").artifacts[0]
    sets = [f"--set={k}={','.join(map(str, v)) if isinstance(v, tuple) else v}"
            for k, v in CASES["foundry-edge16"]["overrides"].items()]
    code = main(["export", "foundry-edge16", "--target", "trt8.5", "-o", str(tmp_path / "cli"), *sets])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and out[-1] == "PASSED"
    assert any("torch" in line and "dynamo" in line for line in out)  # each step names what it runs with
    assert sha256(tmp_path / "cli" / "model.onnx") == sha256(api.onnx_path)
    assert (tmp_path / "cli" / "model.manifest.json").read_bytes() == api.manifest_path.read_bytes()
    assert "trtexec --onnx=" in "\n".join(out)  # the engine build line for the profile


def test_failed_checks_leave_only_failed_files_and_say_by_how_much(tmp_path, monkeypatch):
    import dataclasses

    from foundry_edge.export import ExportCheckError, validate
    from foundry_edge.runtimes.compare import Tolerance

    real = validate.validate_onnx
    strict = Tolerance(max_rel=0.0, min_cosine=1.0)  # no FP32 graph is bit-exact after fusions
    monkeypatch.setattr(validate, "validate_onnx", lambda path, model, config, **kw:
                        real(path, model, dataclasses.replace(config, tolerances=strict), **kw))
    with pytest.raises(ExportCheckError, match=r"onnxruntime vs torch b2 n128: tokens abs .* \(rel > 0\)") as err:
        export_case("foundry-edge16", tmp_path, keep_failed=True, trt_check="off")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.failed.manifest.json", "model.failed.onnx"]
    assert not err.value.result.passed and "kept as" in str(err.value)


def test_a_failed_export_writes_nothing_without_keep_failed(tmp_path, monkeypatch):
    from foundry_edge.export import CheckResult
    from foundry_edge.export import pipeline

    bad = pipeline._Built("model", b"onnx", {"onnx": {"file": None}},
                          [CheckResult("dims", False, "tokens [2, 8] != [2, 9]")])
    monkeypatch.setattr(pipeline, "_build", lambda *args: bad)
    options = pipeline.ExportOptions(model="foundry-edge16", overrides=small("foundry-edge16"), output_dir=tmp_path / "out")
    with pytest.raises(pipeline.ExportCheckError, match="model: dims: tokens .*nothing was written"):
        pipeline.export_model(options)
    assert not (tmp_path / "out").exists()  # not even the folder the export made for the set


@pytest.mark.parametrize("changes, message", [
    (dict(static=True, dynamic_points=True), "--static contradicts --dynamic-points"),
    (dict(static=True, dynamic_batch=True), "--static contradicts --dynamic-batch"),
    (dict(target="trt10", opset=16), "opset 16 is not exported for trt10"),
    (dict(target="trt11", opset=23), "Attention op TensorRT rejects"),
    (dict(target="trt8.5", opset=19), "--target trt8.5 needs opset 17"),
    (dict(target="trt8.6", opset=18), "--target trt8.6 needs opset 17"),
    (dict(target="trt9"), "target 'trt9' is not known"),
    (dict(grouping="host", dynamic_points=True), "no point axis"),
    (dict(grouping="tree"), "grouping 'tree'"),
    (dict(trt_check="maybe"), "trt check 'maybe'"),
    (dict(batch=1), "batch >= 2"),
    (dict(max_batch=1), "max batch 1 is below"),
    (dict(outputs=("gate_prob",)), r"output\(s\) \['gate_prob'\] not available"),
    (dict(num_points=4), "below what grouping needs"),
    (dict(max_points=64), "max points 64 is below"),
    (dict(overrides=small("foundry-edge16", num_part_classes=3), grouping="host"), "segmentation head"),
    (dict(teacher="foundry-edge16"), "expected a teacher"),
])
def test_contradicting_options_are_refused_before_exporting(changes, message, tmp_path):
    with pytest.raises(FoundryError, match=message):
        export_case("foundry-edge16", tmp_path, **changes)
    assert not tmp_path.joinpath("model.onnx").exists()


@pytest.mark.parametrize("argv, message", [
    (["export", "no-such-preset"], "neither a preset"),
    (["export", "foundry-edge16", "--static", "--dynamic-points"], "--static contradicts --dynamic-points"),
    (["export", "foundry-edge16", "--opset", "21"], "opset 21"),
    (["export", "foundry-edge16", "--target", "trt8.5", "--opset", "19"], "--target trt8.5 needs opset 17"),
    (["export", "pointjepa-vits", "--teacher", "pointjepa-vits"], "itself a teacher"),
    (["export", "foundry-edge16", "--points", "0"], "--points must be >= 1"),  # not silently the model's
])
def test_cli_refuses_bad_input_in_one_line(argv, message, capsys, tmp_path):
    from foundry_edge.cli import main

    code = main([*argv, "-o", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not list(tmp_path.iterdir())


def test_cli_inspect_refuses_zero_points(capsys):
    from foundry_edge.cli import main

    assert main(["inspect", "foundry-edge16", "--points", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: expected --points of at least 1")


def test_a_python_model_is_exported_as_it_is(tmp_path):
    from foundry_edge.export import ExportOptions, export_model
    from foundry_edge.models import create_model

    model = create_model("foundry-edge16", **small("foundry-edge16"))
    with pytest.raises(FoundryError, match="overrides apply to presets only"):
        export_model(ExportOptions(model=model, output_dir=tmp_path, overrides={"depth": 2}))


def test_cli_refuses_a_hostile_checkpoint(tmp_path, capsys):
    import torch

    from foundry_edge.cli import main

    path = tmp_path / "evil.pt"
    torch.save({"format": "foundry-edge", "payload": FoundryError("not a tensor")}, path)
    code = main(["export", str(path), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and "refusing to load" in err[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("FOUNDRY_EDGE_SLOW") != "1", reason="slow: set FOUNDRY_EDGE_SLOW=1 to export a full preset")
def test_full_size_edge_student_exports(tmp_path):
    from foundry_edge.export import ExportOptions, export_model

    result = export_model(ExportOptions(model="foundry-edge16", output_dir=tmp_path))
    assert result.passed and result.manifest["preprocessing"]["num_groups"] == 64
    assert result.manifest["outputs"][0]["shape"] == ["batch", 64, 384]


def test_scalable_graph_grouping_with_dynamic_points_is_refused_before_exporting(tmp_path):
    from foundry_edge.export import ExportOptions, export_model

    with pytest.raises(FoundryError, match="--static-points"):
        export_model(ExportOptions(model="foundry-edge16", overrides={**tiny_overrides("foundry-edge16"),
                                                                      "grouping": "scalable"},
                                   output_dir=tmp_path / "out"))
    assert not (tmp_path / "out").exists()
