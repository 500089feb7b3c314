"""Graph simplification: onnxsim where installed (it folds constants and fuses MatMul+Add into Gemm),
else onnxslim (pure Python, cleans up only). Both keep dynamic dims (docs/platform-notes.md, "Exporter
(torch.onnx dynamo)")."""

from __future__ import annotations

import importlib.util

from foundry_edge.errors import FoundryError


def simplifier_name() -> str | None:
    """'onnxsim', 'onnxslim' or None: the simplifier `simplify_onnx` would use here."""
    for name in ("onnxsim", "onnxslim"):
        if importlib.util.find_spec(name) is not None:
            return name
    return None


def simplify_onnx(model):
    """onnx.ModelProto -> (simplified ModelProto, 'onnxsim 0.8.1'-style label of what did it)."""
    name = simplifier_name()
    if name is None:
        raise FoundryError("no ONNX simplifier found (onnxsim or onnxslim); install "
                           "'foundry-edge[torch]' or export with --no-simplify")
    module = importlib.import_module(name)
    label = f"{name} {str(getattr(module, '__version__', '?')).lstrip('v')}"
    if name == "onnxsim":
        simplified, ok = module.simplify(model)
        if not ok:
            raise FoundryError(f"{label} could not verify the simplified graph; export with --no-simplify")
        return simplified, label
    return module.slim(model), label
