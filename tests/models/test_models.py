"""The reference model: shapes, the DSO/CAU/gate rules, determinism of the tokenizer."""

from __future__ import annotations

import pytest
import torch

from foundry_edge.errors import FoundryError
from foundry_edge.models import create_model, get_config, list_presets
from foundry_edge.models.foundry import grouped_mean, one_hot_argmax
from foundry_edge.models.grouping import farthest_point_sample, group_points, knn_indices
from foundry_edge.models.model import normalize_cloud
from tests.conftest import tiny_overrides


@pytest.fixture
def points(clouds):
    return torch.from_numpy(clouds)


@pytest.mark.parametrize("preset", list_presets())
def test_every_preset_outputs_teacher_shaped_tokens(preset, points):
    model = create_model(preset, **tiny_overrides(preset), num_classes=5, num_part_classes=3)
    with torch.no_grad():
        out = model(points)
    cfg = model.config
    assert out["tokens"].shape == (2, cfg.num_groups, cfg.token_dim)
    assert out["centers"].shape == (2, cfg.num_groups, 3)
    assert out["logits"].shape == (2, 5)
    assert out["seg_logits"].shape == (2, 256, 3)
    assert torch.isfinite(out["tokens"]).all()
    if cfg.kind == "student":
        assert out["tokens"].shape[-1] == cfg.output_dim
        assert out["assignment"].dtype == torch.int64
        limit = cfg.num_supertokens + (cfg.gate_budget if cfg.gate else 0)
        assert int(out["assignment"].max()) < limit


def test_fps_is_deterministic_and_order_invariant(points):
    first = farthest_point_sample(points, 16)
    assert torch.equal(first, farthest_point_sample(points, 16))
    assert all(len(set(row.tolist())) == 16 for row in first)  # no point chosen twice
    perm = torch.randperm(points.shape[1], generator=torch.Generator().manual_seed(1))
    shuffled = points[:, perm]
    chosen = torch.gather(shuffled, 1, farthest_point_sample(shuffled, 16).unsqueeze(-1).expand(-1, -1, 3))
    expected = torch.gather(points, 1, first.unsqueeze(-1).expand(-1, -1, 3))
    assert torch.allclose(chosen, expected)


def test_fps_spreads_points_better_than_random(points):
    centers = torch.gather(points, 1, farthest_point_sample(points, 16).unsqueeze(-1).expand(-1, -1, 3))
    random = points[:, :16]
    cover = lambda c: torch.cdist(points, c).min(dim=-1).values.max()
    assert cover(centers) < cover(random)


def test_knn_matches_brute_force(points):
    query = points[:, :10]
    got = knn_indices(query, points, 8)
    want = torch.cdist(query, points).topk(8, largest=False).indices
    assert torch.equal(got.sort(-1).values, want.sort(-1).values)


def test_group_points_relative_to_centres(points):
    neighbourhoods, centers = group_points(points, 16, 8)
    assert neighbourhoods.shape == (2, 16, 8, 3)
    # the centre is its own nearest neighbour, so the first offset is zero
    assert torch.allclose(neighbourhoods[:, :, 0], torch.zeros(2, 16, 3), atol=1e-6)


def test_group_points_refuses_too_few_points():
    with pytest.raises(ValueError, match="needs 32 points"):
        group_points(torch.zeros(1, 10, 3), 4, 32)


def test_normalize_cloud_unit_sphere(points):
    moved = points * 7.0 + 3.0
    norm = normalize_cloud(moved)
    assert torch.allclose(norm.mean(1), torch.zeros(2, 3), atol=1e-5)
    assert torch.allclose(norm.norm(dim=-1).max(1).values, torch.ones(2))


def test_one_hot_argmax_exactly_one_and_ties_to_lowest():
    scores = torch.tensor([[[1.0, 3.0, 3.0], [2.0, 2.0, 2.0], [0.0, -1.0, 5.0]]])
    hot = one_hot_argmax(scores)
    assert torch.equal(hot.sum(-1), torch.ones(1, 3))
    assert hot[0].argmax(-1).tolist() == [1, 0, 2]


def test_grouped_mean_is_mean_of_assigned_and_empty_rule():
    one_hot = torch.tensor([[[1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0]]])  # slot 2 empty
    values = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]])
    empty = torch.tensor([[9.0, 9.0], [8.0, 8.0], [7.0, 7.0]])
    out = grouped_mean(one_hot, values, empty)
    assert torch.equal(out, torch.tensor([[[2.0, 3.0], [5.0, 6.0], [7.0, 7.0]]]))


def _student(**kw):
    return create_model("foundry-s16", **{**tiny_overrides("foundry-s16"), **kw})


def test_dso_assigns_each_token_to_exactly_one_supertoken(points):
    model = _student()
    tokens, centers = model.tokenizer(normalize_cloud(points))
    with torch.no_grad():
        hot, _ = model.assigner(tokens, centers)
        logits = model.assigner.logits(tokens)
    assert torch.equal(hot.sum(-1), torch.ones(2, 16))
    assert torch.equal(hot.argmax(-1), logits.argmax(-1))


def test_dso_training_is_hard_and_differentiable(points):
    model = _student().train()
    tokens, centers = model.tokenizer(normalize_cloud(points))
    hot, _ = model.assigner(tokens, centers)
    assert set(hot.detach().unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(hot.detach().sum(-1), torch.ones(2, 16))
    hot.mul(torch.randn_like(hot)).sum().backward()
    assert model.assigner.supertokens.grad is not None and model.assigner.supertokens.grad.abs().sum() > 0


def test_student_encoder_sees_supertoken_means_and_cau_routes_back(points):
    """Rebuild the student's forward from its parts: the update is the mean of assigned values,
    CAU adds the token's own residual to its SuperToken's encoder output."""
    model = _student()
    with torch.no_grad():
        out = model(points)
        tokens, centers = model.tokenizer(normalize_cloud(points))
        hot, _ = model.assigner(tokens, centers)
        values = model.assigner.v(tokens)
        counts = hot.sum(1)
        for b in range(2):
            for k in range(hot.shape[-1]):
                members = hot[b, :, k].bool()
                if members.any():
                    expected = values[b, members].mean(0)
                else:
                    expected = model.assigner.supertokens[k]
                got = grouped_mean(hot, values, model.assigner.supertokens)[b, k]
                assert torch.allclose(got, expected, atol=1e-5), (b, k, counts[b, k])
        sequence = grouped_mean(hot, values, model.assigner.supertokens)
        positions = grouped_mean(hot, centers, torch.zeros(hot.shape[-1], 3))
        encoded = model.encoder(sequence, model.pos_embed(positions))
        routed = encoded[torch.arange(2)[:, None], hot.argmax(-1)]  # each token's SuperToken output
        manual = model.cau.fc2(model.cau.act(model.cau.fc1(model.cau.norm(tokens + routed))))
    assert torch.allclose(out["tokens"], manual, atol=1e-5)
    assert torch.equal(out["assignment"], hot.argmax(-1))


def test_cau_residual_changes_each_token_output(points):
    """Two tokens routed to the same SuperToken still reconstruct differently (the residual)."""
    model = _student(num_supertokens=1)
    with torch.no_grad():
        out = model(points)["tokens"]
    assert not torch.allclose(out[:, 0], out[:, 1])


@pytest.mark.parametrize("assigner", ["kmeans", "fps"])
def test_static_baselines_assign_by_nearest_seed(points, assigner):
    model = _student(assigner=assigner)
    with torch.no_grad():
        out = model(points)
    assert out["assignment"].shape == (2, 16)
    assert int(out["assignment"].max()) < 4
    # spatially coherent: tokens in one group are closer to their group's mean than to others'
    centers = out["centers"]
    hot = torch.nn.functional.one_hot(out["assignment"], 4).float()
    means = grouped_mean(hot, centers, torch.zeros(4, 3))
    nearest = torch.cdist(centers, means).argmin(-1)
    assert (nearest == out["assignment"]).float().mean() > 0.8


def test_gate_respects_budget_and_threshold(points):
    model = _student(gate=True, gate_budget=3, gate_threshold=0.5)
    with torch.no_grad():
        model.gate.fc2.bias.fill_(0.0)
        out = model(points)
    prob, assign = out["gate_prob"], out["assignment"]
    s = model.config.num_supertokens
    bypass = assign >= s
    assert int(bypass.sum(-1).max()) <= 3
    assert bool((prob[bypass] <= 0.5).all())
    for b in range(2):  # the bypassing tokens are the lowest-probability ones
        if bypass[b].any():
            assert prob[b, bypass[b]].max() <= prob[b, ~bypass[b]].min() + 1e-6


def test_gate_threshold_zero_means_nobody_bypasses(points):
    model = _student(gate=True, gate_threshold=0.0)
    with torch.no_grad():
        out = model(points)
    assert int(out["assignment"].max()) < model.config.num_supertokens


def test_gate_gets_gradient_in_training(points):
    model = _student(gate=True, gate_threshold=1.0).train()
    out = model(points)
    out["tokens"].sum().backward()
    assert model.gate.fc1.weight.grad.abs().sum() > 0


def test_config_validation_and_overrides():
    with pytest.raises(FoundryError, match="num_supertokens"):
        get_config("foundry-s16", num_supertokens=0)
    with pytest.raises(FoundryError, match="unknown preset"):
        get_config("nope")
    cfg = get_config("foundry-s16", num_points=4096)
    assert cfg.num_groups == 256  # the preset's 1024 -> 64 ratio
    assert get_config("pointjepa-vits").replace(num_points=2048, num_groups=100).num_groups == 100
