"""The DSO trains on the assignment it runs with: logits, schedule, balance term, health in the log."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from foundry_edge.data.synthetic import SyntheticShapes
from foundry_edge.errors import FoundryError
from foundry_edge.models import create_model
from foundry_edge.models.config import ModelConfig
from foundry_edge.models.model import normalize_cloud
import foundry_edge.training.distill as distill_module
from foundry_edge.training.distill import DistillConfig, balance_loss, distill, dso_schedule, health_monitor
from foundry_edge.training.loop import TrainConfig, resume_notes
from tests.conftest import TINY, tiny_overrides
from tests.training.test_training import clouds, one_thread, teacher_path  # noqa: F401 (fixtures shared with distillation's tests)
from tests.training.test_training import quick as training_quick

ARCH = {k: v for k, v in tiny_overrides("foundry-edge16").items()
        if k not in ("num_points", "num_groups", "group_size", "output_dim")}


def quick(**changes) -> TrainConfig:
    """test_training's quick run, with a checkpoint (and so an eval-mode health check) every 3 steps."""
    return training_quick(**{"checkpoint_every": 3, **changes})


@pytest.fixture
def points():
    return torch.from_numpy(np.stack([SyntheticShapes(2, TINY["num_points"], seed=3)[i]["points"] for i in range(2)]))


def _student(**kw):
    return create_model("foundry-s16", **{**tiny_overrides("foundry-s16"), **kw})


def test_centered_cosine_ignores_what_all_keys_share(points):
    """The collapse came from a key direction every token shares (and queries sharing W_q's bias); the
    default logits remove both."""
    for mode, invariant in (("centered-cosine", True), ("dot", False)):
        torch.manual_seed(0)
        model = _student(dso_logits=mode)
        tokens, _ = model.tokenizer(normalize_cloud(points))
        with torch.no_grad():
            before = model.assigner.logits(tokens).argmax(-1)
            model.assigner.k.bias += 50.0 * torch.randn_like(model.assigner.k.bias)  # a large shared key
            model.assigner.q.bias += 50.0 * torch.randn_like(model.assigner.q.bias)  # and a shared query
            after = model.assigner.logits(tokens).argmax(-1)
        used_after = [len(row.unique()) for row in after]
        if invariant:
            assert torch.equal(before, after) and min(used_after) >= 2
        else:
            assert max(used_after) == 1  # the shared direction decides for every token: the old collapse


def test_old_checkpoints_keep_the_logits_they_were_trained_with():
    stored = ModelConfig(kind="student", num_points=64, num_groups=16, group_size=8).to_dict()
    del stored["dso_logits"]  # written before the field existed
    assert ModelConfig.from_dict(stored).dso_logits == "dot"
    assert ModelConfig(kind="student").dso_logits == "centered-cosine"
    with pytest.raises(FoundryError, match="dso_logits must be one of"):
        ModelConfig(dso_logits="cosine")


def test_noise_free_training_takes_the_inference_assignment_with_a_gradient(points):
    model = _student().train()
    model.assigner.noise = False
    tokens, centers = model.tokenizer(normalize_cloud(points))
    hot, logits = model.assigner(tokens, centers)
    assert torch.equal(hot.detach().argmax(-1), logits.detach().argmax(-1))
    hot.mul(torch.randn_like(hot)).sum().backward()
    assert model.assigner.q.weight.grad.abs().sum() > 0 and model.assigner.logit_scale.grad is not None


def test_schedule_anneals_tau_then_ends_noise_free():
    model = _student()
    step_fn = dso_schedule(DistillConfig(tau_start=1.0, tau_end=0.25, hard_fraction=0.25))
    seen = []
    for step in range(100):
        step_fn(model, step, 100)
        seen.append((model.assigner.tau, model.assigner.noise))
    assert seen[0] == (1.0, True)
    assert seen[74][1] and not seen[75][1]  # the last quarter is noise-free
    assert seen[99][0] == pytest.approx(0.25)
    taus = [t for t, _ in seen]
    assert all(a >= b for a, b in zip(taus, taus[1:]))


def test_balance_loss_is_zero_when_spread_and_log_s_when_collapsed():
    spread = torch.eye(8).repeat(1, 2, 1) * 30.0  # (1, 16, 8): each SuperToken gets 2 tokens
    collapsed = torch.zeros(1, 16, 8)
    collapsed[..., 3] = 30.0
    assert float(balance_loss(spread, 1.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(balance_loss(collapsed, 1.0)) == pytest.approx(math.log(8), abs=1e-4)


def test_distill_derives_the_matching_fields_from_the_teacher(teacher_path, clouds, tmp_path):
    lines = []
    result, _ = distill(str(teacher_path), "foundry-edge16", clouds, tmp_path, overrides=ARCH, train=quick(steps=3),
                        log=lines.append)
    config = result.model.config
    assert (config.num_points, config.num_groups, config.group_size, config.output_dim) == (
        TINY["num_points"], TINY["num_groups"], TINY["group_size"], TINY["embed_dim"])
    assert any("from the teacher" in line for line in lines)
    with pytest.raises(FoundryError, match="num_groups 8 vs teacher 16.*drop the --set"):
        distill(str(teacher_path), "foundry-edge16", clouds, tmp_path / "x", overrides={**ARCH, "num_groups": 8})


def test_log_holds_train_and_eval_mode_health(teacher_path, clouds, tmp_path):
    distill(str(teacher_path), "foundry-edge16", clouds, tmp_path, overrides=ARCH, train=quick(), log=lambda s: None)
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert all(1 <= r["train_used"] <= 16 for r in records)
    checked = [r for r in records if "eval_used" in r]
    assert [r["step"] for r in checked] == [3, 6]
    assert all(0.0 <= r["eval_entropy"] <= 1.0 and 0 < r["eval_largest_share"] <= 1.0 for r in checked)


class _Collapsed(torch.nn.Module):
    """Eval mode sends every token to SuperToken 0."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, points):
        return {"assignment": torch.zeros(points.shape[0], 16, dtype=torch.int64)}


def test_monitor_stops_a_run_collapsed_at_inference_only():
    monitor = health_monitor(torch.zeros(4, 64, 3), 16, check_after=2)
    spread_in_training = [{"step": 2, "train_used": 9.5}]
    assert "stop" not in monitor(_Collapsed(), 1, spread_in_training)  # before the check starts
    stop = monitor(_Collapsed(), 2, spread_in_training)
    assert stop["eval_used"] == 1.0 and "collapsed at inference" in stop["stop"]
    assert "stop" not in monitor(_Collapsed(), 2, [{"step": 2, "train_used": 1.0}])  # collapsed in both: no mismatch


def test_a_collapse_stop_is_one_error_and_keeps_the_checkpoint(teacher_path, clouds, tmp_path, monkeypatch):
    monkeypatch.setattr(distill_module, "student_monitor",
                        lambda *a: lambda model, step, records: {"eval_used": 1.0, "stop": "collapsed (test)"})
    with pytest.raises(FoundryError, match="distill stopped at step 3: collapsed \\(test\\)"):
        distill(str(teacher_path), "foundry-edge16", clouds, tmp_path, overrides=ARCH, train=quick(), log=lambda s: None)
    assert (tmp_path / "checkpoint.pt").is_file()
    assert json.loads((tmp_path / "log.jsonl").read_text().splitlines()[-1])["eval_used"] == 1.0


def test_resume_says_which_setting_wins(teacher_path, clouds, tmp_path):
    distill(str(teacher_path), "foundry-edge16", clouds, tmp_path, overrides=ARCH, train=quick(steps=3),
            log=lambda s: None)
    lines = []
    distill(str(teacher_path), "foundry-edge16", clouds, tmp_path, overrides=ARCH, train=quick(steps=5, lr=1e-4),
            resume=tmp_path / "checkpoint.pt", log=lines.append)
    assert any("checkpoint's lr 0.002 wins over this run's 0.0001" in line for line in lines)
    assert any("runs to step 5" in line for line in lines)
    assert resume_notes({"lr": 1.0, "seed": 0}, {"lr": 1.0, "seed": 0}) == []
    assert resume_notes({"augment": False}, {"augment": True}) == ["resume: this run's augment True wins over the "
                                                                   "checkpoint's False"]


def test_shipped_default_spreads_its_assignment_in_eval_mode():
    """Issue 11's thresholds on the 500 held-out synthetic clouds, with the shipped fp16 files."""
    from foundry_edge.assignment_health import assignment_health
    from foundry_edge.checkpoints.resolve import load_model
    from foundry_edge.training.data import batches

    student, _ = load_model("default")
    student.eval()
    test = SyntheticShapes(500, student.config.num_points, seed=0, split="test")
    with torch.no_grad():
        assignment = np.concatenate([student(b["points"])["assignment"].numpy() for b in batches(test, 100)])
    health = assignment_health(assignment, student.config.num_supertokens)
    assert health["used_mean"] >= 10 and health["entropy_mean"] >= 0.75 and health["largest_share_mean"] <= 0.30, health


@pytest.mark.parametrize("train_assignment", [False, True])
def test_finetune_keeps_distillations_assignment_unless_asked(clouds, tmp_path, train_assignment):
    from foundry_edge.training.finetune import finetune

    torch.manual_seed(0)
    student = create_model("foundry-edge16", **tiny_overrides("foundry-edge16"))
    before = {k: v.clone() for k, v in student.state_dict().items()}
    result = finetune(student, "cls", clouds, tmp_path, train=quick(steps=2), log=lambda s: None,
                      train_assignment=train_assignment)
    after = result.model.state_dict()
    assert not torch.equal(before["assigner.v.weight"], after["assigner.v.weight"])
    for key in ("assigner.q.weight", "assigner.k.weight", "assigner.supertokens", "assigner.logit_scale"):
        assert torch.equal(before[key], after[key]) is not train_assignment, key


def test_a_health_check_between_log_steps_keeps_the_progress_bar_and_log_whole(teacher_path, clouds, tmp_path):
    """checkpoint_every 3 with log_every 10: the eval-mode record at step 3 has no training rate."""
    result, _ = distill(str(teacher_path), "foundry-edge16", clouds, tmp_path, overrides=ARCH,
                        train=quick(steps=6, log_every=10, progress=True), log=lambda s: None)
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [3, 6]
    assert "clouds_per_s" not in records[0] and "eval_used" in records[0]
    assert "loss" in records[1] and "eval_used" in records[1] and result.records[-1]["step"] == 6
