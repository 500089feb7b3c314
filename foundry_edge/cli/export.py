"""`foundry-edge export CHECKPOINT_OR_PRESET [-o DIR]`: a checked ONNX + manifest.json (and the teacher's).

The options map one to one onto foundry_edge.export.ExportOptions; contradicting ones are refused
there. Each step says what it runs with and how long it took; a table of checks follows, and the last
line says PASSED or FAILED.
"""

from __future__ import annotations

from typing import List, Optional

import typer

from foundry_edge.cli import options as opt


def register(app: typer.Typer) -> None:
    app.command("export")(export)


def export(
    model: str = typer.Argument(..., help="A preset name, 'default', or a checkpoint file."),
    out: Optional[str] = opt.out_dir(None, "model.onnx and its manifest (default out/<model>)"),
    output_dir: Optional[str] = opt.deprecated("--output-dir"),
    teacher: Optional[str] = typer.Option(None, "--teacher", help="Also export this teacher (preset, 'default-teacher' or checkpoint)."),
    set_: List[str] = opt.SET,
    teacher_set: List[str] = typer.Option([], "--teacher-set", help="Override a field of a teacher preset."),
    target: str = typer.Option("trt10", "--target", help="TensorRT on the device: trt8.5 (JetPack 5.1), trt8.6 (6.0), "
                               "trt10 (6.1-7.2), trt11; picks the opset and the graph rewrites."),
    opset: Optional[int] = typer.Option(None, "--opset", help="ONNX opset (default: the target's): 17 for trt8.x; "
                                        "18, 19, 20 or 17 for trt10/trt11."),
    points: Optional[int] = opt.POINTS,
    trace_batch: Optional[int] = typer.Option(None, "--trace-batch", help="Clouds in the example batch the export "
                                              "traces (default 2; the batch itself with --static-batch)."),
    batch: Optional[int] = opt.deprecated("--batch"),
    static: bool = typer.Option(False, "--static", help="Static batch and point count."),
    dynamic_batch: Optional[bool] = typer.Option(None, "--dynamic-batch/--static-batch", help="Batch axis (default: dynamic)."),
    dynamic_points: Optional[bool] = typer.Option(None, "--dynamic-points/--static-points",
                                                  help="Point axis (default: dynamic with graph grouping)."),
    max_batch: int = typer.Option(8, "--max-batch", help="TensorRT profile max batch."),
    max_points: Optional[int] = typer.Option(None, "--max-points", help="TensorRT profile max points (default 4 x points)."),
    outputs: Optional[str] = typer.Option(None, "--outputs", help="Comma-separated outputs, e.g. tokens,assignment,logits "
                                          "(default: all the model has; with --teacher, the teacher exports those it has)."),
    grouping: str = opt.GROUPING,
    grouping_for: Optional[str] = typer.Option(None, "--grouping-for", help="With --grouping auto: the runtime the "
                                               "export is for (default trt, which the export targets)."),
    simplify: bool = typer.Option(True, "--simplify/--no-simplify", help="Simplify with onnxsim (else onnxslim)."),
    check: bool = typer.Option(True, "--check/--no-check", help="ONNX Runtime vs PyTorch at two shapes."),
    trt_check: str = typer.Option("auto", "--trt-check", help="TensorRT parser check: auto|on|off."),
    keep_failed: bool = typer.Option(False, "--keep-failed", help="Keep a failed export as *.failed.onnx."),
    seed: int = opt.SEED,
) -> None:
    """Export a model to ONNX with a manifest.json, checked against PyTorch (and TensorRT's parser)."""
    from rich.console import Console

    from foundry_edge.export import ExportCheckError, ExportOptions, export_model
    from foundry_edge.models.config import parse_overrides

    console = Console(highlight=False, soft_wrap=True)  # long paths and trtexec lines stay copyable
    output_dir = opt.renamed("export", "--output-dir", "--out", output_dir, out, None)
    batch = opt.renamed("export", "--batch", "--trace-batch", batch, trace_batch, 2)
    options = ExportOptions(
        model=model, output_dir=output_dir, teacher=teacher, overrides=parse_overrides(set_),
        teacher_overrides=parse_overrides(teacher_set), target=target, opset=opset, num_points=points, batch=batch,
        static=static, dynamic_batch=dynamic_batch, dynamic_points=dynamic_points, max_batch=max_batch,
        max_points=max_points,
        outputs=tuple(o.strip() for o in outputs.split(",") if o.strip()) if outputs is not None else None,
        grouping=grouping, grouping_for=grouping_for, simplify=simplify, check=check, trt_check=trt_check, keep_failed=keep_failed, seed=seed)
    try:
        result = export_model(options, log=console.print)
    except ExportCheckError as exc:
        print_summary(console, exc.result)
        console.print("FAILED")
        raise
    print_summary(console, result)
    console.print("PASSED")


def print_summary(console, result) -> None:
    """One table of checks per artifact, then the trtexec shapes for its profile."""
    from rich.table import Table

    from foundry_edge.contracts.trtexec import trtexec_shapes

    for artifact in result.artifacts:
        where = str(artifact.onnx_path) if artifact.onnx_path else "not written"
        table = Table(title=f"{artifact.role}: {artifact.manifest['model']['name']} -> {where}")
        for column in ("check", "result", "detail"):
            table.add_column(column)
        for c in artifact.checks:
            table.add_row(c.name, "skipped" if c.skipped else ("ok" if c.passed else "FAILED"), c.detail)
        console.print(table)
        shapes = trtexec_shapes(artifact.manifest)
        if artifact.onnx_path and shapes:
            console.print(f"trtexec --onnx={artifact.onnx_path} {shapes}")
