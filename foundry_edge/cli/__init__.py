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
# typer >= 0.26 carries its own copy of click, older typer re-exports click's: find the module it uses.
CLICK_ERRORS = importlib.import_module(typer.BadParameter.__module__)


@app.callback()
def _root() -> None:
    """Distilled 3D foundation models (Foundry) from PyTorch to ONNX, TensorRT and the edge."""


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; a `FoundryError`, a usage error or a signal becomes one line on stderr and a non-zero exit.

    Exit codes: 0 success, 1 a check FAILED, 2 refused input (FoundryError or usage), 130 SIGINT,
    143 SIGTERM, 129 SIGHUP.
    """
    from foundry_edge.interrupts import Interrupted, handled

    try:
        with handled():
            code = app(args=argv, prog_name="foundry-edge", standalone_mode=False)
    except CLICK_ERRORS.UsageError as exc:
        typer.echo(f"error: {_one_line(exc.format_message())}", err=True)
        if exc.ctx is not None:
            typer.echo(f"usage: {_usage(exc.ctx)} (--help for more)", err=True)
        return exc.exit_code
    except CLICK_ERRORS.ClickException as exc:  # e.g. a file typer could not open
        typer.echo(f"error: {_one_line(exc.format_message())}", err=True)
        return exc.exit_code
    except FoundryError as exc:
        typer.echo(f"error: {_one_line(str(exc))}", err=True)
        return exc.exit_code
    except (KeyboardInterrupt, typer.Abort):
        code = 130
    except Interrupted as exc:
        typer.echo(f"error: stopped by {exc} (outputs are written atomically: nothing partial was left behind)",
                   err=True)
        return exc.exit_code
    if code == 130:  # typer turns Ctrl-C into exit code 130 without a word
        typer.echo(INTERRUPTED, err=True)
    return code if isinstance(code, int) else 0


def _usage(ctx) -> str:
    """'foundry-edge run [OPTIONS] MODEL CLOUDS...': the command and its arguments, on one line."""
    arguments = [p.name.upper() + ("..." if p.nargs == -1 else "") for p in ctx.command.params
                 if p.param_type_name == "argument"]
    if hasattr(ctx.command, "commands"):  # the group itself: an unknown command
        arguments = ["COMMAND", "[ARGS]..."]
    return " ".join([ctx.command_path, "[OPTIONS]", *arguments])


def _one_line(message: str) -> str:
    return " ".join(message.split())


def entry() -> None:
    sys.exit(main())
