"""Options several commands share, with one help text each: a preset's seed and --no-sidecar-check."""

from __future__ import annotations

from typing import Callable

import typer

from foundry_edge.checkpoints.resolve import PRESET_SEED

SEED = typer.Option(PRESET_SEED, "--seed", help=f"Seed of a preset's random weights (default {PRESET_SEED} in "
                    "every command, so a preset names the same weights in export, run, verify and inspect).")
NO_SIDECAR_CHECK = typer.Option(False, "--no-sidecar-check", help="TensorRT plans: load without checking the plan "
                                "against its sidecar (SHA-256, TensorRT version, GPU); only for a plan you know fits.")


def say_weights(echo: Callable[[str], None], spec: str, runtime) -> None:
    """One line for a preset on the torch runtime: its weights are random, drawn from this seed."""
    info = runtime.info if runtime.name == "torch" else {}
    if info.get("source") == "preset":
        echo(f"{spec}: preset with {info['weights']} (--seed)")


def say_unchecked(echo: Callable[[str], None], no_sidecar_check: bool) -> None:
    from foundry_edge.contracts.sidecar import UNCHECKED

    if no_sidecar_check:
        echo(f"warning: {UNCHECKED}")
