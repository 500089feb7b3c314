"""Upstream checkpoints whose configuration changes the forward pass, against a reference forward written
here from the upstream code (Point-JEPA's TransformerEncoder with add_pos_at_every_layer, Point-MAE's
and Point-BERT's fine-tuned PointTransformer), reading the weights by their upstream key names: a
wrong mapping, a dropped CLS token or an ignored hyper-parameter fails these tests."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from foundry_edge.checkpoints.format import save_checkpoint
from foundry_edge.cli import main
from foundry_edge.errors import FoundryError
from foundry_edge.checkpoints.importers import import_checkpoint
from foundry_edge.models.grouping import group_points
from foundry_edge.models.model import normalize_cloud
from tests.checkpoints.test_checkpoints import (BERT, BERT_FINETUNED, MAE_FINETUNED, UNSTORED, assert_same_model, jepa_state,
                                    lightning_ckpt, one_line_error, tiny, upstream)

# Where each upstream layout keeps the parts the reference reads; "cls" is the CLS token's key prefix.
JEPA = dict(tokens="tokenizer.embedding.encoder.", pos="positional_encoding.", blocks="student.blocks.",
            norm="student.norm.")
MAE_FT = dict(tokens="encoder.", pos="pos_embed.", blocks="blocks.blocks.", norm="norm.", cls="")
BERT_FT = dict(MAE_FT, reduce="reduce_dim.")
BERT_PRETRAINED = dict(tokens="transformer_q.encoder.", reduce="transformer_q.reduce_dim.",
                       pos="transformer_q.pos_embed.", blocks="transformer_q.blocks.blocks.", norm="transformer_q.norm.",
                       cls="transformer_q.")


class DataModule:
    """Stands for the data modules Point-JEPA pickles in hyper_parameters (so the stubbing loader runs)."""


# -- the reference, from the upstream modules' forward ---------------------------------------------
def linear(w, key, x):
    return F.linear(x, w[key + "weight"], w.get(key + "bias"))


def batch_norm(w, key, x):
    return F.batch_norm(x, w[key + "running_mean"], w[key + "running_var"], w[key + "weight"], w[key + "bias"],
                        False, 0.0, 1e-5)


def layer_norm(w, key, x):
    return F.layer_norm(x, x.shape[-1:], w[key + "weight"], w[key + "bias"], 1e-5)


def group_tokens(w, p, groups):
    """Point-MAE's Encoder / Point-JEPA's PointNetEncoder "small": (B, G, K, 3) -> (B, G, C)."""
    batch, count, size, _ = groups.shape
    conv = lambda key, x: F.conv1d(x, w[p + key + "weight"], w.get(p + key + "bias"))
    x = groups.reshape(batch * count, size, 3).transpose(2, 1)
    x = conv("first_conv.3.", F.relu(batch_norm(w, p + "first_conv.1.", conv("first_conv.0.", x))))
    x = torch.cat([x.max(dim=2, keepdim=True).values.expand(-1, -1, size), x], dim=1)
    x = conv("second_conv.3.", F.relu(batch_norm(w, p + "second_conv.1.", conv("second_conv.0.", x))))
    return x.max(dim=2).values.reshape(batch, count, -1)


def blocks(w, p, x, pos, heads, every):
    """Pre-norm ViT blocks; positions before every block, or once before the first (Point-JEPA)."""
    if not every:
        x = x + pos
    for i in range(len({k[len(p):].split(".")[0] for k in w if k.startswith(p)})):
        b = f"{p}{i}."
        if every:
            x = x + pos
        batch, length, dim = x.shape
        qkv = linear(w, b + "attn.qkv.", layer_norm(w, b + "norm1.", x))
        q, k, v = qkv.reshape(batch, length, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * (dim // heads) ** -0.5).softmax(dim=-1)
        x = x + linear(w, b + "attn.proj.", (attn @ v).transpose(1, 2).reshape(batch, length, dim))
        x = x + linear(w, b + "mlp.fc2.", F.gelu(linear(w, b + "mlp.fc1.", layer_norm(w, b + "norm2.", x))))
    return x


def reference(w, p, neighbourhoods, centers, heads=3, every=True):
    """-> (patch tokens (B, c, D), CLS output (B, D) or None)."""
    x = group_tokens(w, p["tokens"], neighbourhoods)
    if "reduce" in p:
        x = linear(w, p["reduce"], x)
    pos = linear(w, p["pos"] + "2.", F.gelu(linear(w, p["pos"] + "0.", centers)))
    if "cls" in p:
        batch = x.shape[0]
        x = torch.cat([w[p["cls"] + "cls_token"].expand(batch, -1, -1), x], dim=1)
        pos = torch.cat([w[p["cls"] + "cls_pos"].expand(batch, -1, -1), pos], dim=1)
    x = layer_norm(w, p["norm"], blocks(w, p["blocks"], x, pos, heads, every))
    return (x[:, 1:], x[:, 0]) if "cls" in p else (x, None)


def mae_head(w, cls, tokens):
    """Point-MAE PointTransformer: cls_head_finetune([CLS, max over patch tokens])."""
    h = torch.cat([cls, tokens.max(dim=1).values], dim=-1)
    h = F.relu(batch_norm(w, "cls_head_finetune.1.", linear(w, "cls_head_finetune.0.", h)))
    h = F.relu(batch_norm(w, "cls_head_finetune.5.", linear(w, "cls_head_finetune.4.", h)))
    return linear(w, "cls_head_finetune.8.", h)


def bert_head(w, cls, tokens):
    """Point-BERT PointTransformer: Linear, ReLU, Dropout, Linear on [CLS, max over patch tokens]."""
    h = torch.cat([cls, tokens.max(dim=1).values], dim=-1)
    return linear(w, "cls_head_finetune.3.", F.relu(linear(w, "cls_head_finetune.0.", h)))


@pytest.fixture
def grouped(clouds):
    return group_points(normalize_cloud(torch.from_numpy(clouds)), UNSTORED["num_groups"], UNSTORED["group_size"])


def ours(model, grouped):
    with torch.no_grad():
        return model.forward_grouped(*grouped)


def with_cls(preset: str, **extra):
    """A tiny model with a CLS token far from its tiny initialisation, so leaving it out shows."""
    model = tiny(preset, 0, cls_token=True, **extra)
    with torch.no_grad():
        model.cls_token.normal_(), model.cls_pos.normal_()
    return model


# -- Point-JEPA hyper_parameters -------------------------------------------------------------------
@pytest.mark.parametrize("every", [False, True])
def test_point_jepa_positions_once_or_at_every_block(tmp_path, grouped, every):
    state = jepa_state(tiny("pointjepa-vits", 0))
    path = tmp_path / "pretrain.ckpt"
    torch.save(lightning_ckpt(state, encoder_add_pos_at_every_layer=every), path)
    imported, report, _ = import_checkpoint(path)
    assert imported.config.pos_every_block is every and not report.notes
    want, _ = reference(state, JEPA, *grouped, every=every)
    other, _ = reference(state, JEPA, *grouped, every=not every)
    got = ours(imported, grouped)["tokens"]
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(got, other, atol=1e-2)  # the setting matters at this size


def test_point_jepa_ball_query_radius_is_refused_in_one_line(tmp_path):
    path = tmp_path / "radius.ckpt"
    torch.save(lightning_ckpt(jepa_state(tiny("pointjepa-vits", 0)), tokenizer_group_radius=0.2), path)
    assert "tokenizer_group_radius=0.2" in one_line_error(path)


@pytest.mark.parametrize("steps, normalize", [(["subsample", "center", "unit_sphere"], True), (["subsample"], False),
                                              (["subsample", "height_norm"], None), (["unit_sphere", "center"], None)])
def test_point_jepa_evaluation_transforms_set_or_refuse_normalisation(tmp_path, steps, normalize):
    """Read through the stubbing loader (a pickled data module beside them), which must keep lists and None."""
    path = tmp_path / "pretrain.ckpt"
    torch.save(lightning_ckpt(jepa_state(tiny("pointjepa-vits", 0)), val_transformations=steps,
                              tokenizer_group_radius=None, svm_validation={"modelnet40": DataModule()}), path)
    if normalize is None:
        assert f"val_transformations={steps!r}" in one_line_error(path)
        imported, _, _ = import_checkpoint(path, overrides={"normalize_input": False})  # the user states it
        assert imported.config.normalize_input is False
        return
    imported, report, _ = import_checkpoint(path)
    assert imported.config.normalize_input is normalize
    assert len(report.notes) == 1 and "foreign objects" in report.notes[0]  # and no unread hyper-parameter


def test_unknown_point_jepa_hyper_parameters_are_named(tmp_path):
    path = tmp_path / "pretrain.ckpt"
    torch.save(lightning_ckpt(jepa_state(tiny("pointjepa-vits", 0)), encoder_qk_norm=True, predictor_depth=6), path)
    _, report, _ = import_checkpoint(path)
    assert len(report.notes) == 1 and "not read: encoder_qk_norm;" in report.notes[0]


# -- CLS token -------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset, rules, layout, head", [("pointmae-vits", MAE_FINETUNED, MAE_FT, mae_head),
                                                         ("pointbert-vits", BERT_FINETUNED, BERT_FT, bert_head)])
def test_finetuned_cls_token_reproduces_upstream_logits(tmp_path, grouped, preset, rules, layout, head):
    state = upstream(with_cls(preset, num_classes=5).state_dict(), rules)
    path = tmp_path / "finetuned.pth"
    torch.save({"base_model": state, "epoch": 300}, path)
    imported, _, _ = import_checkpoint(path, overrides=UNSTORED)
    got = ours(imported, grouped)
    tokens, cls = reference(state, layout, *grouped)
    assert set(got) == {"tokens", "centers", "logits"} and got["tokens"].shape == (2, 16, 48)
    assert torch.allclose(got["tokens"], tokens, atol=1e-5)
    assert torch.allclose(got["logits"], head(state, cls, tokens), atol=1e-5)
    without_cls, _ = reference(state, {k: v for k, v in layout.items() if k != "cls"}, *grouped)
    assert not torch.allclose(got["tokens"], without_cls, atol=1e-2)


def test_pretrained_point_bert_tokens_attend_to_its_cls_token(tmp_path, grouped):
    state = upstream(with_cls("pointbert-vits").state_dict(), BERT)
    path = tmp_path / "pointbert.pth"
    torch.save({"base_model": state}, path)
    imported, _, _ = import_checkpoint(path, overrides=UNSTORED)
    assert torch.allclose(ours(imported, grouped)["tokens"], reference(state, BERT_PRETRAINED, *grouped)[0], atol=1e-5)


def test_students_refuse_a_cls_token():
    with pytest.raises(FoundryError, match="cls_token applies to teacher encoders only"):
        tiny("foundry-s16", 0, cls_token=True)


# -- configs written before these fields -----------------------------------------------------------
def test_checkpoint_from_before_the_new_fields_keeps_its_forward(tmp_path, clouds):
    model = tiny("pointmae-vits", 0, num_classes=3)
    path = save_checkpoint(tmp_path / "old.pt", model)
    payload = torch.load(path, weights_only=True)
    for name in ("pos_every_block", "cls_token", "cls_head_layout"):
        del payload["config"][name]
    torch.save(payload, path)
    imported, _, _ = import_checkpoint(path)
    assert imported.config == model.config
    assert_same_model(imported, model, clouds)


# -- export ----------------------------------------------------------------------------------------
def test_cls_token_model_exports_and_onnx_runtime_gives_its_logits(tmp_path, clouds):
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort

    from foundry_edge.export import ExportOptions, export_model

    model = with_cls("pointmae-vits", num_classes=4, num_points=128, num_groups=8, depth=1)
    result = export_model(ExportOptions(model=model, output_dir=tmp_path / "out", target="trt10", max_points=256))
    assert result.passed and [o["name"] for o in result.manifest["outputs"]] == ["tokens", "centers", "logits"]
    points = torch.from_numpy(clouds[:, :200].copy())  # another batch-2 shape than the trace (128 points)
    session = ort.InferenceSession(str(result.onnx_path), providers=["CPUExecutionProvider"])
    tokens, _, logits = session.run(None, {"points": points.numpy()})
    with torch.no_grad():
        want = model(points)
    assert tokens.shape == (2, 8, 48)
    assert torch.allclose(torch.from_numpy(logits), want["logits"], atol=1e-4)


def test_cli_convert_says_what_changes_the_forward_and_keeps_it(tmp_path, capsys, clouds):
    model = with_cls("pointbert-vits", num_classes=5)
    src, out = tmp_path / "finetuned.pth", tmp_path / "converted.pt"
    torch.save({"base_model": upstream(model.state_dict(), BERT_FINETUNED)}, src)
    args = [f"--set={k}={v}" for k, v in UNSTORED.items()]
    assert main(["convert", str(src), "-o", str(out), *args]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "5 classes, CLS token)" in lines[1] and lines[-1].endswith("PASSED")
    imported, _, _ = import_checkpoint(out)
    assert_same_model(imported, model, clouds)
