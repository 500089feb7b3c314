"""What `foundry-edge build` prepares for the TensorRT builder, which only builds (runtimes/build.py).

The builder asks for its EngineInputs once it knows the model and whether its TensorRT is strongly typed:
    strongly typed (TensorRT 11), fp16:  an FP16 ONNX with the sensitive nodes in FP32 (fp16.py), kept
                                         beside the plan and written with it as one set
    weakly typed (<= 10), fp16 / int8:   the nodes to pin to FP32 (graph.py), found by structure
    int8 from an FP32 ONNX (<= 10):      `--calib` clouds drawn at the model's size, as the calibrator's feed
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence

from foundry_edge.calibration.feeds import Feed
from foundry_edge.errors import FoundryError
from foundry_edge.fileio import refuse_overwrite
from foundry_edge.runtimes.build import BuildContext, EngineInputs


@dataclass
class EngineInputsFromOnnx:
    """The builder's EngineInputs from the exported ONNX: the constructor stores the options, calling prepares.

        onnx2engine(onnx, plan, BuildConfig(precision="int8"), EngineInputsFromOnnx(calib=["synthetic"]))
    """

    calib: Sequence[str] = ()  # clouds for an implicit INT8 calibrator (TensorRT <= 10): files, folders, 'synthetic'
    calib_samples: int = 64

    def __call__(self, build: BuildContext) -> EngineInputs:
        if self.calib and build.precision != "int8":
            raise FoundryError("conflicting build options: --calib/--calib-cache need --precision int8")
        for written in build.outputs:
            refuse_overwrite(written, self.calib, option="the plan" if written == build.plan else "the build's output")
        if build.strongly_typed:
            wants_fp16 = build.precision == "fp16" and build.info.precision != "fp16"
            return fp16_onnx(build) if wants_fp16 else EngineInputs()
        fp32 = fp32_node_names(build.onnx) if build.precision != "fp32" else []
        feed = None
        if self.calib and build.info.precision != "int8":
            feed = calibration_feed(build, self.calib, self.calib_samples)
        return EngineInputs(fp32_layers=fp32, calib_feed=feed)


def fp16_onnx(build: BuildContext) -> EngineInputs:
    """The FP16 conversion strongly typed TensorRT parses, staged beside the plan (model.fp16.plan ->
    model.fp16.onnx, kept for trtexec)."""
    from foundry_edge.calibration.fp16 import convert_to_fp16

    path = build.plan.with_suffix(".onnx")
    if path.resolve() == build.onnx.resolve():  # model.onnx -> model.engine must not overwrite its source
        path = build.plan.with_suffix(".fp16.onnx")
    build.log(f"converting to an FP16 ONNX for strongly typed TensorRT: {path.name}")
    kept = convert_to_fp16(build.onnx, build.stage(path))["fp32_nodes"]
    build.log(f"kept {len(kept)} sensitive nodes in FP32 (LayerNorm, softmax, decision inputs)")
    return EngineInputs(onnx=path, notes={"fp16_onnx": path.name, "fp32_nodes": len(kept)})


def fp32_node_names(onnx_path: Path) -> List[str]:
    """The ONNX nodes the calibration keeps in full precision, so INT8, FP16 and TensorRT agree on them."""
    import onnx

    from foundry_edge.calibration.graph import ensure_node_names, find_exclusions

    model = onnx.load(str(onnx_path), load_external_data=False)
    ensure_node_names(model)
    return sorted(find_exclusions(model).nodes)


def calibration_feed(build: BuildContext, calib: Sequence[str], samples: int) -> List[Feed]:
    """`calib` clouds drawn once at the model's point count (not drawn at 1024 and resampled again) and fed
    as its manifest's preprocessing says."""
    from foundry_edge.calibration.feeds import prepare, preprocessing_from
    from foundry_edge.data.loader import CloudLoader

    pre = preprocessing_from(build.info.manifest)
    clouds = CloudLoader(list(calib), pre.num_points, samples, split="calibration", min_points=pre.group_size or 1)()
    return prepare(clouds, pre, [spec.name for spec in build.info.inputs])
