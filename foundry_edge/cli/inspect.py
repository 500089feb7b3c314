"""`foundry-edge inspect NAME_OR_CHECKPOINT [--json]`: architecture, parameters and FLOPs."""

from __future__ import annotations

import json
from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect)


def inspect(
    model: str = typer.Argument(..., help="A preset name (or 'all'), 'default', or a checkpoint file."),
    points: Optional[int] = typer.Option(None, "--points", help="Points per cloud to count FLOPs at (default: the model's)."),
    set_: List[str] = typer.Option([], "--set", help="Override a preset field, e.g. --set num_supertokens=8."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Print a model's configuration, parameter count and FLOPs per cloud."""
    from rich.console import Console
    from rich.table import Table

    from foundry_edge.errors import FoundryError
    from foundry_edge.models.config import parse_overrides
    from foundry_edge.models.registry import list_presets

    if points is not None and points < 1:
        raise FoundryError(f"expected --points of at least 1, got {points}: drop it to use the model's")
    names = list_presets() if model == "all" else [model]
    overrides = parse_overrides(set_)
    rows = [describe(name, points, overrides) for name in names]
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


def describe(spec: str, points: int | None, overrides: dict) -> dict:
    """Everything `inspect` reports for one model, as a JSON-ready dict."""
    from foundry_edge.models.flops import measure_cost
    from foundry_edge.resolve import load_model

    model, info = load_model(spec, **overrides)
    if points and points != model.config.num_points:
        from foundry_edge.models.config import scaled_groups

        if info["source"] == "checkpoint":
            model.tokenizer.num_groups = scaled_groups(model.config, points)
        else:
            model, info = load_model(spec, **{**overrides, "num_points": points})
    cost = measure_cost(model, points)
    return {"name": model.config.name, "source": info, "num_points": cost.num_points, "params": cost.params,
            "flops": cost.flops, "gflops": cost.flops / 1e9, "config": model.config.to_dict()}
