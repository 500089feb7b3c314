"""The `foundry-edge` command line: a thin layer over the Python API.

Each command lives in its own module in this folder with a `register(app)` function, and imports its
heavy dependencies (torch, onnxruntime, tensorrt) inside the command, so `foundry-edge doctor` and the
engine commands start on a Jetson without torch.
"""

from __future__ import annotations

import importlib
import sys

import typer

from foundry_edge.errors import FoundryError

app = typer.Typer(
    name="foundry-edge",
    help="Distilled 3D foundation models (Foundry) from PyTorch to ONNX, TensorRT and the edge.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# One module per command (or group of closely related commands), in the order `--help` lists them.
COMMAND_MODULES = [
    "inspect",
    "convert",
    "export",
    "profile",
    "train",
    "build",
    "run",
    "verify",
    "doctor",
    "calibrate",
    "sweep",
]

for _name in COMMAND_MODULES:
    importlib.import_module(f"foundry_edge.cli.{_name}").register(app)


INTERRUPTED = "error: interrupted (outputs are written atomically: nothing partial was left behind)"


@app.callback()
def _root() -> None:
    """Distilled 3D foundation models (Foundry) from PyTorch to ONNX, TensorRT and the edge."""


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; a `FoundryError` becomes one line on stderr and a non-zero exit."""
    try:
        app(args=argv, prog_name="foundry-edge")  # standalone: typer reports usage errors itself
    except SystemExit as exc:  # typer turns Ctrl-C into exit code 130 without a word
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if code == 130:
            typer.echo(INTERRUPTED, err=True)
        return code
    except FoundryError as exc:
        typer.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        typer.echo(INTERRUPTED, err=True)
        return 130
    return 0


def entry() -> None:
    sys.exit(main())
