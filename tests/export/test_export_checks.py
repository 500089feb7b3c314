"""The export's graph checks on small hand-made graphs: each refuses what TensorRT would."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from foundry_edge.errors import FoundryError  # noqa: E402
from foundry_edge.export.rewrites import decompose_layer_norm, to_opset17  # noqa: E402
from foundry_edge.export.validate import check_ops, check_reduce_axes  # noqa: E402
from foundry_edge.runtimes.compare import output_metrics  # noqa: E402


def graph_with(nodes, initializers=(), opset=18, inputs=None):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "g", inputs or [x], [y], list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def const(name, values, dtype=np.int64):
    return numpy_helper.from_array(np.array(values, dtype=dtype), name)


def test_topk_with_a_constant_k_passes():
    model = graph_with([helper.make_node("TopK", ["x", "k"], ["y", "i"], name="knn")], [const("k", [3])])
    result = check_ops(model)
    assert result.passed and result.metrics["topk"] == 1


def test_topk_with_a_computed_k_is_refused():
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Slice", ["s", "one", "two"], ["k"]),
             helper.make_node("TopK", ["x", "k"], ["y", "i"], name="knn")]
    result = check_ops(graph_with(nodes, [const("one", [1]), const("two", [2])]))
    assert not result.passed and "computed K" in result.detail


def test_topk_above_tensorrts_limit_is_refused():
    model = graph_with([helper.make_node("TopK", ["x", "k"], ["y", "i"], name="big")], [const("k", [4096])])
    assert "exceeds TensorRT's 3840" in check_ops(model).detail


@pytest.mark.parametrize("op, inputs", [("OneHot", ["x", "depth", "values"]), ("ScatterND", ["x", "idx", "x"])])
def test_forbidden_ops_are_named(op, inputs):
    model = graph_with([helper.make_node(op, inputs, ["y"], name="bad")],
                       [const("depth", [4]), const("values", [0.0, 1.0], np.float32), const("idx", [[0]])])
    result = check_ops(model)
    assert not result.passed and f"{op} 'bad'" in result.detail


def test_opset_outside_18_to_20_and_custom_domains_are_refused():
    model = graph_with([helper.make_node("Relu", ["x"], ["y"])], opset=23)
    assert "opset 23" in check_ops(model).detail
    custom = graph_with([helper.make_node("FurthestPointSampling", ["x"], ["y"], domain="mmcv")])
    custom.opset_import.append(helper.make_opsetid("mmcv", 1))
    assert "custom domain 'mmcv'" in check_ops(custom).detail


def test_layer_norm_is_refused_for_trt85_only_and_opset17_only_where_the_target_takes_it():
    norm = [helper.make_node("LayerNormalization", ["x", "scale"], ["y"], name="ln")]
    model = graph_with(norm, [const("scale", np.ones(5), np.float32)], opset=17)
    assert check_ops(model, "trt10").passed and check_ops(model, "trt8.6").passed
    result = check_ops(model, "trt8.5")
    assert not result.passed and "LayerNormalization 'ln': TensorRT 8.5 has no importer" in result.detail
    at18 = graph_with([helper.make_node("Relu", ["x"], ["y"])], opset=18)
    assert "opset 18 (expected one of [17] for trt8.6)" in check_ops(at18, "trt8.6").detail


def run_unfused(model, x):
    """ONNX Runtime on the graph as written (its fusions would rebuild a LayerNormalization)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def reduce_graph(axes_input):
    """Opset 18: y = ReduceSum(ReduceMean(x, axes) ** 2, axes=[0]) with the given ReduceMean axes tensor."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [helper.make_node("ReduceMean", ["x", axes_input], ["m"], name="mean", keepdims=0),
             helper.make_node("Mul", ["m", "m"], ["sq"]),
             helper.make_node("ReduceSum", ["sq", "zero"], ["y"], name="sum", keepdims=0)]
    graph = helper.make_graph(nodes, "g", [x], [y], [const("axes", [1, 2]), const("zero", [0])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_opset17_conversion_makes_reduce_axes_attributes_and_keeps_the_values():
    pytest.importorskip("onnxruntime")
    model = reduce_graph("axes")
    converted = to_opset17(model)
    onnx.checker.check_model(converted, full_check=True)
    nodes = {n.name: n for n in converted.graph.node}
    mean = {a.name: helper.get_attribute_value(a) for a in nodes["mean"].attribute}
    assert converted.opset_import[0].version == 17 and list(nodes["mean"].input) == ["x"]
    assert mean["axes"] == [1, 2] and "noop_with_empty_axes" not in mean
    assert list(nodes["sum"].input) == ["sq", "zero"]  # ReduceSum took axes as an input from opset 13
    assert [i.name for i in converted.graph.initializer] == ["zero"]  # the moved axes tensor is gone
    assert check_reduce_axes(converted).passed
    x = np.random.default_rng(0).normal(size=(2, 3, 4)).astype(np.float32)
    np.testing.assert_array_equal(run_unfused(converted, x)[0], run_unfused(model, x)[0])


def test_computed_reduce_axes_are_refused_by_the_check_and_the_conversion():
    model = reduce_graph("axes_computed")
    model.graph.node.insert(0, helper.make_node("Identity", ["axes"], ["axes_computed"]))
    result = check_reduce_axes(model)
    assert not result.passed and "ReduceMean 'mean' axes 'axes_computed'" in result.detail
    with pytest.raises(FoundryError, match="cannot write this graph at opset 17.*--target trt10"):
        to_opset17(model)


@pytest.mark.parametrize("axis, bias", [(-1, True), (-2, False), (1, True)])
def test_layer_norm_decomposes_into_primitives_that_compute_the_same(axis, bias):
    pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(1)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4])
    shape = (3, 4)[axis:] if axis < 0 else (3, 4)[axis - 1:]
    params = [numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), "scale"),
              numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), "bias")]
    norm = helper.make_node("LayerNormalization", ["x", "scale"] + (["bias"] if bias else []), ["y"], name="ln",
                            axis=axis, epsilon=1e-3)
    model = helper.make_model(helper.make_graph([norm], "g", [x], [y], params),
                              opset_imports=[helper.make_opsetid("", 17)])
    data = (10 * rng.normal(size=(2, 3, 4)) + 3).astype(np.float32)
    reference = run_unfused(model, data)[0]
    decomposed = decompose_layer_norm(onnx.ModelProto.FromString(model.SerializeToString()))
    onnx.checker.check_model(decomposed, full_check=True)
    ops = [n.op_type for n in decomposed.graph.node]
    assert "LayerNormalization" not in ops and ops.count("ReduceMean") == 2 and ops.count("Add") == 1 + bias
    assert all(n.name.startswith("y/LayerNorm/") for n in decomposed.graph.node)
    np.testing.assert_allclose(run_unfused(decomposed, data)[0], reference, rtol=1e-5, atol=1e-5)


def test_compare_outputs_fails_nan_and_counts_assignment_agreement():
    ref = np.ones((2, 4), dtype=np.float32)
    got = ref.copy()
    got[0, 0] = np.nan
    assert output_metrics(ref, got) == {"nonfinite": 1}
    assert output_metrics(np.array([[0, 1, 2, 3]]), np.array([[0, 1, 2, 2]]))["agreement"] == 0.75
    close = output_metrics(ref, ref + 1e-3)
    assert close["max_abs"] == pytest.approx(1e-3, rel=1e-3) and close["cosine"] > 0.9999


def test_parity_marks_a_collapsed_assignment_uninformative_and_passes_equal_infinities():
    from types import SimpleNamespace

    from foundry_edge.export.validate import _judge
    from foundry_edge.runtimes.compare import TOLERANCES, assignment_figures

    config = SimpleNamespace(tolerances=TOLERANCES["export"])
    for assignment, collapsed in ((np.zeros((2, 8), np.int64), True), (np.tile(np.arange(4), (2, 2)), False)):
        metrics = {**output_metrics(assignment, assignment), **assignment_figures(assignment, assignment, None, 4)}
        ok, text = _judge("assignment", metrics, config)
        assert ok and metrics["informative"] is not collapsed and ("uninformative" in text) is collapsed
    margin = np.array([[np.inf, np.inf], [np.inf, np.inf]], np.float32)  # s = 1: no second SuperToken
    assert _judge("assignment_margin", output_metrics(margin, margin.copy()), config)[0]
    assert output_metrics(margin, np.ones_like(margin)) == {"nonfinite": 4}


def test_tensorrt_parser_check_names_what_it_refuses(tmp_path):
    pytest.importorskip("tensorrt_rtx", reason="tensorrt_rtx is not installed (see scripts/test.sh)")
    from foundry_edge.export.trt_check import check_with_tensorrt

    model = graph_with([helper.make_node("ScatterND", ["x", "idx", "upd"], ["y"], reduction="mul", name="scatter")],
                       [const("idx", [[0]]), const("upd", [[1.0] * 5], np.float32)])
    path = tmp_path / "bad.onnx"
    onnx.save(model, path)
    result = check_with_tensorrt(path)
    assert not result.passed and "scatter (ScatterND)" in result.detail()
    ok = tmp_path / "ok.onnx"
    onnx.save(graph_with([helper.make_node("Relu", ["x"], ["y"])]), ok)
    assert check_with_tensorrt(ok).passed


@pytest.mark.parametrize("flip_margin, passes", [(1e-6, True), (0.3, False)])
def test_parity_judges_a_cloud_with_a_near_tie_flip_by_cosine_and_fails_a_flip_at_a_clear_margin(flip_margin, passes):
    """Cloud 1's assignment flips one token (which moves its tokens a little); cloud 0 stays elementwise."""
    from types import SimpleNamespace

    import torch

    from foundry_edge.export.validate import _outputs_check
    from foundry_edge.runtimes.compare import TOLERANCES

    rng = np.random.default_rng(0)
    tokens = rng.normal(size=(2, 64, 8)).astype(np.float32)
    assignment = rng.integers(0, 4, size=(2, 64))
    margin = rng.uniform(0.1, 1.0, size=(2, 64)).astype(np.float32)
    margin[1, 5] = flip_margin
    got = {"tokens": tokens.copy(), "assignment": assignment.copy(), "assignment_margin": margin + 1e-6}
    got["assignment"][1, 5] = (assignment[1, 5] + 1) % 4
    got["tokens"][1] += 1e-3 * rng.normal(size=(64, 8)).astype(np.float32)  # every token of cloud 1 moves
    session = SimpleNamespace(run=lambda names, feed: [got[n] for n in names])
    config = SimpleNamespace(outputs=("tokens", "assignment", "assignment_margin"), tolerances=TOLERANCES["export"],
                             model=SimpleNamespace(num_supertokens=4))
    ref = {"tokens": torch.from_numpy(tokens), "assignment": torch.from_numpy(assignment),
           "assignment_margin": torch.from_numpy(margin)}
    result = _outputs_check("onnxruntime vs torch", session, {}, ref, config, (2, 1024))
    assert result.passed is passes
    assert ("1 assignment flips, all at near-ties" in result.detail) is passes
    if passes:  # cloud 0 judged elementwise: exact here
        assert result.metrics["outputs"]["tokens"]["max_abs"] == 0.0
    else:
        assert "not at a near-tie" in result.detail


def test_parity_of_clouds_all_judged_by_cosine_says_so_instead_of_a_zero_error():
    from types import SimpleNamespace

    import torch

    from foundry_edge.export.validate import _outputs_check
    from foundry_edge.runtimes.compare import TOLERANCES

    rng = np.random.default_rng(1)
    tokens = rng.normal(size=(1, 16, 4)).astype(np.float32)
    assignment, margin = rng.integers(0, 4, size=(1, 16)), rng.uniform(0.1, 1.0, size=(1, 16)).astype(np.float32)
    margin[0, 2] = 1e-7
    got = {"tokens": tokens + 1e-4, "assignment": assignment.copy(), "assignment_margin": margin + 1e-7}
    got["assignment"][0, 2] = (assignment[0, 2] + 1) % 4
    session = SimpleNamespace(run=lambda names, feed: [got[n] for n in names])
    config = SimpleNamespace(outputs=("tokens", "assignment", "assignment_margin"), tolerances=TOLERANCES["export"],
                             model=SimpleNamespace(num_supertokens=4))
    ref = {k: torch.from_numpy(v) for k, v in (("tokens", tokens), ("assignment", assignment),
                                                ("assignment_margin", margin))}
    result = _outputs_check("onnxruntime vs torch", session, {}, ref, config, (1, 1024))
    assert result.passed and "tokens cos" in result.detail and "(by cosine only)" in result.detail
    assert result.metrics["outputs"]["tokens"]["max_abs"] is None
