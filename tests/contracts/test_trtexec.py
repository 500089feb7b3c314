"""trtexec shape flags, spelled as trtexec parses them."""

from __future__ import annotations

from foundry_edge.contracts.trtexec import shape_flags, trtexec_shapes


def test_shape_flags_list_every_input_per_flag():
    shapes = {"neighbourhoods": ((1, 64, 32, 3), (2, 64, 32, 3), (8, 64, 32, 3)),
              "centers": ((1, 64, 3), (2, 64, 3), (8, 64, 3))}
    assert shape_flags(shapes) == ["--minShapes=neighbourhoods:1x64x32x3,centers:1x64x3",
                                   "--optShapes=neighbourhoods:2x64x32x3,centers:2x64x3",
                                   "--maxShapes=neighbourhoods:8x64x32x3,centers:8x64x3"]


def test_a_static_manifest_needs_no_shape_flags():
    assert trtexec_shapes({"inputs": [{"name": "points", "dtype": "float32", "shape": [1, 1024, 3]}],
                           "profiles": {}}) == ""
