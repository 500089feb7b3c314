"""The README and scripts/demo.sh only name commands and options the CLI really has."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from foundry_edge.cli import app, main

ROOT = Path(__file__).resolve().parents[1]


def _documented_invocations() -> list[list[str]]:
    """Every `foundry-edge ...` line in README code blocks and in scripts/demo.sh, as argv lists."""
    text = ROOT.joinpath("README.md").read_text() + "\n" + ROOT.joinpath("scripts", "demo.sh").read_text()
    text = text.replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        for match in re.finditer(r"foundry-edge ([a-z][a-z-]*)([^`#|;&]*)", line):
            words = shlex.split(match.group(0).replace("$", "X").replace('"', ""), posix=True)[1:]
            found.append(words)
    return found


def _commands() -> dict:
    import typer.main

    group = typer.main.get_command(app)
    return group.commands


def test_readme_and_demo_name_real_commands_and_options():
    commands = _commands()
    invocations = _documented_invocations()
    assert len(invocations) > 10
    for words in invocations:
        name = words[0]
        if name not in commands:  # prose such as "foundry-edge takes a ..."
            continue
        known = {opt for param in commands[name].params for opt in getattr(param, "opts", []) +
                 getattr(param, "secondary_opts", [])}
        for word in words[1:]:
            if word.startswith("--"):
                assert word.split("=")[0] in known, f"`foundry-edge {name}` has no option {word}"


@pytest.mark.parametrize("name", ["inspect", "export", "verify", "calibrate", "profile", "build", "doctor"])
def test_demo_commands_have_help(name, capsys):
    assert main([name, "--help"]) == 0
    assert "Usage" in capsys.readouterr().out


def test_bundled_default_is_what_the_demo_exports(capsys):
    assert main(["inspect", "default", "--json"]) == 0
    assert '"kind": "student"' in capsys.readouterr().out
