"""Checkpoint import: upstream layouts built by renaming a real PointModel, bad input, the convert CLI.

The upstream key layouts are written here from the upstream repositories' module names, independently
of foundry_edge.checkpoints.importers' tables, so a wrong table fails these tests.
"""

from __future__ import annotations

import argparse
import builtins
import importlib
import io
import os
import pickle
import re
import subprocess
import sys
import types
from collections import OrderedDict

import pytest
import torch

from foundry_edge.checkpoints.format import (FORMAT_VERSION, PLAIN_CONTAINERS, ForeignObjectsError, load_stubbing_foreign,
                                     save_checkpoint, torch_load_safe)
from foundry_edge.cli import main
from foundry_edge.errors import FoundryError
from foundry_edge.checkpoints.importers import detect_layout, import_checkpoint
from foundry_edge.models.registry import create_model
from foundry_edge.checkpoints.restricted_pickle import stubbing_module

from tests.conftest import tiny_overrides

# Settings a tiny upstream model had that its weights cannot tell (heads, grouping).
UNSTORED = dict(num_heads=3, num_groups=16, group_size=8, num_points=256)

JEPA = [(r"^tokenizer\.encoder\.", "tokenizer.embedding.encoder."), (r"^pos_embed\.", "positional_encoding."),
        (r"^encoder\.", "student.")]
MAE = [(r"^tokenizer\.encoder\.", "MAE_encoder.encoder."), (r"^pos_embed\.", "MAE_encoder.pos_embed."),
       (r"^encoder\.blocks\.", "MAE_encoder.blocks.blocks."), (r"^encoder\.norm\.", "MAE_encoder.norm.")]
# Fine-tuned PointTransformer (Point-MAE and Point-BERT): top-level keys; cls_token, cls_pos keep their names.
MAE_FINETUNED = [(r"^tokenizer\.encoder\.", "encoder."), (r"^encoder\.blocks\.", "blocks.blocks."),
                 (r"^encoder\.norm\.", "norm."), (r"^cls_head\.layers\.", "cls_head_finetune.")]
BERT_FINETUNED = [(r"^tokenizer\.(encoder|reduce_dim)\.", r"\1."), *MAE_FINETUNED[1:]]
BERT = [(r"^tokenizer\.(encoder|reduce_dim)\.", r"transformer_q.\1."), (r"^pos_embed\.", "transformer_q.pos_embed."),
        (r"^encoder\.blocks\.", "transformer_q.blocks.blocks."), (r"^encoder\.norm\.", "transformer_q.norm."),
        (r"^cls_(token|pos)$", r"transformer_q.cls_\1")]


def upstream(state: dict, rules, prefix: str = "") -> OrderedDict:
    """Our keys -> an upstream layout's keys; every key must match one rule (pos_embed, cls_* may stay)."""
    out = OrderedDict()
    for key, value in state.items():
        for pattern, repl in rules:
            if re.match(pattern, key):
                key = re.sub(pattern, repl, key)
                break
        else:
            assert key.startswith("pos_embed.") or key in ("cls_token", "cls_pos"), key
        out[prefix + key] = value.clone()
    return out


def tiny(preset: str, seed: int, **extra):
    torch.manual_seed(seed)
    model = create_model(preset, **{**tiny_overrides(preset), **extra})
    for module in model.modules():  # non-trivial BatchNorm statistics, so a missed buffer shows
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.uniform_(-0.5, 0.5), module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def assert_same_model(imported, reference, clouds, reference_state=None):
    ours, theirs = imported.state_dict(), reference_state or reference.state_dict()
    assert set(ours) == set(theirs)
    for key in theirs:
        assert torch.equal(ours[key], theirs[key]), key
    points = torch.from_numpy(clouds)
    with torch.no_grad():
        got, want = imported(points), reference(points)
    assert set(got) == set(want)
    for key in want:
        assert torch.equal(got[key], want[key]), key


def lightning_ckpt(state: dict, **hparams) -> dict:
    """What a Lightning checkpoint holds beside the weights, as plain containers."""
    return {"epoch": 7, "global_step": 840, "pytorch-lightning_version": "2.1.3", "state_dict": state,
            "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 8}}}},
            "callbacks": {"ModelCheckpoint{'monitor': None}": {"best_model_path": "", "dirpath": "/runs"}},
            "optimizer_states": [{"state": {0: {"step": torch.tensor(840.0)}},
                                  "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "params": [0]}]}],
            "lr_schedulers": [{"last_epoch": 7}], "hparams_name": "kwargs",
            "hyper_parameters": {"encoder_dim": 48, "encoder_depth": 2, "encoder_heads": 3, "tokenizer_num_groups": 16,
                                 "tokenizer_group_size": 8, "transformation_subsample_points": 256,
                                 "target_sample_ratio": (0.15, 0.2), **hparams}}


def jepa_state(model, ema_model=None) -> OrderedDict:
    state = upstream(model.state_dict(), JEPA)
    ema = (ema_model or model).state_dict()
    state.update(("teacher.ema_model." + k[len("encoder."):], v.clone()) for k, v in ema.items() if k.startswith("encoder."))
    state["predictor.blocks.0.norm1.weight"] = torch.ones(24)
    state["mask_token"] = torch.zeros(48)
    return state


# -- imports -------------------------------------------------------------------------------------
def test_point_jepa_lightning_ckpt_imports_exactly(tmp_path, clouds):
    model = tiny("pointjepa-vits", 0)
    path = tmp_path / "pretrain.ckpt"
    torch.save(lightning_ckpt(jepa_state(model, tiny("pointjepa-vits", 1))), path)
    imported, report, layout = import_checkpoint(path)
    assert layout == "point-jepa"
    assert_same_model(imported, model, clouds)
    assert "mask_token" in report.ignored and "predictor.blocks.0.norm1.weight" in report.ignored
    assert any(k.startswith("teacher.ema_model.") for k in report.ignored)
    assert not report.missing and not report.unexpected and not report.notes


def test_point_jepa_ema_source_takes_the_teacher_copy(tmp_path, clouds):
    online, ema = tiny("pointjepa-vits", 0), tiny("pointjepa-vits", 1)
    path = tmp_path / "pretrain.ckpt"
    torch.save(lightning_ckpt(jepa_state(online, ema)), path)
    imported, report, _ = import_checkpoint(path, source="ema")
    # The EMA copy holds the transformer only; tokenizer and positions are shared with the student.
    expected = {k: (ema if k.startswith("encoder.") else online).state_dict()[k] for k in online.state_dict()}
    reference = tiny("pointjepa-vits", 2)
    reference.load_state_dict(expected)
    assert_same_model(imported, reference, clouds)
    assert any(k.startswith("student.blocks.") for k in report.ignored)


@pytest.mark.parametrize("ddp, container", [(False, "base_model"), (True, "model")])
def test_point_mae_pretrained_pth_imports_exactly(tmp_path, clouds, ddp, container):
    model = tiny("pointmae-vits", 0)
    state = upstream(model.state_dict(), MAE, prefix="module." if ddp else "")
    for key, shape in (("MAE_decoder.blocks.0.norm1.weight", (48,)), ("mask_token", (1, 1, 48)),
                       ("decoder_pos_embed.0.weight", (16, 3)), ("increase_dim.0.weight", (24, 48, 1))):
        state[("module." if ddp else "") + key] = torch.randn(shape)
    path = tmp_path / "pretrain.pth"
    torch.save({container: state, "optimizer": {"state": {}, "param_groups": []}, "epoch": 300,
                "metrics": {"acc": 0.0}, "best_metrics": {"acc": 0.0}}, path)
    imported, report, layout = import_checkpoint(path, overrides=UNSTORED)
    assert layout == "point-mae"
    assert_same_model(imported, model, clouds)
    assert len(report.ignored) == 4


@pytest.mark.parametrize("preset, rules", [("pointmae-vits", MAE_FINETUNED), ("pointbert-vits", BERT_FINETUNED)])
def test_finetuned_head_and_cls_token_import(tmp_path, clouds, preset, rules):
    """Upstream's logits are checked in test_upstream_configs.py; here every key lands and nothing is dropped."""
    model = tiny(preset, 0, num_classes=5, cls_token=True)
    path = tmp_path / "finetuned.pth"
    torch.save({"base_model": upstream(model.state_dict(), rules), "epoch": 1}, path)
    imported, report, _ = import_checkpoint(path, overrides=UNSTORED)
    assert imported.config.num_classes == 5 and imported.config.cls_token
    assert imported.config.cls_head_layout == model.config.cls_head_layout
    assert_same_model(imported, model, clouds)
    assert not report.ignored and not report.notes


def test_point_bert_pth_imports_with_reduce_dim(tmp_path, clouds):
    model = tiny("pointbert-vits", 0)
    assert model.config.encoder_dim == 32
    state = upstream(model.state_dict(), BERT, prefix="module.")
    extras = {"transformer_q.mask_token": (1, 1, 48), "transformer_q.lm_head.weight": (64, 48),
              "transformer_q.cls_head.0.weight": (16, 48), "transformer_k.norm.weight": (48,),
              "dvae.encoder.first_conv.0.weight": (128, 3, 1), "queue": (16, 64)}
    state.update(("module." + k, torch.randn(shape)) for k, shape in extras.items())
    path = tmp_path / "pointbert.pth"
    torch.save({"base_model": state, "epoch": 300}, path)
    imported, report, layout = import_checkpoint(path, overrides=UNSTORED)
    assert layout == "point-bert" and imported.config.cls_token
    assert_same_model(imported, model, clouds)
    assert sorted(report.ignored) == sorted(extras)


def test_native_round_trip_and_layout_names(tmp_path, clouds):
    model = tiny("foundry-gate16", 0)
    path = save_checkpoint(tmp_path / "student.pt", model)
    imported, report, layout = import_checkpoint(path)
    assert layout == "foundry-edge" == detect_layout(torch.load(path, weights_only=True))
    assert_same_model(imported, model, clouds)
    with pytest.raises(FoundryError, match="stores its own architecture"):
        import_checkpoint(path, preset="foundry-s16")


def test_lightning_attribute_dict_loads_as_a_plain_dict(tmp_path, monkeypatch):
    """Lightning pickles hyper_parameters as AttributeDict: it must load without importing Lightning."""
    names = ["lightning_fabric", "lightning_fabric.utilities", "lightning_fabric.utilities.data"]
    for name in names:
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    attribute_dict = type("AttributeDict", (dict,), {"__module__": names[-1]})
    sys.modules[names[-1]].AttributeDict = attribute_dict
    model = tiny("pointjepa-vits", 0)
    ckpt = lightning_ckpt(jepa_state(model))
    ckpt["hyper_parameters"] = attribute_dict(ckpt["hyper_parameters"])
    ckpt["args"] = argparse.Namespace(lr=0.1)  # older Lightning: hparams as an argparse Namespace
    path = tmp_path / "lightning.ckpt"
    torch.save(ckpt, path)
    for name in names:
        monkeypatch.delitem(sys.modules, name)
    imported, _, _ = import_checkpoint(path)
    assert imported.config.num_heads == 3 and names[-1] not in sys.modules
    assert torch_load_safe(path)["args"].lr == 0.1


# -- bad input -----------------------------------------------------------------------------------
class RunsCode:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def one_line_error(path, **kwargs) -> str:
    with pytest.raises(FoundryError) as info:
        import_checkpoint(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_raw_pickle_that_runs_code_is_refused(tmp_path):
    """A raw pickle is no torch zip checkpoint: no stubbing fallback, a weights-only refusal."""
    marker, path = tmp_path / "pwned", tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"x": RunsCode(marker)}))
    message = one_line_error(path)
    assert not marker.exists()
    assert message.startswith("refusing to load") and ("posix.system" in message or "Unsupported" in message)


class Reduce:
    """Pickles as func(*args), the way a hostile checkpoint runs code; func may itself be a Reduce."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __call__(self):  # pickle requires a callable in a reduce tuple
        raise AssertionError("only pickled, never called")

    def __reduce__(self):
        return self.func, self.args


def payload(kind: str, marker) -> Reduce:
    """Five ways a pickle can run `touch marker` when it is loaded."""
    cmd = f"touch {marker}"
    return {
        "posix.system": Reduce(os.system, (cmd,)),
        "builtins.eval": Reduce(builtins.eval, (f"__import__('os').system({cmd!r})",)),
        "builtins.exec": Reduce(builtins.exec, (f"import os; os.system({cmd!r})",)),
        "getattr chain": Reduce(Reduce(getattr, (Reduce(builtins.__import__, ("os",)), "system")), (cmd,)),
        "subprocess": Reduce(subprocess.check_call, (["touch", str(marker)],)),
    }[kind]


STUBBED = {"posix.system": ["posix.system"], "builtins.eval": ["builtins.eval"], "builtins.exec": ["builtins.exec"],
           "getattr chain": ["builtins.__import__", "builtins.getattr"], "subprocess": ["subprocess.check_call"]}


@pytest.mark.parametrize("kind", list(STUBBED))
def test_code_in_hyper_parameters_is_stubbed_and_the_weights_import(tmp_path, clouds, kind):
    control, marker = tmp_path / "control", tmp_path / "pwned"
    pickle.loads(pickle.dumps(payload(kind, control)))  # unrestricted unpickling runs the payload
    assert control.exists()
    model = tiny("pointjepa-vits", 0)
    path = tmp_path / "pretrain.ckpt"
    torch.save(lightning_ckpt(jepa_state(model), svm_validation={"modelnet40": payload(kind, marker)}), path)
    with pytest.raises(ForeignObjectsError):  # the strict loader (training resume) still refuses
        torch_load_safe(path)
    imported, report, layout = import_checkpoint(path)
    assert not marker.exists()
    assert layout == "point-jepa"
    assert_same_model(imported, model, clouds)
    assert imported.config.num_heads == 3 and imported.config.group_size == 8  # plain hyper_parameters kept
    assert len(report.notes) == 1 and all(name in report.notes[0] for name in STUBBED[kind])


@pytest.mark.parametrize("kind", list(STUBBED))
def test_code_in_the_state_dict_is_refused(tmp_path, kind):
    marker, path = tmp_path / "pwned", tmp_path / "pretrain.ckpt"
    state = jepa_state(tiny("pointjepa-vits", 0))
    state["student.norm.weight"] = payload(kind, marker)
    torch.save(lightning_ckpt(state), path)
    message = one_line_error(path)
    assert not marker.exists()
    assert message.startswith("refusing to load") and "'student.norm.weight'" in message
    assert f"stubbed {STUBBED[kind][-1]} object" in message


def test_foreign_module_is_never_imported(tmp_path, monkeypatch, clouds):
    """A Lightning data module in hyper_parameters: importing its module would run code; it is stubbed."""
    source = tmp_path / "upstream_datasets.py"
    source.write_text("import pathlib\npathlib.Path(__file__).with_name('imported').touch()\n\n"
                      "class DataModule:\n    def __init__(self):\n        self.root = '/data/modelnet40'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("upstream_datasets")
    model = tiny("pointjepa-vits", 0)
    path = tmp_path / "pretrain.ckpt"
    torch.save(lightning_ckpt(jepa_state(model), svm_validation={"modelnet40": module.DataModule()}), path)
    monkeypatch.delitem(sys.modules, "upstream_datasets")
    (tmp_path / "imported").unlink()
    imported, report, _ = import_checkpoint(path)
    assert not (tmp_path / "imported").exists() and "upstream_datasets" not in sys.modules
    assert_same_model(imported, model, clouds)
    assert "upstream_datasets.DataModule" in report.notes[0]


@pytest.mark.parametrize("data", [
    # BUILD on allowed functions: plain pickle would replace torch's rebuild function's __defaults__
    # (slot state, setattr) or _get_layout's cache (dict state), for the whole process.
    b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nN}X\x0c\x00\x00\x00__defaults__)s\x86b.",
    b"\x80\x02ctorch.serialization\n_get_layout\n}X\x05\x00\x00\x00cache}sb.",
    # REDUCE on an object that find_class never gave (a bytearray made by an allowed global).
    b"\x80\x02c__builtin__\nbytearray\n)R)R.",
])
def test_stubbing_unpickler_builds_and_calls_only_what_it_resolved(data):
    defaults, cache = torch._utils._rebuild_tensor_v2.__defaults__, torch.serialization._get_layout.cache
    with pytest.raises(pickle.UnpicklingError, match="refusing to (BUILD|call)"):
        stubbing_module(PLAIN_CONTAINERS).load(io.BytesIO(data))
    assert torch._utils._rebuild_tensor_v2.__defaults__ == defaults and torch.serialization._get_layout.cache is cache


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_stubbing_fallback_never_hands_torchscript_to_torch_jit(tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), path)
    with pytest.raises(FoundryError, match="TorchScript archive"):
        load_stubbing_foreign(path)


@pytest.mark.parametrize("content, words", [(b"", "empty"), (b"x,y,z\n0,0,0\n", "not a PyTorch file"),
                                            (None, "truncated")])
def test_unreadable_files(tmp_path, content, words):
    path = tmp_path / "bad.pt"
    if content is None:
        save_checkpoint(path, tiny("foundry-edge16", 0))
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(content)
    assert words in one_line_error(path)


def test_unknown_layout_names_what_it_found(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"net": {"conv1.weight": torch.ones(1)}}, path)
    assert "keys [net]" in one_line_error(path)


def test_other_architecture_names_mismatching_keys(tmp_path):
    model = tiny("pointmae-vits", 0)
    path = tmp_path / "tiny.pth"
    torch.save({"base_model": upstream(model.state_dict(), MAE)}, path)
    message = one_line_error(path, preset="pointmae-vits")
    assert "shape mismatches: tokenizer.encoder.first_conv.0.weight: checkpoint (16, 3, 1) vs model (128, 3, 1)" in message
    assert "missing keys: encoder.blocks.2." in message
    # Inside one file: 64-wide transformer blocks between a 48-wide tokenizer and final norm.
    state = upstream(tiny("pointmae-vits", 0, embed_dim=64, num_heads=4).state_dict(), MAE)
    state.update((k, v) for k, v in upstream(model.state_dict(), MAE).items() if not k.startswith("MAE_encoder.blocks."))
    torch.save({"base_model": state}, path)
    message = one_line_error(path, overrides=UNSTORED)
    assert "shape mismatches: encoder.blocks.0.norm1.weight: checkpoint (64,) vs model (48,)" in message


def test_missing_keys_are_named(tmp_path):
    state = upstream(tiny("pointmae-vits", 0).state_dict(), MAE)
    for key in [k for k in state if k.startswith("MAE_encoder.blocks.blocks.1.mlp.")]:
        del state[key]
    path = tmp_path / "partial.pth"
    torch.save({"base_model": state}, path)
    message = one_line_error(path, overrides=UNSTORED)
    assert "missing keys" in message and "encoder.blocks.1.mlp.fc1.weight" in message


def test_future_format_version_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "future.pt", tiny("foundry-edge16", 0), extra={"format_version": FORMAT_VERSION + 1})
    assert f"version {FORMAT_VERSION + 1}" in one_line_error(path)


def test_ema_source_needs_an_ema_copy(tmp_path):
    path = tmp_path / "mae.pth"
    torch.save({"base_model": upstream(tiny("pointmae-vits", 0).state_dict(), MAE)}, path)
    assert "Point-JEPA" in one_line_error(path, source="ema")


# -- CLI -----------------------------------------------------------------------------------------
def test_cli_convert_writes_a_native_checkpoint(tmp_path, capsys, clouds):
    model = tiny("pointjepa-vits", 0)
    src, out, marker = tmp_path / "pretrain.ckpt", tmp_path / "converted.pt", tmp_path / "pwned"
    torch.save(lightning_ckpt(jepa_state(model), svm_validation={"modelnet40": RunsCode(marker)}), src)
    assert main(["convert", str(src), "-o", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith(f"converting {src}") and lines[-1].endswith("PASSED") and not marker.exists()
    assert any(line.startswith("  ignored:") and "mask_token" in line and "teacher.*" in line for line in lines)
    assert any(line.startswith("  note: the file pickles foreign objects (posix.system)") for line in lines)
    imported, _, layout = import_checkpoint(out)
    assert layout == "foundry-edge"
    assert_same_model(imported, model, clouds)
    assert main(["inspect", str(src), "--json"]) == 0
    assert '"layout": "point-jepa"' in capsys.readouterr().out


@pytest.mark.parametrize("case", ["evil", "missing", "conflict", "text"])
def test_cli_convert_bad_input_is_one_error_line(tmp_path, capsys, case):
    src, out, marker = tmp_path / "src.pt", tmp_path / "out.pt", tmp_path / "pwned"
    args = ["convert", str(src), "-o", str(out)]
    if case == "evil":
        torch.save({"x": RunsCode(marker)}, src)
    elif case == "conflict":
        save_checkpoint(src, tiny("foundry-edge16", 0))
        args += ["--source", "ema"]
    elif case == "text":
        src.write_text("not a checkpoint\n")
    assert main(args) != 0
    captured = capsys.readouterr()
    errors = captured.err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: ")
    assert not out.exists() and not marker.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.pt")]


@pytest.mark.parametrize("layout", ["point-mae", "point-bert"])
def test_cli_inspect_reads_pth_layouts(tmp_path, capsys, layout):
    preset, rules = {"point-mae": ("pointmae-vits", MAE), "point-bert": ("pointbert-vits", BERT)}[layout]
    path = tmp_path / "upstream.pth"
    torch.save({"base_model": upstream(tiny(preset, 0).state_dict(), rules, prefix="module.")}, path)
    assert main(["inspect", str(path), "--json"]) == 0
    assert f'"layout": "{layout}"' in capsys.readouterr().out
