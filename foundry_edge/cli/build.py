"""`foundry-edge build MODEL.onnx --precision fp16`: a TensorRT plan, its sidecar JSON and trtexec line."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from foundry_edge.cli import options as opt


def register(app: typer.Typer) -> None:
    app.command("build")(build)


def build(
    onnx: Path = typer.Argument(..., help="The exported ONNX (its manifest beside it gives profiles and grouping)."),
    output: Optional[Path] = opt.output_file("the plan (default MODEL.<precision>.plan)"),
    precision: str = typer.Option("fp16", "--precision", help="fp32, fp16 or int8."),
    min_shapes: str = typer.Option("", "--min-shapes", help="trtexec-style, e.g. points:1x1024x3 (default: manifest)."),
    opt_shapes: str = typer.Option("", "--opt-shapes", help="Shapes TensorRT tunes for."),
    max_shapes: str = typer.Option("", "--max-shapes", help="Largest shapes the engine accepts."),
    workspace: Optional[int] = typer.Option(None, "--workspace", help="Builder workspace limit in MiB."),
    opt_level: Optional[int] = typer.Option(None, "--opt-level", help="Builder optimisation level 0-5 (TensorRT >= 8.6)."),
    timing_cache: Optional[Path] = typer.Option(None, "--timing-cache", help="Read and update this timing cache file."),
    dla_core: Optional[int] = typer.Option(None, "--dla-core", help="Build for this DLA core (Jetson AGX/NX)."),
    allow_gpu_fallback: bool = typer.Option(False, "--allow-gpu-fallback", help="Run layers the DLA cannot take on the GPU."),
    calib: List[str] = typer.Option([], "--calib", help="Clouds (files, folders or 'synthetic') for an implicit INT8 calibrator (TensorRT <= 10)."),
    calib_cache: Optional[Path] = typer.Option(None, "--calib-cache", help="INT8 calibration cache to read or write."),
    calib_method: str = typer.Option("entropy", "--calib-method", help="entropy or minmax."),
    verbose: bool = typer.Option(False, "--verbose", help="TensorRT's verbose log."),
    trt_module: Optional[str] = typer.Option(None, "--trt-module", help="Python module to build with (tensorrt_rtx: graph checks only)."),
) -> None:
    """Build a TensorRT engine on this device (plans are tied to the GPU and the TensorRT version)."""
    from foundry_edge.calibration.engine_inputs import EngineInputsFromOnnx
    from foundry_edge.runtimes.build import BuildConfig, onnx2engine, parse_shapes

    config = BuildConfig(precision=precision, min_shapes=parse_shapes(min_shapes), opt_shapes=parse_shapes(opt_shapes),
                         max_shapes=parse_shapes(max_shapes), workspace_mib=workspace, opt_level=opt_level,
                         timing_cache=timing_cache, dla_core=dla_core, allow_gpu_fallback=allow_gpu_fallback,
                         calib_cache=calib_cache, calib_method=calib_method, verbose=verbose, trt_module=trt_module)
    plan = output or onnx.with_name(f"{onnx.stem}.{precision}.plan")
    # The FP16 conversion, the FP32 nodes and the calibration feed are calibration's; the builder only builds.
    result = onnx2engine(onnx, plan, config, EngineInputsFromOnnx(calib=list(calib)), log=typer.echo)
    typer.echo(f"wrote {result.plan} ({result.plan_bytes / 2**20:.1f} MiB) in {result.seconds:.1f} s")
    typer.echo(f"wrote {result.sidecar} and {result.trtexec}")
    typer.echo("trtexec equivalent: " + result.trtexec.read_text().strip())
