"""`foundry-edge profile`: student against teacher, latency and memory, per runtime, points and batch."""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import typer

from foundry_edge.cli import options as opt
from foundry_edge.cli.options import say_unchecked


def register(app: typer.Typer) -> None:
    app.command("profile")(profile)


def _ints(text: str, option: str) -> list[int]:
    from foundry_edge.errors import FoundryError

    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise FoundryError(f"{option} takes comma-separated integers such as 1024,4096, got {text!r}") from None


def _bytes(text: str | None) -> int | None:
    """'4G', '512M', '1500000' -> bytes."""
    from foundry_edge.errors import FoundryError

    if text is None:
        return None
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    try:
        scale = units.get(text[-1].upper(), 1)
        return int(float(text[:-1] if text[-1].upper() in units else text) * scale)
    except (ValueError, IndexError):
        raise FoundryError(f"--memory-limit takes a size such as 4G or 512M, got {text!r}") from None


def _accuracy(pairs: list[str]) -> dict[str, float]:
    """['foundry-s16=91.5', ...] -> {'foundry-s16': 91.5}."""
    from foundry_edge.errors import FoundryError

    out = {}
    for pair in pairs:
        name, _, value = pair.rpartition("=")
        if not name or not value.replace(".", "", 1).isdigit():
            raise FoundryError(f"--accuracy takes MODEL=PERCENT such as foundry-s16=91.5, got {pair!r}")
        out[name] = float(value)
    return out


def profile(
    student: List[str] = typer.Option([], "--student", help="Student: preset, 'default', checkpoint, .onnx or .plan (repeatable)."),
    teacher: Optional[str] = typer.Option(None, "--teacher", help="Teacher to compare against (same forms as --student)."),
    runtime: str = opt.runtimes("torch"),
    points: str = opt.POINT_COUNTS,
    batches: Optional[str] = opt.BATCHES,
    batch: Optional[str] = opt.deprecated("--batch"),
    warmup: float = typer.Option(0.2, "--warmup", help="Warm-up seconds before timing (trtexec: 0.2)."),
    iterations: Optional[int] = typer.Option(None, "--iterations", help="Timed iterations (instead of --duration)."),
    duration: Optional[float] = typer.Option(None, "--duration", help="Timed seconds (default 3, trtexec's)."),
    threads: Optional[int] = opt.THREADS,
    timeout: float = typer.Option(600.0, "--timeout", help="Seconds before one measurement is stopped and recorded as timed out."),
    memory_limit: Optional[str] = typer.Option(None, "--memory-limit", help="Address-space limit per measurement (RLIMIT_AS), e.g. 8G."),
    grouping: str = opt.GROUPING,
    operators: bool = typer.Option(False, "--operators", help="Add ONNX Runtime's time by operator type and by stage (host preprocessing, grouping, network; ort-cpu), "
                                "and the speed-up with and without grouping."),
    telemetry_ms: float = typer.Option(50.0, "--telemetry-ms", help="Sample power, clocks and thermals every MS during each measurement (0: off)."),
    accuracy: List[str] = typer.Option([], "--accuracy", help="MODEL=PERCENT for the accuracy-vs-latency plot (repeatable)."),
    out: Path = opt.out_dir(Path("profile"), "report.json/.md/.html and the export cache"),
    seed: int = opt.SEED,
    no_sidecar_check: bool = opt.NO_SIDECAR_CHECK,
) -> None:
    """Profile students against a teacher: latency, throughput, memory, FLOPs and speed-up."""
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from foundry_edge.errors import FoundryError
    from foundry_edge.profiling import ProfileConfig, Subject, run_profile, total_steps, write_reports
    from foundry_edge.profiling.machine import versions

    from foundry_edge.fileio import OutputSet, refuse_overwrite

    batches = opt.renamed("profile", "--batch", "--batches", batch, batches, "1")
    refuse_overwrite(out, [spec for spec in [*student, teacher] if spec and Path(spec).exists()], folder=True)
    config = ProfileConfig(
        students=[Subject(spec, "student", seed=seed) for spec in student],
        teacher=Subject(teacher, "teacher", seed=seed) if teacher else None,
        runtimes=opt.comma_list(runtime), points=_ints(points, "--points"),
        batches=_ints(batches, "--batches"), warmup_s=warmup, iterations=iterations, duration_s=duration,
        **({"threads": threads} if threads is not None else {}), timeout_s=timeout,
        memory_limit_bytes=_bytes(memory_limit), out_dir=out, operators=operators,
        telemetry_interval_s=telemetry_ms / 1e3, accuracy=_accuracy(accuracy), sidecar_check=not no_sidecar_check, grouping=grouping)
    _check_memory(config)
    if no_sidecar_check and not any(s.format == "plan" for s in config.subjects):
        raise FoundryError("--no-sidecar-check applies to TensorRT plans, and no subject is a .plan: drop it")
    say_unchecked(typer.echo, no_sidecar_check)
    console = Console(stderr=True)
    presets = _presets(config)
    if presets:
        console.print(f"presets {', '.join(presets)}: random weights drawn from --seed {seed}", markup=False)
    libraries = {name: v for name, v in versions().items() if name in ("torch", "onnxruntime", "onnxruntime-gpu", "tensorrt")}
    console.print(f"profile: {', '.join(s.spec for s in config.subjects)} on {', '.join(config.runtimes)}, "
                  f"points {config.points}, batch {config.batches}, {config.threads} threads "
                  f"({', '.join(f'{k} {v}' for k, v in libraries.items())})", markup=False)
    start = time.perf_counter()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("profiling", total=total_steps(config))
        last = {"label": None}

        def step(label: str) -> None:
            if last["label"] is not None:
                bar.advance(task)
            last["label"] = label
            bar.update(task, description=label)

        report = run_profile(config, progress=step)
    with OutputSet("profile", [out]) as outputs:  # the three reports land together or not at all
        staged = write_reports(report, outputs.folder(out))
    paths = {kind: out / path.name for kind, path in staged.items()}
    measured = report["measurements"]
    failed = [m for m in measured if m.get("status") != "ok"]
    warned = {m["model"]: m["warning"] for m in report["models"] if m.get("warning")}
    for label, warning in warned.items():
        console.print(f"[yellow]warning[/yellow] {escape(label)}: {escape(warning)}", soft_wrap=True)
    for m in failed:
        console.print(f"[red]not measured[/red] {escape(m['model'])} {m['runtime']} N={m['points']} B={m['batch']}: "
                      f"{escape(m['error'])}")
    for m in measured:
        if (m.get("telemetry") or {}).get("valid") is False:
            console.print(f"[yellow]invalid[/yellow] {escape(m['model'])} {m['runtime']} N={m['points']} B={m['batch']}: "
                          f"{escape('; '.join(m['telemetry']['invalid_reasons']))}")
    for c in report["comparisons"]:
        console.print(f"{c['student']} vs {c['teacher']} {c['runtime']} N={c['points']} B={c['batch']}: "
                      f"{c['speedup']:.2f}x faster (FLOPs ratio {c['flops_ratio'] or float('nan'):.2f}x)")
    sizes = ", ".join(f"{p} ({p.stat().st_size / 1024:.0f} KiB)" for p in paths.values())
    console.print(f"wrote {sizes} in {time.perf_counter() - start:.1f} s", markup=False)
    typer.echo(f"{'PASSED' if not failed else 'FAILED'}: {len(measured) - len(failed)} of {len(measured)} measurements")
    if failed:
        raise typer.Exit(1)


def _presets(config) -> list:
    """Subjects that name a preset (not a file, not a bundled checkpoint): their weights are random."""
    torch_specs = [s.spec for s in config.subjects if s.format == "torch" and not Path(s.spec).exists()]
    if not torch_specs:
        return []  # files only: the checkpoints package (and with it the model package) stays unimported
    from foundry_edge.checkpoints.resolve import BUNDLED

    return [spec for spec in torch_specs if spec not in BUNDLED]


def _check_memory(config) -> None:
    """Refuse, before any export or measurement, a point count a model cannot run at in the memory available
    now (foundry_edge.models.memory.check_budget on each preset or checkpoint at its largest batch)."""
    if not any(subject.format == "torch" for subject in config.subjects):
        return  # ONNX files and plans: their own sizes, measured as they come
    from foundry_edge.errors import FoundryError
    from foundry_edge.models.memory import available_memory_bytes, check_budget
    from foundry_edge.profiling.subjects import build_model

    budget = available_memory_bytes()
    if budget is None:
        return
    for subject in config.subjects:
        if subject.format != "torch":
            continue  # an ONNX file or a plan: its own sizes, measured as they come
        try:
            model = build_model(subject.spec, min(config.points), subject.overrides)
        except (FoundryError, ImportError):
            continue  # a model that does not load (or lacks torch) is a row with its error, as the run reports it
        for points in config.points:
            check_budget(model.config.replace(num_points=points), budget, max(config.batches), "graph",
                         fix="profile fewer --points or smaller --batches")
