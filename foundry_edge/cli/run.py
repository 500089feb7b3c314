"""`foundry-edge run MODEL CLOUD...`: outputs of any runtime on point-cloud files, as a table or an .npz."""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import typer

from foundry_edge.cli import options as opt
from foundry_edge.cli.options import say_unchecked, say_weights


def register(app: typer.Typer) -> None:
    app.command("run")(run)


def run(
    model: str = typer.Argument(..., help="A preset, 'default', a checkpoint (.pt), an ONNX, or a TensorRT plan (.plan/.engine)."),
    clouds: List[Path] = typer.Argument(..., help="Point-cloud files (npy, ply, pcd, txt, las...)."),
    runtime: Optional[str] = opt.RUNTIME,
    output: Optional[Path] = opt.output_file("an .npz of the outputs and each cloud's origin"),
    batch: int = opt.batch(8),
    set_: List[str] = opt.SET,
    device: str = typer.Option("cpu", "--device", help="torch device (torch runtime only)."),
    cuda_graph: bool = typer.Option(False, "--cuda-graph", help="Replay a captured CUDA graph (trt runtime only)."),
    drop_invalid: bool = opt.DROP_INVALID,
    seed: int = opt.SEED,
    no_sidecar_check: bool = opt.NO_SIDECAR_CHECK,
) -> None:
    """Run a model on clouds: what was done to each cloud (read, dropped, recentred, resampled), a summary per
    output, the top class per cloud where there is a head (by name where the model has names), and a
    student's assignment health (SuperTokens used, entropy, largest share)."""
    import warnings

    import numpy as np

    from foundry_edge.data import CloudLoader, DroppedPoints
    from foundry_edge.runtimes.compare import run_batches

    if output is not None:
        from foundry_edge.fileio import refuse_overwrite

        refuse_overwrite(output, [*companions(model), *clouds])
    rt = opt.open_model(model, runtime, **backend_options(model, runtime, set_, device, cuda_graph, seed,
                                                      no_sidecar_check))
    say_unchecked(typer.echo, no_sidecar_check)
    with rt:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DroppedPoints)  # each cloud's line below says what was dropped
            read = CloudLoader([str(c) for c in clouds], rt.num_points, min_points=rt.group_size or 1,
                               drop_invalid=drop_invalid)()
        typer.echo(f"runtime {rt.name} on {rt.provider}; {len(read.points)} clouds at {rt.num_points} points")
        say_weights(typer.echo, model, rt)
        for note in read.notes():
            typer.echo(note)
        start = time.perf_counter()
        outputs = run_batches(rt, read.points, batch)
        seconds = time.perf_counter() - start
        class_names, num_supertokens = rt.class_names, rt.num_supertokens
        normalisation = rt.preprocessing.to_manifest()["normalize"]
    print_summary(outputs, read.names, class_names, num_supertokens)
    typer.echo(f"inference: {seconds * 1e3:.1f} ms for {len(read.points)} clouds")
    if output:
        from foundry_edge.fileio import atomic_path

        with atomic_path(output) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, clouds=np.array(read.names), origins=read.origins, **outputs)
        frame = {"centre-unit-sphere": "in the model's normalised frame (each cloud centred on its mean, radius 1)",
                 "none": "relative to origins"}.get(normalisation, "relative to origins unless the model normalises "
                                                                 "(unknown without a manifest)")
        typer.echo(f"wrote {output} ({output.stat().st_size / 1024:.1f} KiB): outputs, clouds and origins (B, 3) "
                   f"float64, each file's coordinates = the cloud the model saw + its origin; centers are {frame}")


def backend_options(model: str, runtime: Optional[str], set_: List[str], device: str, cuda_graph: bool,
                    seed: int, no_sidecar_check: bool) -> dict:
    """CLI options -> open_model keywords; options that do not apply to the chosen runtime are refused."""
    from foundry_edge.errors import FoundryError
    from foundry_edge.contracts.artifacts import PRESET_SEED
    from foundry_edge.runtimes import VALID, model_kind

    chosen = runtime or VALID[model_kind(model)][0]
    wrong = [flag for flag, given, valid in (("--set", bool(set_), "torch"), ("--device", device != "cpu", "torch"),
                                              ("--seed", seed != PRESET_SEED, "torch"),
                                              ("--cuda-graph", cuda_graph, "trt"),
                                              ("--no-sidecar-check", no_sidecar_check, "trt")) if given and chosen != valid]
    if wrong:
        raise FoundryError(f"{', '.join(wrong)} do not apply to the {chosen} runtime: drop them")
    if chosen == "torch":
        return {"device": device, "overrides": opt.overrides_of(set_), "seed": seed}
    return {"cuda_graph": cuda_graph, "sidecar_check": not no_sidecar_check} if chosen == "trt" else {}


def companions(model: str) -> List[Path]:
    """A model file and the files bound to it (an ONNX's manifest, a plan's sidecar): none may be overwritten."""
    from foundry_edge.contracts.manifest import manifest_path
    from foundry_edge.runtimes import model_kind
    from foundry_edge.contracts.sidecar import sidecar_path

    kind = model_kind(model)
    bound = {"onnx": [manifest_path(model)], "plan": [sidecar_path(model)]}.get(kind, [])
    return [Path(model), *bound] if Path(model).exists() else bound


def print_summary(outputs: dict, names: List[str], class_names, num_supertokens: Optional[int]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="outputs")
    for column in ("output", "shape", "dtype", "min", "mean", "max"):
        table.add_column(column, justify="left" if column in ("output", "dtype") else "right")
    for name, value in outputs.items():
        table.add_row(name, "x".join(map(str, value.shape)), str(value.dtype), f"{value.min():.4g}",
                      f"{value.astype('float64').mean():.4g}", f"{value.max():.4g}")
    Console().print(table)
    if "logits" in outputs:
        top = outputs["logits"].argmax(-1)
        for cloud, k in zip(names, top):
            label = f"{class_names[k]} (class {k})" if class_names and k < len(class_names) else f"class {k}"
            typer.echo(f"{cloud}: {label}")
    if "assignment" in outputs:
        from foundry_edge.assignment_health import assignment_health, describe

        typer.echo(f"assignment health: {describe(assignment_health(outputs['assignment'], num_supertokens))}")
