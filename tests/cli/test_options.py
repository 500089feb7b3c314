"""A shared option means the same thing in every command that takes it, and a renamed one still works.

Each forwarding test stops the command at the API call the option feeds (a fake that records its
arguments and raises `Reached`), so nothing is exported, measured or trained.
"""

from __future__ import annotations

import typing
from types import SimpleNamespace

import pytest

from foundry_edge.cli import app, main
from foundry_edge.cli import options as opt


class Reached(Exception):
    """Raised by a fake API call once it has recorded what the command passed."""


def _commands() -> dict:
    import typer.main

    return typer.main.get_command(app).commands


def _visible(flag: str) -> dict:
    """command name -> its visible (not deprecated) parameter spelled `flag`."""
    found = {}
    for name, command in _commands().items():
        for param in command.params:
            if flag in getattr(param, "opts", []) and not getattr(param, "hidden", False):
                found[name] = param
    return found


def _help(option) -> str:
    return option.help


# Each shared spelling -> the help texts it may carry: one meaning (a comma list only where a command measures
# each value, a default spelled out only where it differs).
SHARED = {
    "--points": {_help(opt.POINTS), _help(opt.POINT_COUNTS)},
    "--batch": {_help(opt.batch(1))},
    "--set": {_help(opt.SET)},
    "--seed": {_help(opt.SEED)},
    "--samples": {_help(opt.samples(None))},
    "--data": {_help(opt.data("synthetic")), _help(opt.data(["synthetic"]))},
    "--drop-invalid": {_help(opt.DROP_INVALID)},
    "--no-sidecar-check": {_help(opt.NO_SIDECAR_CHECK)},
    "--threads": {_help(opt.THREADS)},
    "--runtime": {_help(opt.RUNTIME), _help(opt.runtimes("torch"))},
}


@pytest.mark.parametrize("flag", sorted(SHARED))
def test_a_shared_option_has_one_help_text(flag):
    found = _visible(flag)
    assert len(found) >= 2, f"{flag} is shared by fewer than two commands: {sorted(found)}"
    for name, param in found.items():
        assert param.help in SHARED[flag], f"`{name} {flag}` has its own meaning: {param.help}"


def test_out_is_a_folder_and_output_a_file_everywhere():
    folders, files = _visible("--out"), _visible("--output")
    assert {"profile", "accuracy", "sweep", "distill", "finetune", "evaluate", "export"} <= set(folders)
    assert {"run", "build", "calibrate", "convert"} <= set(files)
    assert all(p.help.startswith("Folder to write to:") and "-o" in p.opts for p in folders.values())
    assert all(p.help.startswith("File to write:") and "-o" in p.opts for p in files.values())


def test_batch_is_one_number_of_clouds_per_call_everywhere():
    commands = _commands()
    for name, param in _visible("--batch").items():
        hints = typing.get_type_hints(commands[name].callback)
        assert hints[param.name] is int, f"`{name} --batch` is not a number of clouds per call"


def _stop(monkeypatch, target: str, record: dict, *, returns=None):
    """Replace `module.attr` with a fake that records its arguments and raises Reached (or returns `returns`)."""
    module, _, attr = target.rpartition(".")

    def fake(*args, **kwargs):
        record.update(kwargs, args=args)
        if returns is not None:
            return returns
        raise Reached

    monkeypatch.setattr(f"{module}.{attr}", fake)


def _reach(argv: list[str]) -> None:
    with pytest.raises(Reached):
        main(argv)


@pytest.fixture
def onnx_file(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"")
    return path


# command -> (how to stop it where --points/--batch/--seed arrive, argv before the options, the keyword each feeds)
def _cases(onnx_file):
    return {
        "export": ("foundry_edge.export.export_model", ["export", "foundry-edge16"],
                   lambda r: vars(r["args"][0]), {"--points": "num_points", "--seed": "seed"}),
        "calibrate": ("foundry_edge.calibration.workflow.calibrate", ["calibrate", str(onnx_file), "--data", "synthetic"],
                      lambda r: vars(r["args"][0]), {"--points": "points", "--batch": "batch", "--seed": "seed"}),
        "accuracy": ("foundry_edge.calibration.workflow.evaluate", ["accuracy", str(onnx_file)],
                     lambda r: r, {"--points": "points"}),
        "sweep": ("foundry_edge.profiling.sweep.SweepConfig", ["sweep"],
                  lambda r: r, {"--points": "points", "--batch": "batch", "--seed": "seed", "--threads": "threads"}),
        "profile": ("foundry_edge.profiling.ProfileConfig", ["profile", "--student", str(onnx_file)],
                    lambda r: r, {"--threads": "threads"}),
        "inspect": ("foundry_edge.cli.inspect.describe", ["inspect", "foundry-edge16"],
                    lambda r: dict(zip(("spec", "points", "overrides", "health", "limit", "seed"), r["args"])),
                    {"--points": "points", "--seed": "seed"}),
    }


@pytest.mark.parametrize("command", ["export", "calibrate", "accuracy", "sweep", "profile", "inspect"])
def test_each_command_forwards_a_shared_option_as_its_api_keyword(command, onnx_file, monkeypatch):
    target, argv, keywords, feeds = _cases(onnx_file)[command]
    for flag, keyword in feeds.items():
        record: dict = {}
        _stop(monkeypatch, target, record)
        _reach([*argv, flag, "7"])
        assert keywords(record)[keyword] == 7, f"`{command} {flag} 7` did not reach {keyword}"


def test_profile_takes_lists_of_points_and_batches(onnx_file, monkeypatch):
    record: dict = {}
    _stop(monkeypatch, "foundry_edge.profiling.ProfileConfig", record)
    _reach(["profile", "--student", str(onnx_file), "--points", "256,512", "--batches", "1,8", "--seed", "7"])
    assert record["points"] == [256, 512] and record["batches"] == [1, 8]
    assert record["students"][0].seed == 7


def test_finetune_forwards_points_to_the_training_data(monkeypatch, tmp_path):
    record: dict = {}
    model = SimpleNamespace(config=SimpleNamespace(num_points=1024))
    monkeypatch.setattr("foundry_edge.checkpoints.resolve.load_model", lambda spec, **kw: (model, {}))
    _stop(monkeypatch, "foundry_edge.training.data.open_training_data", record)
    _reach(["finetune", "default", "--points", "7", "--out", str(tmp_path / "ft")])
    assert record["args"][2] == 7  # open_training_data(data, split, num_points, samples, seed)


# -- renamed options: the old spelling still works, with one yellow line ------------------------------------------

def test_export_batch_is_the_deprecated_trace_batch(monkeypatch, capsys):
    record: dict = {}
    _stop(monkeypatch, "foundry_edge.export.export_model", record)
    _reach(["export", "foundry-edge16", "--batch", "3", "--output-dir", "somewhere"])
    options = record["args"][0]
    assert (options.batch, options.output_dir) == (3, "somewhere")
    err = capsys.readouterr().err
    assert "--batch in export is deprecated: use --trace-batch (it goes in 0.3)" in err
    assert "--output-dir in export is deprecated: use --out (it goes in 0.3)" in err
    _reach(["export", "foundry-edge16", "--trace-batch", "4", "-o", "there"])
    assert (record["args"][0].batch, record["args"][0].output_dir) == (4, "there")
    assert "deprecated" not in capsys.readouterr().err
    _reach(["export", "foundry-edge16"])
    assert record["args"][0].batch == 2


def test_profile_batch_is_the_deprecated_batches(onnx_file, monkeypatch, capsys):
    record: dict = {}
    _stop(monkeypatch, "foundry_edge.profiling.ProfileConfig", record)
    _reach(["profile", "--student", str(onnx_file), "--batch", "1,8"])
    assert record["batches"] == [1, 8]
    assert "--batch in profile is deprecated: use --batches (it goes in 0.3)" in capsys.readouterr().err
    _reach(["profile", "--student", str(onnx_file)])
    assert record["batches"] == [1]


def test_convert_out_is_the_deprecated_output(monkeypatch, tmp_path, capsys):
    pytest.importorskip("torch")
    src = tmp_path / "src.pt"
    src.write_bytes(b"")
    record: dict = {}
    _stop(monkeypatch, "foundry_edge.fileio.refuse_overwrite", record)
    _reach(["convert", str(src), "--out", str(tmp_path / "new.pt")])
    assert record["args"][0] == tmp_path / "new.pt"
    assert "--out in convert is deprecated: use --output (it goes in 0.3)" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["distill", "finetune"])
def test_training_warmup_is_the_deprecated_warmup_steps(command, monkeypatch, tmp_path, capsys):
    record: dict = {}
    _stop(monkeypatch, "foundry_edge.cli.train._train_config", record)
    model = [] if command == "distill" else ["default"]
    _reach([command, *model, "--warmup", "5", "--out", str(tmp_path / "o")])
    assert record["args"][4] == 5  # _train_config(steps, batch_size, lr, weight_decay, warmup_steps, ...)
    assert f"--warmup in {command} is deprecated: use --warmup-steps (it goes in 0.3)" in capsys.readouterr().err
    _reach([command, *model, "--out", str(tmp_path / "o")])
    assert record["args"][4] == 50


def test_both_spellings_at_once_are_refused(capsys):
    assert main(["export", "foundry-edge16", "--batch", "3", "--trace-batch", "4"]) == 2
    assert "error: --batch is the old spelling of --trace-batch in export, and both were given: pass --trace-batch " \
           "only" in capsys.readouterr().err


def test_deprecated_spellings_are_hidden_from_help(capsys):
    for command, old in (("export", "--batch"), ("export", "--output-dir"), ("profile", "--batch"),
                         ("convert", "--out"), ("distill", "--warmup")):
        assert main([command, "--help"]) == 0
        shown = capsys.readouterr().out
        assert f"{old} " not in shown.replace(f"{old}-", ""), f"{command} --help shows {old}"
