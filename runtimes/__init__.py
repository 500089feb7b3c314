"""The base backend layer: one Runtime interface over PyTorch, ONNX Runtime and TensorRT, the TensorRT
engine builder and its INT8 calibrator (docs/contracts.md, "Runtimes").

    with open_runtime("model.onnx") as rt:     # or a .plan/.engine, or a model object already in memory
        out = rt.infer(points)                  # (B, N, 3) raw clouds -> {"tokens": (B, G, D), ...}

    base.py        Runtime: load / infer(feed) -> dict / close, feeds checked against TensorSpecs
    pytorch.py     TorchRuntime over a built model (checkpoints.resolve.open_model loads presets, checkpoints)
    ort.py, trt.py ONNX Runtime and TensorRT; trt_compat.py holds every TensorRT version branch,
                   cuda_host.py the cuda-python / PyCUDA host
    build.py       onnx2engine: ONNX -> plan + sidecar + trtexec line, from what the caller prepared
                   (EngineInputs: the ONNX to parse, FP32 layers, a calibration feed)
    calibrator.py  TensorRT <= 10's implicit INT8 calibrator over a feed
    compare.py     one comparator of output dicts, knowing nothing of backends

These modules take files, feeds and built objects: they import no export, calibration, training, models
or checkpoints. Backends are imported when chosen, so the TensorRT path never imports torch or onnxruntime.
"""

from __future__ import annotations

from pathlib import Path

from foundry_edge.contracts.artifacts import PLAN_SUFFIXES, RUNTIMES, VALID, model_kind  # noqa: F401 (re-exported)
from foundry_edge.errors import FoundryError
from foundry_edge.runtimes.base import Runtime, TensorSpec


def open_runtime(path_or_model, runtime: str | None = None, **opts) -> Runtime:
    """A (not yet loaded) Runtime for a model file or a model object; `runtime` defaults by kind: torch,
    ort-cpu or trt. A preset, 'default' or a checkpoint is opened by checkpoints.resolve.open_model.

    `opts` go to the backend: torch (device, threads, info), ort (optimization, threads), trt
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
        if isinstance(path_or_model, (str, Path)):
            raise FoundryError(f"expected a model file (.onnx, .plan) or a model object, found {str(path_or_model)!r} "
                               "(a preset or checkpoint, which the runtimes do not load): open it with "
                               "foundry_edge.checkpoints.resolve.open_model")
        from foundry_edge.runtimes.pytorch import TorchRuntime

        return TorchRuntime(path_or_model, **opts)
    if runtime == "trt":
        from foundry_edge.runtimes.trt import TrtRuntime

        opts.pop("threads", None)  # host threads do not apply: TensorRT runs on the GPU
        return TrtRuntime(path_or_model, **opts)
    from foundry_edge.runtimes.ort import OrtRuntime

    return OrtRuntime(path_or_model, runtime, **opts)


__all__ = ["RUNTIMES", "Runtime", "TensorSpec", "open_runtime", "model_kind"]
