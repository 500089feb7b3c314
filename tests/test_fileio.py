"""Atomic writes: an interrupted or impossible write leaves no partial file and says why in one line."""

from __future__ import annotations

import pytest

from foundry_edge.errors import FoundryError
from foundry_edge.fileio import atomic_path, write_text_atomic


def test_interrupted_write_leaves_nothing(tmp_path):
    target = tmp_path / "model.onnx"
    with pytest.raises(KeyboardInterrupt):  # what SIGINT raises in the middle of an export
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half a model")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_interrupted_rewrite_keeps_the_old_file(tmp_path):
    target = write_text_atomic(tmp_path / "report.json", "old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("new, unfinished")
            raise KeyboardInterrupt
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_output_under_a_file_is_a_foundry_error(tmp_path):
    blocker = write_text_atomic(tmp_path / "plain.txt", "x")
    with pytest.raises(FoundryError, match="expected a writable folder.*a file, not a folder"):
        write_text_atomic(blocker / "out.json", "{}")
    with pytest.raises(FoundryError, match="expected a writable folder.*Not a directory"):
        write_text_atomic(blocker / "sub" / "out.json", "{}")


def test_ctrl_c_in_a_command_is_one_error_line_and_exit_130(monkeypatch, capsys):
    import foundry_edge.cli.inspect as inspect_cmd
    from foundry_edge.cli import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(inspect_cmd, "describe", interrupted)
    assert main(["inspect", "foundry-s16"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: interrupted (outputs are written atomically: nothing partial was left behind)"]
