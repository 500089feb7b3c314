"""`foundry-edge convert SRC [-o OUTPUT.pt] [--source student|ema] [--preset NAME] [--set FIELD=VALUE]`.

Imports a Point-JEPA, Point-MAE or Point-BERT checkpoint (or re-saves a foundry-edge one) and writes
it in foundry-edge's format, then reads the written file back and checks every tensor.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import typer

from foundry_edge.cli import options as opt
from foundry_edge.errors import FoundryError


def register(app: typer.Typer) -> None:
    app.command("convert")(convert)


def convert(
    src: Path = typer.Argument(..., help="A Point-JEPA .ckpt, Point-MAE / Point-BERT .pth, or foundry-edge .pt file."),
    output: Optional[Path] = opt.output_file("the checkpoint (default SRC.foundry-edge.pt beside SRC)"),
    out: Optional[Path] = opt.deprecated("--out"),
    source: str = typer.Option("student", "--source", help="Point-JEPA only: the online encoder (student) or its EMA copy (ema)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Fix the architecture to this preset and check the weights against it."),
    set_: List[str] = opt.SET,
) -> None:
    """Import a foreign checkpoint and save it in foundry-edge's format."""
    import torch

    from foundry_edge import __version__
    from foundry_edge.checkpoints.format import checkpoint_hash, save_checkpoint
    from foundry_edge.fileio import refuse_overwrite
    from foundry_edge.checkpoints.importers import import_checkpoint
    from foundry_edge.models.config import parse_overrides

    if not src.is_file():
        raise FoundryError(f"checkpoint {str(src)!r} does not exist or is not a file")
    out = opt.renamed("convert", "--out", "--output", out, output, None) or src.with_name(src.stem + ".foundry-edge.pt")
    refuse_overwrite(out, [src])
    overrides = parse_overrides(set_)
    typer.echo(f"converting {src} ({_size(src)}) with foundry-edge {__version__}, torch {torch.__version__}")
    start = time.perf_counter()
    model, report, layout = import_checkpoint(src, source=source, preset=preset, overrides=overrides)
    c = model.config
    forward = (", CLS token" if c.cls_token else "") + ("" if c.pos_every_block else ", positions added once")
    typer.echo(f"layout: {layout}" + (f" ({source})" if layout == "point-jepa" else "")
               + f"; model: {c.name} ({c.embed_dim} x {c.depth}, {c.num_heads} heads, {c.num_classes} classes{forward})")
    for line in report_lines(report):
        typer.echo(line)
    save_checkpoint(out, model, provenance={"source": str(src), "source_sha256": checkpoint_hash(src),
                                            "layout": layout, "weights": source})
    typer.echo(f"wrote {out} ({_size(out)}) in {time.perf_counter() - start:.1f} s")
    mismatched = _compare_saved(out, model)
    typer.echo(f"re-read {out}: " + ("every tensor equal: PASSED" if not mismatched
                                     else f"tensors differ ({', '.join(mismatched[:5])}): FAILED"))
    if mismatched:
        raise typer.Exit(1)


def report_lines(report) -> list[str]:
    """The load report as lines: counts, then every key that was not loaded, then notes."""
    lines = [report.summary()]
    for label, keys in (("missing", report.missing), ("unexpected", report.unexpected),
                        ("shape mismatch", report.mismatched)):
        if keys:
            more = f" ... and {len(keys) - 8} more" if len(keys) > 8 else ""
            lines.append(f"  {label}: {', '.join(keys[:8])}{more}")
    if report.ignored:
        lines.append(f"  ignored: {_grouped(report.ignored)}")
    lines += [f"  note: {note}" for note in report.notes]
    return lines


def _grouped(keys: list[str]) -> str:
    """["teacher.a.w", "teacher.b.w", "mask_token"] -> "teacher.* (2), mask_token"."""
    counts: dict[str, int] = {}
    for key in keys:
        group = key.split(".")[0] + ".*" if "." in key else key
        counts[group] = counts.get(group, 0) + 1
    return ", ".join(g if n == 1 and not g.endswith("*") else f"{g} ({n})" for g, n in counts.items())


def _compare_saved(path: Path, model) -> list[str]:
    """Keys whose tensors in the written file differ from the model's."""
    import torch

    from foundry_edge.checkpoints.importers import import_checkpoint

    saved, _, _ = import_checkpoint(path)
    theirs = saved.state_dict()
    return [k for k, v in model.state_dict().items() if k not in theirs or not torch.equal(v, theirs[k])]


def _size(path: Path) -> str:
    size = path.stat().st_size
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.1f} KiB"
