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


def _old_set(folder):
    for name in ("model.onnx", "model.manifest.json", "teacher.onnx", "teacher.manifest.json"):
        (folder / name).write_text(f"old {name}")
    return {p.name: p.read_text() for p in folder.iterdir()}


def test_a_set_goes_into_place_whole(tmp_path):
    from foundry_edge.fileio import OutputSet

    out = tmp_path / "out"
    with OutputSet("export", [out]) as outputs:
        for name in ("model.onnx", "model.manifest.json"):
            outputs.path(out / name).write_text(f"new {name}")
        assert (out / ".foundry-edge.lock").is_file() and not (out / "model.onnx").exists()
    assert sorted(p.name for p in out.iterdir()) == ["model.manifest.json", "model.onnx"]
    assert (out / "model.onnx").read_text() == "new model.onnx"


def test_an_error_while_staging_leaves_the_old_set_and_no_new_folder(tmp_path):
    from foundry_edge.fileio import OutputSet

    old = _old_set(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        with OutputSet("export", [tmp_path, tmp_path / "new" / "report"]) as outputs:
            for name in old:
                outputs.path(tmp_path / name).write_text("new, half of a set")
            raise KeyboardInterrupt
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == old


def test_a_failed_rename_rolls_the_set_back(tmp_path, monkeypatch):
    """The third of four renames fails (a full disk, a permission): the two already moved are put back."""
    import os

    from foundry_edge import fileio

    old = _old_set(tmp_path)
    real, calls = os.replace, []

    def flaky(src, dst):
        calls.append(dst)
        if len(calls) == 5:  # (old aside, new in) twice, then the third file's new copy
            raise OSError(28, "No space left on device")
        return real(src, dst)

    with pytest.raises(FoundryError, match="could not move the new files into place.*the old files are kept"):
        with fileio.OutputSet("export", [tmp_path]) as outputs:
            for name in old:
                outputs.path(tmp_path / name).write_text("new")
            monkeypatch.setattr(fileio.os, "replace", flaky)
    monkeypatch.undo()
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == old


def test_a_signal_during_the_renames_waits_for_them(tmp_path, monkeypatch):
    """SIGTERM at the first rename is held until every file of the set is in place, then raised: the folder
    holds the whole new set, never half of it."""
    import os
    import signal

    from foundry_edge import fileio
    from foundry_edge.interrupts import Interrupted, handled

    old = _old_set(tmp_path)
    real, sent = os.replace, []

    def signalling(src, dst):
        if not sent:
            sent.append(dst)
            os.kill(os.getpid(), signal.SIGTERM)
        return real(src, dst)

    with handled(), pytest.raises(Interrupted) as stopped:
        with fileio.OutputSet("export", [tmp_path]) as outputs:
            for name in old:
                outputs.path(tmp_path / name).write_text("new")
            monkeypatch.setattr(fileio.os, "replace", signalling)
    monkeypatch.undo()
    assert sent and stopped.value.exit_code == 143
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {name: "new" for name in old}
