"""TensorRT layer names -> stages: fused names are taken apart into the ONNX nodes they name."""

import pytest

from foundry_edge.runtimes.trt_layers import layer_stage, stage_totals

GROUPING = frozenset({"/group/Sub", "/group/Mul", "/group/TopK", "/group/ArgMax_3"})
NETWORK = frozenset({"/encoder/MatMul", "/encoder/Softmax", "/head/Gemm"})


@pytest.mark.parametrize("layer, stage", [
    ("/group/TopK", "grouping"),
    ("PWN(/group/Sub, PWN(/group/Mul))", "grouping"),
    ("/group/ArgMax_3", "grouping"),          # a node name that itself ends in _<n>
    ("/group/TopK_1", "grouping"),            # the parser's second layer of one node
    ("{ForeignNode[/encoder/MatMul.../head/Gemm]}", "network"),
    ("/encoder/MatMul + /encoder/Softmax", "network"),
    ("/group/Mul + /encoder/MatMul", "mixed"),
    ("{ForeignNode[/group/TopK.../encoder/Softmax]}", "mixed"),
    ("Reformatting CopyNode for Input Tensor 0 to /encoder/MatMulX", "unattributed"),
    ("(Unnamed Layer* 12) [Shuffle]", "unattributed"),
    ("12", "unattributed"),                   # built with profiling verbosity NONE
])
def test_a_layer_is_attributed_by_the_nodes_its_name_holds(layer, stage):
    assert layer_stage(layer, GROUPING, NETWORK) == stage


def test_stage_totals_sum_each_stage_and_keep_every_millisecond():
    layer_ms = {"PWN(/group/Sub, /group/Mul)": 0.5, "/group/TopK": 0.25, "/encoder/MatMul + /encoder/Softmax": 2.0,
                "/group/Mul + /head/Gemm": 0.125, "Reformatting CopyNode": 0.0625}
    totals = stage_totals(layer_ms, {"grouping": sorted(GROUPING), "network": sorted(NETWORK)})
    assert totals == {"grouping": 0.75, "network": 2.0, "mixed": 0.125, "unattributed": 0.0625}
    assert stage_totals(layer_ms, {}) == {"grouping": 0.0, "network": 0.0, "mixed": 0.0, "unattributed": 2.9375}
