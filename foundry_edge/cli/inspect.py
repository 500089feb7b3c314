"""`foundry-edge inspect NAME_OR_CHECKPOINT [--json] [--health DATA]`: architecture, parameters and FLOPs,
and with --health the SuperToken assignment health on held-out clouds (eval mode, as inference runs)."""

from __future__ import annotations

import json
from typing import List, Optional

import typer

from foundry_edge.cli import options as opt
from foundry_edge.contracts.artifacts import PRESET_SEED


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect)


def inspect(
    model: str = typer.Argument(..., help="A preset name (or 'all'), 'default', or a checkpoint file."),
    points: Optional[int] = opt.POINTS,
    set_: List[str] = opt.SET,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    health: Optional[str] = typer.Option(None, "--health", help="Run the model (eval mode) on held-out clouds of "
                                         "DATA ('synthetic' or a data-set path, split test) and report how it spreads "
                                         "tokens over SuperTokens."),
    limit: int = typer.Option(100, "--limit", help="Held-out clouds for --health."),
    seed: int = opt.SEED,
) -> None:
    """Print a model's configuration, parameter count and FLOPs per cloud (and its assignment health)."""
    from rich.console import Console
    from rich.table import Table

    from foundry_edge.errors import FoundryError
    from foundry_edge.models.config import parse_overrides
    from foundry_edge.models.registry import list_presets

    if points is not None and points < 1:
        raise FoundryError(f"expected --points of at least 1, got {points}: drop it to use the model's")
    if health is not None and (model == "all" or limit < 1):
        raise FoundryError(f"--health measures one model on --limit >= 1 clouds, got {model!r} and --limit {limit}: "
                           "name one model and a positive --limit")
    names = list_presets() if model == "all" else [model]
    overrides = parse_overrides(set_)
    rows = [describe(name, points, overrides, health, limit, seed) for name in names]
    if as_json:
        typer.echo(json.dumps(rows if model == "all" else rows[0], indent=2))
        return
    table = Table(title="foundry-edge models")
    for column in ("model", "kind", "points", "groups x size", "width x depth", "s", "params (M)", "GFLOPs/cloud"):
        table.add_column(column, justify="right" if column not in ("model", "kind") else "left")
    for r in rows:
        c = r["config"]
        table.add_row(r["name"], c["kind"] + ("" if c["kind"] == "teacher" else f" ({c['assigner']}{'+gate' if c['gate'] else ''})"),
                      str(r["num_points"]), f"{c['num_groups']} x {c['group_size']}", f"{c['embed_dim']} x {c['depth']}",
                      str(c["num_supertokens"]) if c["kind"] == "student" else "-",
                      f"{r['params'] / 1e6:.2f}", f"{r['gflops']:.3f}")
    Console().print(table)
    if health is not None:
        print_health(rows[0])


def describe(spec: str, points: int | None, overrides: dict, health: str | None, limit: int, seed: int = PRESET_SEED) -> dict:
    """Everything `inspect` reports for one model, as a JSON-ready dict (`assignment_health` with --health)."""
    from foundry_edge.models.flops import measure_cost
    from foundry_edge.checkpoints.resolve import load_model

    model, info = load_model(spec, seed=seed, **overrides)
    if points and points != model.config.num_points:
        from foundry_edge.models.config import scaled_groups

        if info["source"] == "checkpoint":
            model.tokenizer.num_groups = scaled_groups(model.config, points)
        else:
            model, info = load_model(spec, seed=seed, **{**overrides, "num_points": points})
    cost = measure_cost(model, points)
    row = {"name": model.config.name, "source": info, "num_points": cost.num_points, "params": cost.params,
           "flops": cost.flops, "gflops": cost.flops / 1e9, "config": model.config.to_dict()}
    if health is not None:
        row["assignment_health"] = measure_health(model, health, cost.num_points, limit)
    return row


def measure_health(model, data: str, num_points: int, limit: int) -> dict | None:
    """Eval-mode assignment health on the first `limit` clouds of DATA's test split; None for a teacher."""
    from foundry_edge.training.data import open_training_data
    from foundry_edge.training.evaluate import collect, health_of

    if model.config.kind != "student":
        return None
    found = collect(model, open_training_data(data, "test", num_points), limit=limit)
    return {"data": data, "split": "test", **health_of(model, found)}


def print_health(row: dict) -> None:
    """The health lines under the table; the occupancy per SuperToken where s is small enough to read."""
    from foundry_edge.assignment_health import describe as describe_health

    health = row["assignment_health"]
    if health is None:
        typer.echo(f"{row['name']}: no assignment (a {row['config']['kind']} has no SuperTokens to assign tokens to)")
        return
    typer.echo(f"assignment health of {row['name']} (eval mode, {health['clouds']} clouds of {health['data']!r} "
               f"split {health['split']}): {describe_health(health)}")
    if health["num_supertokens"] <= 32:
        shares = " ".join(f"{k}:{100 * share:.0f}" for k, share in enumerate(health["occupancy"]))
        typer.echo(f"occupancy per SuperToken (% of fused tokens): {shares}")
