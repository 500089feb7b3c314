"""`foundry-edge calibrate` (FP32 ONNX -> symmetric Q/DQ INT8 ONNX) and `foundry-edge accuracy`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from foundry_edge.cli import options as opt
from foundry_edge.cli.dropped import note_dropped


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate)
    app.command("accuracy")(accuracy)


def calibrate(
    model: Path = typer.Argument(..., help="The FP32 ONNX to quantize (its manifest beside it gives the preprocessing)."),
    data: List[str] = opt.data(...),
    samples: int = opt.samples(128),
    method: str = typer.Option("minmax", "--method", help="minmax, entropy or percentile."),
    output: Optional[Path] = opt.output_file("the INT8 ONNX (default MODEL.int8.onnx)"),
    exclude: List[str] = typer.Option([], "--exclude", help="Keep nodes in FP32: a node-name glob or an op type (repeatable)."),
    no_default_exclusions: bool = typer.Option(False, "--no-default-exclusions", help="Quantize the decision inputs, LayerNorm and Softmax too."),
    backend: str = typer.Option("ort", "--backend", help="ort (ONNX Runtime) or modelopt (NVIDIA ModelOpt, extra 'modelopt')."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Range cache (default OUTPUT.calib.json)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write a range cache."),
    batch: int = opt.batch(8),
    seed: int = opt.SEED,
    points: Optional[int] = opt.POINTS,
    grouping: Optional[str] = typer.Option(None, "--grouping", help="graph or host (only for a model without a manifest)."),
    groups: Optional[int] = typer.Option(None, "--groups", help="Groups G for host grouping (no manifest)."),
    group_size: Optional[int] = typer.Option(None, "--group-size", help="Points per group K for host grouping (no manifest)."),
    report: Optional[Path] = typer.Option(None, "--report", help="Folder for the FP32/FP16/INT8 accuracy report (JSON + Markdown, with the FP32 assignment's health)."),
    eval_data: List[str] = typer.Option([], "--eval-data", help="Held-out clouds for --report (default: --data's test split)."),
    eval_samples: int = typer.Option(64, "--eval-samples", help="Held-out clouds for --report."),
    sensitivity: bool = typer.Option(False, "--sensitivity", help="With --report: quantize one layer at a time and rank the cost."),
    drop_invalid: bool = opt.DROP_INVALID,
) -> None:
    """Quantize an FP32 ONNX to a symmetric Q/DQ INT8 ONNX that TensorRT 8.5-11 builds."""
    from foundry_edge.calibration.qdq import QuantizeOptions
    from foundry_edge.calibration.workflow import CalibrateConfig
    from foundry_edge.calibration.workflow import calibrate as run
    from foundry_edge.errors import FoundryError

    if no_cache and cache is not None:
        raise FoundryError("--cache and --no-cache contradict each other: pass one")
    config = CalibrateConfig(model=model, data=list(data), output=output, samples=samples, batch=batch, seed=seed,
                             points=points, grouping=grouping, groups=groups, group_size=group_size, report=report,
                             eval_data=list(eval_data) or None, eval_samples=eval_samples, sensitivity=sensitivity,
                             drop_invalid=drop_invalid)
    config.quantize = QuantizeOptions(
        method=method, exclude=list(exclude), default_exclusions=not no_default_exclusions, backend=backend,
        cache_path=None if no_cache else (cache or config.output_path.with_suffix(".calib.json")))
    summary = _with_progress(lambda on_feed, log: run(config, log, on_feed), samples)
    typer.echo("PASSED" if summary["passed"] else "FAILED (an accuracy target was missed: see the report)")
    if not summary["passed"]:
        raise typer.Exit(1)


def accuracy(
    model: Path = typer.Argument(..., help="The FP32 ONNX (the reference)."),
    int8: Optional[Path] = typer.Option(None, "--int8", help="The Q/DQ INT8 ONNX to judge."),
    fp16: Optional[Path] = typer.Option(None, "--fp16", help="The FP16 ONNX to judge (default: converted from MODEL)."),
    data: List[str] = opt.data(["synthetic"]),
    samples: int = opt.samples(64),
    out: Path = opt.out_dir(Path("accuracy"), "accuracy.json and accuracy.md"),
    points: Optional[int] = opt.POINTS,
    grouping: Optional[str] = typer.Option(None, "--grouping", help="graph or host (only for a model without a manifest)."),
    drop_invalid: bool = opt.DROP_INVALID,
) -> None:
    """FP32 vs FP16 vs INT8 on held-out clouds: token cosine, assignment and top-1 agreement, accuracy.

    The assignment agreement comes with its flip rate, the agreement on FP32's near-ties and the FP32
    assignment's health; a collapsed one is marked uninformative.
    """
    from foundry_edge.calibration.workflow import evaluate

    with note_dropped(_log):
        result = evaluate(model, int8, fp16, list(data), samples, out, log=_log, points=points, grouping=grouping,
                          drop_invalid=drop_invalid)
    typer.echo("PASSED" if result["passed"] else "FAILED (an accuracy target was missed: see the report)")
    if not result["passed"]:
        raise typer.Exit(1)


def _log(message: str) -> None:
    typer.echo(message, err=True)


def _with_progress(job, total: int):
    """Run job(on_feed, log) under a rich progress bar that counts calibration clouds."""
    import warnings

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True, soft_wrap=True)  # log lines stay whole, so paths and figures can be copied
    with Progress(TextColumn("calibrating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True, disable=not console.is_terminal) as bar, \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        task = bar.add_task("calibrating", total=total)
        with note_dropped(lambda message: console.print(message, markup=False, soft_wrap=True)):
            result = job(lambda feed: bar.advance(task, len(next(iter(feed.values())))),
                         lambda message: console.print(message, markup=False))
    for warning in caught:
        if "foundry_edge" in warning.filename or "calibration" in warning.filename:
            console.print(f"warning: {warning.message}", markup=False)
    return result
