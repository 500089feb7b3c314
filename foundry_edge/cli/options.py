"""Options the commands share: one concept, one spelling, one help text, one API keyword.

Declared here once and grouped by concept, as Polygraphy groups its arguments, so `--batch` means
clouds per call wherever it appears. A default that differs by command comes through a small factory;
the meaning and the help stay the same. Each option and the keyword it feeds:

Model selection
    --set KEY=VALUE     SET            `overrides` (parse_overrides; open_model, load_model, ExportOptions,
                                       import_checkpoint, SweepConfig, distill)
    --seed N            SEED           `seed`
Input clouds
    --points N          POINTS         `num_points` (ExportOptions, open_training_data) and `points`
                                       (CalibrateConfig, evaluate, SweepConfig, ProfileConfig)
    --points N,M        POINT_COUNTS   `points` of ProfileConfig: the same points per cloud, one measurement each
    --batch N           batch()        `batch` (run_batches, verify, CalibrateConfig, SweepConfig)
    --batches N,M       BATCHES        `batches` of ProfileConfig: clouds per call, one measurement each
    --data SRC          data()         `data`
    --samples N         samples()      `samples` (train_samples in SweepConfig)
    --drop-invalid      DROP_INVALID   `drop_invalid`
Runtime
    --runtime NAME      RUNTIME        `runtime` of open_model
    --runtime A,B       runtimes()     `runtimes` of ProfileConfig and SweepConfig
    --threads N         THREADS        `threads`
    --no-sidecar-check  NO_SIDECAR_CHECK  `sidecar_check=False`
Output
    -o/--out DIR        out_dir()      `out_dir` (`output_dir` in ExportOptions)
    -o/--output FILE    output_file()  `output`

A renamed option keeps its old spelling as a hidden one (`deprecated`) that still works and says, in one
yellow line, what replaces it; `renamed` picks the value.
"""

from __future__ import annotations

from typing import Callable, Optional

import typer

from foundry_edge.contracts.artifacts import PRESET_SEED

# -- model selection -----------------------------------------------------------------------------------------

SET = typer.Option([], "--set", help="Override a model field, KEY=VALUE (repeatable), e.g. --set num_supertokens=8: "
                   "any field of a preset, or one an imported checkpoint's weights cannot tell.")
SEED = typer.Option(PRESET_SEED, "--seed", help=f"Seed of what the command draws at random: a preset's weights "
                    f"(default {PRESET_SEED} in every command, so a preset names the same weights in export, run, "
                    "verify, inspect and training), synthetic clouds, resampling and training noise.")

# -- input clouds ----------------------------------------------------------------------------------------------

POINTS = typer.Option(None, "--points", help="Points per cloud (default: the model's, or its manifest's).")
POINT_COUNTS = typer.Option("1024", "--points", help="Points per cloud, comma-separated: one measurement each "
                            "(groups scale as N/16).")
BATCHES = typer.Option(None, "--batches", help="Clouds per inference call, comma-separated: one measurement each "
                       "(default 1).")
DROP_INVALID = typer.Option(False, "--drop-invalid", help="Drop points with NaN/Inf (organised PCDs hold them) "
                            "instead of refusing the cloud; says how many were dropped.")


def batch(default: int):
    return typer.Option(default, "--batch", help="Clouds per inference call.")


def data(default):
    """`--data`: repeatable where the command takes a list (a list default or `...`)."""
    more = "" if isinstance(default, str) else " (repeatable)"
    return typer.Option(default, "--data", help="Clouds: 'synthetic', a ShapeNet55 folder, a folder of clouds or, "
                        f"where the command takes several, cloud files{more}.")


def samples(default: Optional[int]):
    return typer.Option(default, "--samples", help="How many clouds: the number drawn for 'synthetic', or an evenly "
                        "spaced subset of files or a data set where the command reads them.")


# -- runtime ----------------------------------------------------------------------------------------------------

RUNTIME = typer.Option(None, "--runtime", help="torch, ort-cpu, ort-cuda, ort-trt or trt (default: by file type).")
GROUPING = typer.Option("graph", "--grouping", help="Where FPS + kNN run: graph (inside the exported model), host "
                        "(numpy before it), or auto (the faster of the two as measured for the runtime and point count "
                        "in benchmarks/grouping_placement.py; it says what it chose).")
THREADS = typer.Option(None, "--threads", help="CPU threads for torch and ONNX Runtime (default: usable cores).")
NO_SIDECAR_CHECK = typer.Option(False, "--no-sidecar-check", help="TensorRT plans: load without checking the plan "
                                "against its sidecar (SHA-256, TensorRT version, GPU); only for a plan you know fits.")


def runtimes(default: str):
    return typer.Option(default, "--runtime", help="Comma-separated runtimes, one measurement each: torch, ort-cpu, "
                        "ort-cuda, ort-trt, trt.")


# -- output -----------------------------------------------------------------------------------------------------

def out_dir(default, writes: str):
    """`-o/--out`: the folder a command writes its set of files into."""
    return typer.Option(default, "-o", "--out", help=f"Folder to write to: {writes}.")


def output_file(writes: str):
    """`-o/--output`: the one file a command writes."""
    return typer.Option(None, "-o", "--output", help=f"File to write: {writes}.")


# -- renamed options --------------------------------------------------------------------------------------------

def deprecated(old: str):
    """The old spelling of a renamed option: hidden from --help, still accepted."""
    return typer.Option(None, old, hidden=True)


def renamed(command: str, old: str, new: str, old_value, new_value, default):
    """The value of an option renamed from `old` to `new` in `command`: the new spelling's, or the old one's with a
    yellow line saying what replaces it; both at once is refused."""
    from foundry_edge.errors import FoundryError

    if old_value is None:
        return default if new_value is None else new_value
    if new_value is not None:
        raise FoundryError(f"{old} is the old spelling of {new} in {command}, and both were given: pass {new} only")
    say_deprecated(command, old, new)
    return old_value


def say_deprecated(command: str, old: str, new: str) -> None:
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True).print(
        f"[yellow]{old} in {command} is deprecated: use {new} (it goes in 0.3)[/yellow]")


# -- lines several commands print -------------------------------------------------------------------------------

def open_model(spec: str, runtime: Optional[str], **opts):
    """The model a command names: an ONNX or a plan opens through the runtimes layer alone (a Jetson has neither
    torch nor the model package); a preset, `default` or a checkpoint loads through foundry_edge.checkpoints."""
    from foundry_edge.contracts.artifacts import model_kind

    if model_kind(spec) == "torch":
        from foundry_edge.checkpoints.resolve import open_model as load_and_open

        return load_and_open(spec, runtime, **opts)
    from foundry_edge.runtimes import open_runtime

    return open_runtime(spec, runtime, **opts)


def overrides_of(set_: list) -> dict:
    """--set key=value ... -> ModelConfig overrides; the model package is imported only when there are some."""
    if not set_:
        return {}
    from foundry_edge.models.config import parse_overrides

    return parse_overrides(set_)


def say_weights(echo: Callable[[str], None], spec: str, runtime) -> None:
    """One line for a preset on the torch runtime: its weights are random, drawn from this seed."""
    info = runtime.info if runtime.name == "torch" else {}
    if info.get("source") == "preset":
        echo(f"{spec}: preset with {info['weights']} (--seed)")


def say_unchecked(echo: Callable[[str], None], no_sidecar_check: bool) -> None:
    from foundry_edge.contracts.sidecar import UNCHECKED

    if no_sidecar_check:
        echo(f"warning: {UNCHECKED}")


def comma_list(text: str) -> list[str]:
    """'ort-cpu, torch' -> ['ort-cpu', 'torch']."""
    return [part.strip() for part in text.split(",") if part.strip()]

