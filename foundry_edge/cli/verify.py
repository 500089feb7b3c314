"""`foundry-edge verify MODEL --against REFERENCE`: both on the same clouds, judged per output; PASSED/FAILED."""

from __future__ import annotations

import json
from typing import List, Optional

import typer

from foundry_edge.cli import options as opt
from foundry_edge.cli.dropped import note_dropped
from foundry_edge.cli.options import say_unchecked, say_weights


def register(app: typer.Typer) -> None:
    app.command("verify")(verify)


def verify(
    model: str = typer.Argument(..., help="The model under test: ONNX, plan, preset or checkpoint."),
    against: str = typer.Option(..., "--against", help="The reference: usually the preset or checkpoint it came from."),
    clouds: List[str] = typer.Option([], "--clouds", help="Cloud files to compare on (default: synthetic shapes)."),
    samples: int = opt.samples(8),
    batch: int = opt.batch(4),
    runtime: Optional[str] = opt.RUNTIME,
    reference_runtime: Optional[str] = typer.Option(None, "--reference-runtime", help="Runtime for the reference."),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp32, fp16 or int8 tolerances (default: the model's)."),
    set_: List[str] = opt.SET,
    as_json: bool = typer.Option(False, "--json", help="Print the checks as JSON before the verdict."),
    drop_invalid: bool = opt.DROP_INVALID,
    seed: int = opt.SEED,
    no_sidecar_check: bool = opt.NO_SIDECAR_CHECK,
) -> None:
    """Compare a model against a reference: max abs/rel error, cosine, assignment and top-1 agreement.

    Beside the assignment agreement: the flip rate, the agreement on the reference's near-ties (lowest
    10 % assignment margin) and the reference's SuperToken usage; a collapsed reference is flagged.
    """
    from foundry_edge.errors import FoundryError
    from foundry_edge.contracts.artifacts import PRESET_SEED
    from foundry_edge.data.loader import CloudLoader
    from foundry_edge.runtimes import model_kind
    from foundry_edge.runtimes.compare import tolerance, verify as verify_runtimes

    overrides = opt.overrides_of(set_)
    kinds = (model_kind(model), model_kind(against))
    if overrides and "torch" not in kinds:
        raise FoundryError("--set overrides apply to presets, and neither side is one: drop --set")
    if seed != PRESET_SEED and "torch" not in kinds:
        raise FoundryError("--seed draws a preset's weights, and neither side is one: drop --seed")
    if no_sidecar_check and "plan" not in kinds:
        raise FoundryError("--no-sidecar-check applies to TensorRT plans, and neither side is one: drop it")
    say_unchecked(typer.echo, no_sidecar_check)
    for exported, preset in ((model, against), (against, model)):
        refuse_other_seed(exported, preset, seed)

    def opts(spec):
        return {"torch": {"overrides": overrides, "seed": seed},
                "plan": {"sidecar_check": not no_sidecar_check}}.get(model_kind(spec), {})

    with opt.open_model(against, reference_runtime, **opts(against)) as ref, \
            opt.open_model(model, runtime, **opts(model)) as test:
        for spec, rt in ((against, ref), (model, test)):
            say_weights(typer.echo, spec, rt)
        wanted = precision or test.precision
        tolerance(wanted)
        num_points = test.num_points or ref.num_points
        typer.echo(f"reference {against} on {ref.provider}; model {model} on {test.provider}; {wanted} tolerances")
        loader = CloudLoader(clouds, num_points, None if clouds else samples, split="verify",
                             min_points=max(test.group_size or 1, ref.group_size or 1), drop_invalid=drop_invalid)
        with note_dropped(typer.echo):
            loader()
        typer.echo(f"comparing on {len(loader)} clouds of {num_points} points ({'files' if clouds else 'synthetic shapes'})")
        report = verify_runtimes(test, ref, loader, batch, wanted)
    print_checks(report.checks)
    if as_json:
        typer.echo(json.dumps([c.to_dict() for c in report.checks], indent=2))
    typer.echo("PASSED" if report.passed else "FAILED")
    if not report.passed:
        raise typer.Exit(1)


def refuse_other_seed(exported: str, preset: str, seed: int) -> None:
    """An ONNX exported from a preset with another --seed holds other random weights than the preset drawn with
    this one: say so instead of failing every output."""
    from foundry_edge.errors import FoundryError
    from foundry_edge.contracts.artifacts import model_kind

    if model_kind(exported) != "onnx" or model_kind(preset) != "torch":
        return
    from foundry_edge.contracts.manifest import read_manifest
    from foundry_edge.models.registry import PRESETS

    if preset not in PRESETS:
        return
    manifest = read_manifest(exported) or {}
    source = ((manifest.get("model") or {}).get("checkpoint") or {}).get("source") or ""
    used = (manifest.get("export_options") or {}).get("seed")
    if source.startswith(f"preset:{preset} ") and used is not None and used != seed:
        raise FoundryError(f"{exported} was exported from the preset {preset} with --seed {used}, and the preset is "
                           f"drawn here with --seed {seed}: pass --seed {used} to compare the same weights")


def print_checks(checks) -> None:
    from rich.console import Console
    from rich.table import Table

    from foundry_edge.assignment_health import describe

    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    table = Table(title="verify")
    for column in ("output", "shape", "max abs", "max rel", "cosine", "agreement", "flips", "low-margin agr.",
                   "top-1", "result"):
        table.add_column(column, justify="left" if column in ("output", "result") else "right")
    for c in checks:
        table.add_row(c.name, "x".join(map(str, c.shape)), fmt(c.max_abs, ".2e"), fmt(c.max_rel, ".2e"),
                      fmt(c.cosine, ".6f"), fmt(c.agreement, ".4f"), fmt(c.flip_rate, ".4f"),
                      fmt(c.low_margin_agreement, ".4f"), fmt(c.top1, ".4f"),
                      ("ok" if c.passed else "FAIL") + (f" ({c.detail})" if c.detail else ""))
    console = Console(width=160)
    console.print(table)
    for c in checks:
        if c.health is not None:
            console.print(f"assignment health of the reference: {describe(c.health)}", highlight=False)
