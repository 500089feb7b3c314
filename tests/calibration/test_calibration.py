"""INT8 calibration, FP16 conversion, the range cache and the accuracy report on a tiny exported student."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import tiny_overrides
from foundry_edge.errors import FoundryError

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

POINTS = 128
DECISIONS = ("ArgMax", "TopK", "Equal", "Gather", "GatherElements", "Greater", "LessOrEqual")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny foundry-edge16 student with a 10-class head through export_model (graph grouping) + its manifest."""
    pytest.importorskip("torch")
    from foundry_edge.export import ExportOptions, export_model

    overrides = {**tiny_overrides("foundry-edge16"), "num_points": POINTS, "num_groups": 8, "num_classes": 10}
    options = ExportOptions(model="foundry-edge16", overrides=overrides, output_dir=tmp_path_factory.mktemp("model"),
                            trt_check="off")
    return export_model(options).onnx_path


def _config(model: Path, out: Path, **overrides):
    from foundry_edge.calibration.qdq import QuantizeOptions
    from foundry_edge.calibration.workflow import CalibrateConfig

    options = QuantizeOptions(cache_path=out.with_suffix(".calib.json"))
    return CalibrateConfig(model=model, data=["synthetic"], output=out, samples=16, quantize=options, **overrides)


@pytest.fixture(scope="module")
def quantized(exported, tmp_path_factory):
    from foundry_edge.calibration.workflow import calibrate

    out = tmp_path_factory.mktemp("int8") / "model.int8.onnx"
    summary = calibrate(_config(exported, out), log=lambda _: None)
    return out, summary


def test_qdq_is_symmetric_int8_with_zero_zero_points(quantized):
    from onnx import TensorProto, numpy_helper

    path, _ = quantized
    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq, "no Q/DQ nodes were written"
    for node in qdq:
        zero = inits[node.input[2]]
        assert zero.data_type == TensorProto.INT8, node.name
        assert not numpy_helper.to_array(zero).any(), node.name
    # no bias quantization: every DequantizeLinear of a constant dequantizes an int8 weight, none an int32 bias
    assert all(inits[n.input[0]].data_type == TensorProto.INT8 for n in qdq
               if n.op_type == "DequantizeLinear" and n.input[0] in inits)
    # only the domains its nodes use: ONNX Runtime 1.16 refuses an ai.onnx.ml import it does not know
    used = {n.domain for n in model.graph.node} | {""}
    assert {entry.domain for entry in model.opset_import} <= used


def test_decisions_and_their_scores_stay_fp32(quantized):
    path, summary = quantized
    model = onnx.load(str(path))
    producer = {o: n for n in model.graph.node for o in n.output}
    excluded = set(summary["calibration"]["excluded"]["nodes"])
    for node in model.graph.node:
        reads_dq = any(producer.get(i) is not None and producer[i].op_type == "DequantizeLinear" for i in node.input)
        if node.op_type in DECISIONS or node.name in excluded:
            assert not reads_dq, f"{node.op_type} {node.name} reads a dequantized tensor"
    # the kNN distance MatMul, the DSO key projection (a Gemm once simplified) and logits MatMul stay FP32
    fp32_matmuls = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and n.name in excluded]
    assert len(fp32_matmuls) >= 3
    topk = [n for n in model.graph.node if n.op_type == "TopK"]
    assert len(topk) == 2 and all(n.name in excluded for n in topk)  # the kNN and the assignment margin's top-2
    assert summary["calibration"]["excluded"]["counts"]["fp32 op type"] > 0


def test_output_manifest_records_the_calibration(quantized, exported):
    path, summary = quantized
    manifest = json.loads(path.with_name("model.int8.manifest.json").read_text())
    assert manifest["onnx"]["precision"] == "int8" and manifest["onnx"]["file"] == path.name
    calib = manifest["calibration"]
    assert calib["method"] == "minmax" and calib["samples"] == 16 and len(calib["data_sha256"]) == 64
    assert calib["excluded"]["nodes"] == summary["calibration"]["excluded"]["nodes"]
    assert manifest["preprocessing"]["num_points"] == POINTS


def test_tensorrt_parser_accepts_the_qdq_model(quantized):
    trt = pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX (the CPU parser check) is not installed")
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse_from_file(str(quantized[0]))
    assert ok, [parser.get_error(i).desc() for i in range(parser.num_errors)]


def test_cache_is_reused_and_invalidated(exported, tmp_path):
    from foundry_edge.calibration.workflow import calibrate

    out = tmp_path / "m.int8.onnx"
    first = calibrate(_config(exported, out), log=lambda _: None)["calibration"]
    second = calibrate(_config(exported, out), log=lambda _: None)["calibration"]
    assert (first["cache"], second["cache"]) == ("written", "hit")
    assert second["data_sha256"] == first["data_sha256"]
    with pytest.warns(UserWarning, match="stale.*data_sha256"):
        third = calibrate(_config(exported, out, seed=1), log=lambda _: None)["calibration"]
    assert third["cache"] == "written" and third["data_sha256"] != first["data_sha256"]
    with pytest.warns(UserWarning, match="stale.*method"):
        config = _config(exported, out, seed=1)
        config.quantize.method = "entropy"
        assert calibrate(config, log=lambda _: None)["calibration"]["cache"] == "written"


def test_exclusion_options_change_what_is_quantized(exported, tmp_path):
    from foundry_edge.calibration.graph import find_exclusions

    model = onnx.load(str(exported))
    default = find_exclusions(model)
    attn = find_exclusions(model, ["*matmul_4*", "Conv"])
    none = find_exclusions(model, defaults=False)
    convs = {n.name for n in model.graph.node if n.op_type == "Conv"}
    assert convs <= set(attn.nodes) and not convs & set(default.nodes)
    assert not none.nodes and not none.rules
    assert "Conv" in attn.to_dict()["rules"] and attn.nodes[next(iter(convs))] == "--exclude Conv"


@pytest.mark.parametrize("case", ["no clouds", "wrong shape", "nan", "too few", "no manifest"])
def test_bad_input_is_refused_without_output(exported, tmp_path, case):
    from foundry_edge.calibration.workflow import calibrate

    model = exported
    data = tmp_path / "clouds"
    data.mkdir()
    if case == "wrong shape":
        np.save(data / "a.npy", np.zeros((200, 2), np.float32))
    elif case == "nan":
        cloud = np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32)
        cloud[5, 1] = np.nan
        np.save(data / "a.npy", cloud)
    elif case == "too few":
        for i in range(3):
            np.save(data / f"c{i}.npy", np.random.default_rng(i).normal(size=(200, 3)).astype(np.float32))
    elif case == "no manifest":
        model = tmp_path / "bare.onnx"
        model.write_bytes(exported.read_bytes())
    out = tmp_path / "out.int8.onnx"
    config = _config(model, out)
    config.data = ["synthetic"] if case == "no manifest" else [str(data / "a.npy") if case in ("wrong shape", "nan")
                                                                else str(data)]
    with pytest.raises(FoundryError) as err:
        calibrate(config, log=lambda _: None)
    expected = {"no clouds": "found", "wrong shape": "column", "nan": "NaN", "too few": "expected 16 clouds, found 3",
                "no manifest": "--points"}[case]
    assert expected in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({"clouds", *(["bare.onnx"] if case == "no manifest" else [])})


def test_no_manifest_works_with_preprocessing_options(exported, tmp_path):
    from foundry_edge.calibration.workflow import calibrate

    model = tmp_path / "bare.onnx"
    model.write_bytes(exported.read_bytes())
    with pytest.raises(FoundryError, match="contradict"):
        calibrate(_config(exported, tmp_path / "x.onnx", points=POINTS * 2, grouping="graph"), log=lambda _: None)
    summary = calibrate(_config(model, tmp_path / "bare.int8.onnx", points=POINTS, grouping="graph"), log=lambda _: None)
    manifest = json.loads((tmp_path / "bare.int8.manifest.json").read_text())
    assert summary["passed"] and manifest["preprocessing"]["num_points"] == POINTS


def test_fp16_keeps_sensitive_nodes_fp32_and_io_float32(exported, tmp_path):
    from foundry_edge.calibration.fp16 import convert_to_fp16

    facts = convert_to_fp16(exported, tmp_path / "m.fp16.onnx")
    model = onnx.load(str(tmp_path / "m.fp16.onnx"))
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for i in model.graph.input)
    assert {o.name: o.type.tensor_type.elem_type for o in model.graph.output}["tokens"] == onnx.TensorProto.FLOAT
    half = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    assert half, "nothing was converted to FP16"
    kinds = {n.op_type for n in onnx.load(str(exported)).graph.node if n.name in set(facts["fp32_nodes"])}
    assert {"TopK", "ArgMax", "LayerNormalization", "Softmax"} <= kinds


def test_fp16_computes_what_it_keeps_fp32_in_fp32(exported, tmp_path):
    """No Cast(FP16) -> Cast(FP32) round trip into an FP32 node or output: the centres equal FP32's."""
    from foundry_edge.calibration.accuracy import run_onnx
    from foundry_edge.calibration.fp16 import convert_to_fp16
    from foundry_edge.data.synthetic import example_clouds

    convert_to_fp16(exported, tmp_path / "m.fp16.onnx")
    model = onnx.load(str(tmp_path / "m.fp16.onnx"))
    producer = {o: n for n in model.graph.node for o in n.output}
    cast_to = {n.name: a.i for n in model.graph.node if n.op_type == "Cast" for a in n.attribute if a.name == "to"}
    round_trips = [n.name for n in model.graph.node if cast_to.get(n.name) == onnx.TensorProto.FLOAT
                   and cast_to.get(getattr(producer.get(n.input[0]), "name", None)) == onnx.TensorProto.FLOAT16]
    assert not round_trips
    feeds = [{"points": example_clouds(3, POINTS + 20, seed=7)}]
    fp32, fp16 = run_onnx(exported, feeds, "fp32"), run_onnx(tmp_path / "m.fp16.onnx", feeds, "fp16")
    np.testing.assert_allclose(fp16["centers"], fp32["centers"], rtol=0, atol=1e-6)
    assert not np.allclose(fp16["tokens"], fp32["tokens"], rtol=0, atol=1e-6)  # the rest did go to FP16


def _loop_model():
    """x (4,) -> loop_out = x + 2 x^2 from a Loop whose body reads the outer y = x^2 by name and holds an
    ArgMax (as the scalable FPS loop does), picks (its ArgMax per trip), and w = y + y outside it."""
    from onnx import TensorProto, helper

    body = helper.make_graph(
        [helper.make_node("Add", ["v", "y"], ["s"]), helper.make_node("ArgMax", ["s"], ["best"], keepdims=0),
         helper.make_node("Identity", ["cond"], ["cond_out"])],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("v", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, [4]),
         helper.make_tensor_value_info("best", TensorProto.INT64, [])])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "x"], ["y"], name="square"),
         helper.make_node("Add", ["y", "y"], ["w"], name="double"),
         helper.make_node("Loop", ["trips", "go", "x"], ["loop_out", "picks"], name="loop", body=body)],
        "outer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("loop_out", TensorProto.FLOAT, [4]),
         helper.make_tensor_value_info("picks", TensorProto.INT64, [2]),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, [4])],
        [helper.make_tensor("trips", TensorProto.INT64, [], [2]), helper.make_tensor("go", TensorProto.BOOL, [], [True])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_fp16_keeps_a_decision_loop_and_what_its_body_reads_fp32(tmp_path):
    """A Loop holding a decision (the scalable FPS) stays FP32, and so does the outer tensor its body reads."""
    import onnxruntime as ort

    from foundry_edge.calibration.fp16 import convert_to_fp16

    onnx.save(_loop_model(), str(tmp_path / "loop.onnx"))
    kept = convert_to_fp16(tmp_path / "loop.onnx", tmp_path / "loop.fp16.onnx")["fp32_nodes"]
    assert {"loop", "square"} <= set(kept) and "double" not in kept
    x = np.array([1.001, 2.003, 3.007, 0.1], np.float32)
    fp32, fp16 = (ort.InferenceSession(str(tmp_path / name), providers=["CPUExecutionProvider"]).run(None, {"x": x})
                  for name in ("loop.onnx", "loop.fp16.onnx"))
    assert [a.dtype for a in fp16] == [np.float32, np.int64, np.float32]  # outputs keep their types
    np.testing.assert_array_equal(fp16[0], fp32[0])  # computed in FP32 inside and out
    np.testing.assert_array_equal(fp16[1], fp32[1])


def test_host_feeds_follow_the_manifests_grouping_method(rng):
    """A scalable (large-scene) host-grouped model is calibrated on scalable groups, not exact FPS."""
    pytest.importorskip("fpsample")
    pytest.importorskip("scipy")
    from foundry_edge.calibration.feeds import prepare, preprocessing_from
    from foundry_edge.data.loader import Clouds
    from foundry_edge.data.preprocess import host_feed

    manifest = {"grouping": "host", "preprocessing": {"in_graph": False, "normalize": "centre-unit-sphere",
                                                      "num_points": 256, "num_groups": 16, "group_size": 8,
                                                      "method": "scalable", "fps_candidates": 2}}
    clouds = [rng.normal(size=(256, 3)).astype(np.float32) for _ in range(2)]
    held = Clouds(np.stack(clouds), ["a", "b"], np.zeros((2, 3)), [256] * 2, [0] * 2, source="test")
    (feed,) = prepare(held, preprocessing_from(manifest), ["neighbourhoods", "centers"])
    scalable = host_feed(np.stack(clouds), 16, 8, method="scalable", fps_candidates=2)
    np.testing.assert_array_equal(feed["centers"], scalable["centers"])
    assert not np.array_equal(feed["centers"], host_feed(np.stack(clouds), 16, 8)["centers"])


def test_accuracy_report_with_sensitivity(exported, quantized, tmp_path):
    from foundry_edge.calibration.workflow import calibrate

    config = _config(exported, tmp_path / "s.int8.onnx", report=tmp_path / "report", eval_samples=16, sensitivity=True)
    summary = calibrate(config, log=lambda _: None)
    report = json.loads((tmp_path / "report" / "accuracy.json").read_text())
    assert set(report["precisions"]) == {"fp32", "fp16", "int8"}
    fp32 = report["precisions"]["fp32"]["metrics"]
    assert fp32["token_cosine_mean"] == pytest.approx(1.0) and fp32["assignment_agreement"] == 1.0
    int8 = report["precisions"]["int8"]
    assert {t["metric"] for t in int8["targets"]} == {"token_cosine_mean", "assignment_agreement", "top1_agreement"}
    assert 0.0 <= int8["metrics"]["top1_accuracy"] <= 1.0 and int8["metrics"]["center_agreement"] == 1.0
    assert report["sensitivity"] and all(r["nodes"] >= 1 for r in report["sensitivity"])
    assert summary["passed"] == report["passed"]
    assert ("PASSED" if report["passed"] else "FAILED") in (tmp_path / "report" / "accuracy.md").read_text()
    # the agreement comes with the FP32 assignment's health (s from the manifest) and the near-tie figures
    health = report["assignment_health"]
    assert health["num_supertokens_known"] and health["num_supertokens"] == 4 and health["clouds"] == 16
    assert fp32["assignment_flip_rate"] == 0.0 and fp32["low_margin_assignment_agreement"] == 1.0
    assert int8["metrics"]["assignment_flip_rate"] == pytest.approx(1 - int8["metrics"]["assignment_agreement"])
    target = next(t for t in int8["targets"] if t["metric"] == "assignment_agreement")
    assert target["informative"] is not health["collapsed"]
    assert "Assignment health of the FP32 reference: SuperTokens used" in (tmp_path / "report" / "accuracy.md").read_text()


@pytest.mark.parametrize("collapsed", [True, False])
def test_accuracy_report_marks_a_collapsed_fp32_assignment_uninformative(monkeypatch, collapsed):
    """The targets are judged as before; a collapsed reference's agreement is flagged, a spread one's is not."""
    from foundry_edge.calibration import accuracy

    rng = np.random.default_rng(0)
    fp32 = np.zeros((4, 16), np.int64) if collapsed else rng.integers(0, 4, size=(4, 16))
    margin = rng.uniform(0, 1, size=fp32.shape).astype(np.float32)
    outputs = {"fp32": {"assignment": fp32, "assignment_margin": margin},
               "int8": {"assignment": fp32.copy(), "assignment_margin": margin}}
    monkeypatch.setattr(accuracy, "run_onnx", lambda path, feeds, precision: outputs[precision])
    report = accuracy.accuracy_report({"fp32": "m.onnx", "int8": "m.int8.onnx"}, [{"points": np.zeros((4, 1, 3))}],
                                      None, "test", num_supertokens=4)
    target = report["precisions"]["int8"]["targets"][0]
    assert target["metric"] == "assignment_agreement" and target["passed"] and report["passed"]
    assert target["informative"] is not collapsed and report["assignment_health"]["collapsed"] is collapsed
    markdown = accuracy.to_markdown(report)
    assert ("uninformative: FP32 assignment collapsed" in markdown) is collapsed
    assert ("COLLAPSED" in markdown) is collapsed


def test_feed_reader_rewinds():
    from foundry_edge.calibration.feeds import FeedReader

    feeds = [{"points": np.full((2, 4, 3), i, np.float32)} for i in range(3)]
    seen = []
    reader = FeedReader(feeds, on_feed=seen.append)
    first = [f["points"][0, 0, 0] for f in reader]
    second = [f["points"][0, 0, 0] for f in reader]
    assert first == second == [0, 1, 2] and len(seen) == 6 and reader.get_next() is None


def test_cli_calibrate_and_refusals(exported, tmp_path, capsys):
    from foundry_edge.cli import main

    out = tmp_path / "cli.int8.onnx"
    assert main(["calibrate", str(exported), "--data", "synthetic", "--samples", "8", "-o", str(out)]) == 0
    assert out.is_file() and (tmp_path / "cli.int8.calib.json").is_file()
    assert capsys.readouterr().out.strip().endswith("PASSED")
    code = main(["calibrate", str(exported), "--data", "synthetic", "--cache", "c.json", "--no-cache", "-o", str(out)])
    assert code != 0 and "error: --cache and --no-cache" in capsys.readouterr().err
    code = main(["calibrate", str(exported), "--data", "synthetic", "--method", "kl", "-o", str(tmp_path / "x.onnx")])
    assert code != 0 and "--method" in capsys.readouterr().err and not (tmp_path / "x.onnx").exists()


def test_layer_norm_decomposed_for_trt85_stays_fp32():
    """export --target trt8.5 breaks LayerNormalization into primitives; they keep FP32 by name scope."""
    import onnx
    from onnx import TensorProto, helper

    from foundry_edge.calibration.graph import find_exclusions
    from foundry_edge.export.rewrites import decompose_layer_norm

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 8])
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [8], [1.0] * 8)
    node = helper.make_node("LayerNormalization", ["x", "scale"], ["y"], name="ln", axis=-1)
    model = helper.make_model(helper.make_graph([node], "g", [x], [y], [scale]),
                              opset_imports=[helper.make_opsetid("", 17)])
    decompose_layer_norm(model)
    onnx.checker.check_model(model)
    names = {n.name for n in model.graph.node}
    assert "ln" not in names and len(names) >= 8
    kept = find_exclusions(model).nodes
    assert names <= set(kept)
    assert not set(find_exclusions(model, defaults=False).nodes) & names


def test_corrupt_onnx_is_refused_in_one_line(exported, tmp_path, capsys):
    from foundry_edge.cli import main

    broken = tmp_path / "model.onnx"
    broken.write_bytes(exported.read_bytes()[:2000])
    shutil.copy(exported.with_name(exported.stem + ".manifest.json"), tmp_path / "model.manifest.json")
    out = tmp_path / "x.int8.onnx"
    assert main(["calibrate", str(broken), "--data", "synthetic", "--samples", "4", "--no-cache", "-o", str(out)]) == 2
    assert "error: model.onnx does not match model.manifest.json" in capsys.readouterr().err and not out.exists()
    assert main(["accuracy", str(exported), "--int8", str(broken), "--samples", "2", "-o", str(tmp_path / "acc")]) == 2
    assert "could not parse" in capsys.readouterr().err and not (tmp_path / "acc").exists()
