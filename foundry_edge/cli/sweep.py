"""`foundry-edge sweep`: the SuperToken trade-off as a Pareto front of latency (or energy) against accuracy."""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import typer

from foundry_edge.cli import options as opt


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep)


def sweep(
    teacher: str = typer.Option("default-teacher", "--teacher", help="Teacher: a preset, 'default-teacher' or a checkpoint."),
    student: str = typer.Option("foundry-edge16", "--student", help="Student preset (foundry-*); grouping and width come from the teacher."),
    supertokens: str = typer.Option("4,8,16,32", "--supertokens", help="Comma-separated SuperToken counts to distil (each <= the teacher's groups)."),
    gate_budget: str = typer.Option("", "--gate-budget", help="Comma-separated Foundry-Gate budgets: adds a gated entry per count and budget."),
    checkpoint: List[str] = typer.Option([], "--checkpoint", help="A student checkpoint to take as it is (repeatable); with --supertokens '' only these."),
    set_: List[str] = opt.SET,
    data: str = opt.data("synthetic"),
    samples: Optional[int] = opt.samples(None),
    test_samples: Optional[int] = typer.Option(None, "--test-samples", help="Synthetic only: held-out clouds (default 500)."),
    steps: int = typer.Option(150, "--steps", help="Distillation steps per entry."),
    finetune_steps: Optional[int] = typer.Option(None, "--finetune-steps", help="Classification-head fine-tune steps (default: --steps)."),
    batch_size: int = typer.Option(32, "--batch-size", help="Clouds per training step."),
    lr: float = typer.Option(1e-3, "--lr", help="Peak learning rate of distillation and fine-tune."),
    seed: int = opt.SEED,
    export: bool = typer.Option(True, "--export/--no-export", help="Export each entry to ONNX (needed for the ort-*/trt runtimes)."),
    runtime: str = opt.runtimes("ort-cpu"),
    points: Optional[int] = opt.POINTS,
    batch: int = opt.batch(1),
    warmup: float = typer.Option(0.2, "--warmup", help="Warm-up seconds before timing."),
    duration: float = typer.Option(1.0, "--duration", help="Timed seconds per measurement."),
    threads: Optional[int] = opt.THREADS,
    telemetry_ms: float = typer.Option(50.0, "--telemetry-ms", help="Power/clock/thermal sampling period while profiling (0: off)."),
    objective: str = typer.Option("latency", "--objective", help="The cost on the front: latency or energy (needs power telemetry)."),
    out: Path = opt.out_dir(Path("runs/sweep"), "sweep.json/.md/.html and profile/"),
    work: Optional[Path] = typer.Option(None, "--work", help="Folder for checkpoints, ONNX files and the profile cache (default OUT/work)."),
) -> None:
    """Distil a student per SuperToken count (and gate budget), measure accuracy and assignment health on
    held-out clouds, export, profile, and write the Pareto front with what it dominates."""
    from foundry_edge.cli.profile import _ints
    from foundry_edge.errors import FoundryError
    from foundry_edge.models.config import parse_overrides
    from foundry_edge.profiling.runner import default_threads
    from foundry_edge.profiling.sweep import SweepConfig, run_sweep
    from foundry_edge.profiling.sweep_report import write_sweep
    from foundry_edge.profiling.telemetry import describe

    config = SweepConfig(
        teacher=teacher, student=student, supertokens=_ints(supertokens, "--supertokens"),
        gate_budgets=_ints(gate_budget, "--gate-budget"), checkpoints=list(checkpoint), overrides=parse_overrides(set_),
        data=data, train_samples=samples, test_samples=test_samples, steps=steps, finetune_steps=finetune_steps,
        batch_size=batch_size, lr=lr, seed=seed, export=export,
        runtimes=opt.comma_list(runtime), points=points, batch=batch, warmup_s=warmup,
        duration_s=duration, threads=threads or default_threads(), telemetry_interval_s=telemetry_ms / 1e3,
        objective=objective, out_dir=out, work_dir=work)
    if not export and any(r != "torch" for r in config.runtimes):
        raise FoundryError(f"--no-export leaves nothing for {config.runtimes} to run: profile with --runtime torch "
                           "or drop --no-export")
    if objective == "energy" and not (telemetry_ms and energy_source()):
        raise FoundryError("--objective energy needs a power source, found none (" +
                           "; ".join(f"{k}: {v}" for k, v in describe("/")["sources"].items()) + "): use --objective latency")
    start = time.perf_counter()
    result = run_sweep(config, log=typer.echo)
    paths = write_sweep(result, config.out_dir)
    sizes = ", ".join(f"{p} ({p.stat().st_size / 1024:.0f} KiB)" for p in paths.values())
    typer.echo(f"sweep: wrote {sizes} in {(time.perf_counter() - start) / 60:.1f} min")
    for runtime_name, front in result["fronts"].items():
        typer.echo(f"sweep: {runtime_name} front {', '.join(front['front']) or 'empty'}; dominated "
                   + (", ".join(f"{k} (by {', '.join(v)})" for k, v in front["dominated"].items()) or "none"))
    failed = [row for row in result["rows"] if row["status"] != "ok"]
    typer.echo(f"{'PASSED' if not failed else 'FAILED'}: {len(result['rows']) - len(failed)} of {len(result['rows'])} entries measured"
               + "".join(f"; {row['entry']} failed at {row['stage']}" for row in failed))
    if failed:
        raise typer.Exit(1)


def energy_source() -> bool:
    """Whether a source that measures energy (anything but the clock-only ones) exists here."""
    from foundry_edge.profiling.telemetry import open_sources

    sources, _ = open_sources("/")
    for source in sources:
        source.close()
    return any(getattr(source, "total", None) for source in sources)
