"""One Runtime interface over PyTorch, ONNX Runtime and TensorRT (docs/contracts.md, "Runtimes").

    with open_runtime("model.onnx") as rt:     # or a preset, a checkpoint, a .plan/.engine
        out = rt.infer(points)                  # (B, N, 3) raw clouds -> {"tokens": (B, G, D), ...}

Backends are imported when chosen, so the TensorRT path never imports torch or onnxruntime.
"""

from __future__ import annotations

from pathlib import Path

from foundry_edge.contracts.artifacts import PLAN_SUFFIXES, RUNTIMES, VALID, model_kind  # noqa: F401 (re-exported)
from foundry_edge.errors import FoundryError
from foundry_edge.runtimes.base import Runtime, TensorSpec



def open_runtime(path_or_model, runtime: str | None = None, **opts) -> Runtime:
    """A (not yet loaded) Runtime for a model; `runtime` defaults by kind: torch, ort-cpu or trt.

    `opts` go to the backend: torch (device, overrides, threads, seed), ort (optimization, threads), trt
    (cuda_graph, trt_module, cuda, sidecar_check).
    """
    kind = model_kind(path_or_model)
    runtime = runtime or VALID[kind][0]
    if runtime not in RUNTIMES:
        raise FoundryError(f"expected a runtime in {RUNTIMES}, got {runtime!r}")
    if runtime not in VALID[kind]:
        hint = "build an engine with `foundry-edge build`" if runtime == "trt" else "export it with `foundry-edge export`"
        raise FoundryError(f"a {kind} model runs on {', '.join(VALID[kind])}, not {runtime}: {hint}, "
                           "or pick a matching --runtime")
    if runtime == "torch":
        from foundry_edge.runtimes.pytorch import TorchRuntime

        return TorchRuntime(str(path_or_model) if isinstance(path_or_model, Path) else path_or_model, **opts)
    if runtime == "trt":
        from foundry_edge.runtimes.trt import TrtRuntime

        opts.pop("threads", None)  # host threads do not apply: TensorRT runs on the GPU
        return TrtRuntime(path_or_model, **opts)
    from foundry_edge.runtimes.ort import OrtRuntime

    return OrtRuntime(path_or_model, runtime, **opts)


__all__ = ["RUNTIMES", "Runtime", "TensorSpec", "open_runtime", "model_kind"]
