"""Distillation, fine-tuning and evaluation on tiny models and a few synthetic clouds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from foundry_edge.checkpoints.format import save_checkpoint, torch_load_safe
from foundry_edge.data.synthetic import SyntheticShapes
from foundry_edge.errors import FoundryError
from foundry_edge.models import create_model
import foundry_edge.training.distill as distill_module
from foundry_edge.training.data import open_training_data
from foundry_edge.training.distill import distill
from foundry_edge.training.loop import TrainConfig
from foundry_edge.training.evaluate import accuracy, evaluate_model, few_shot, part_miou
from foundry_edge.training.finetune import finetune
from tests.conftest import TINY, tiny_overrides

STUDENT = dict(tiny_overrides("foundry-edge16"), output_dim=TINY["embed_dim"])
ROOT = Path(__file__).resolve().parents[2]


def quick(**changes) -> TrainConfig:
    return TrainConfig(**{**dict(steps=6, batch_size=4, lr=2e-3, warmup_steps=1, log_every=1, checkpoint_every=2,
                                 device="cpu", progress=False), **changes})


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on the shared 2-core machine two threads made each step several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def teacher_path(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("pointjepa-vits", **tiny_overrides("pointjepa-vits"))
    return save_checkpoint(tmp_path_factory.mktemp("teacher") / "teacher.pt", model)


@pytest.fixture(scope="module")
def clouds():
    return SyntheticShapes(16, TINY["num_points"], seed=0)


def test_distillation_lowers_the_loss_on_a_fixed_batch(teacher_path, tmp_path):
    fixed = SyntheticShapes(4, TINY["num_points"], seed=1)  # one batch, seen every step
    result, copied = distill(str(teacher_path), "foundry-edge16", fixed, tmp_path, overrides=STUDENT,
                             train=quick(steps=12, warmup_steps=0), log=lambda s: None)
    losses = [r["loss"] for r in result.records]
    assert losses[-1] < 0.8 * losses[0]
    assert any(k.startswith("encoder.blocks.") for k in copied["copied"])  # initialised from the teacher
    assert result.model.config.extra["teacher"] == "pointjepa-vits"
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 13))


def test_gated_student_pays_the_gate_term(teacher_path, clouds, tmp_path):
    overrides = dict(tiny_overrides("foundry-gate16"), output_dim=TINY["embed_dim"])
    result, _ = distill(str(teacher_path), "foundry-gate16", clouds, tmp_path, overrides=overrides,
                        train=quick(steps=2), cfg=distill_module.DistillConfig(lambda_gate=0.5), log=lambda s: None)
    last = result.records[-1]
    assert 0.0 < last["gate_prob"] < 1.0
    assert last["loss"] == pytest.approx(last["recon"] - 0.5 * last["gate_prob"] + 0.1 * last["balance"], rel=1e-5)


def test_nan_stops_keeps_the_checkpoint_and_resume_matches_an_uninterrupted_run(teacher_path, clouds, tmp_path,
                                                                               monkeypatch):
    full, _ = distill(str(teacher_path), "foundry-edge16", clouds, tmp_path / "full", overrides=STUDENT,
                      train=quick(), log=lambda s: None)

    real_loss, calls = distill_module.distillation_loss, []

    def nan_on_fifth_step(*args):
        calls.append(1)
        loss, metrics = real_loss(*args)
        return (loss * float("nan") if len(calls) == 5 else loss), metrics

    monkeypatch.setattr(distill_module, "distillation_loss", nan_on_fifth_step)
    with pytest.raises(FoundryError, match=r"loss became nan at step 5.*step 4"):
        distill(str(teacher_path), "foundry-edge16", clouds, tmp_path / "cut", overrides=STUDENT, train=quick(),
                log=lambda s: None)
    kept = torch_load_safe(tmp_path / "cut" / "checkpoint.pt")
    assert kept["training"]["step"] == 4
    assert all(torch.isfinite(v).all() for v in kept["state_dict"].values() if v.is_floating_point())

    monkeypatch.setattr(distill_module, "distillation_loss", real_loss)
    resumed, _ = distill(str(teacher_path), "foundry-edge16", clouds, tmp_path / "cut", overrides=STUDENT,
                         train=quick(), resume=tmp_path / "cut" / "checkpoint.pt", log=lambda s: None)
    want, got = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert [r["loss"] for r in resumed.records] == [r["loss"] for r in full.records]


def test_two_torchrun_processes_train_with_gloo_and_agree(teacher_path, tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text(textwrap.dedent(f"""
        import sys, torch
        sys.path.insert(0, {str(ROOT)!r})
        from foundry_edge.data.synthetic import SyntheticShapes
        from foundry_edge.training.distill import distill
        from foundry_edge.training.loop import TrainConfig
        torch.set_num_threads(1)
        result, _ = distill({str(teacher_path)!r}, "foundry-edge16", SyntheticShapes(16, {TINY["num_points"]}),
                            {str(tmp_path / "out")!r}, overrides={STUDENT!r}, log=lambda s: None,
                            train=TrainConfig(steps=3, batch_size=2, warmup_steps=0, device="cpu", progress=False))
        torch.save({{"world": result.world_size, "state": result.model.state_dict()}},
                   {str(tmp_path)!r} + f"/rank{{result.rank}}.pt")
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(worker)], capture_output=True, text=True, env=env, timeout=240)
    assert run.returncode == 0, run.stderr[-2000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert all(torch.equal(ranks[0]["state"][k], ranks[1]["state"][k]) for k in ranks[0]["state"])
    assert (tmp_path / "out" / "checkpoint.pt").is_file()


def test_finetune_then_evaluate_classification_segmentation_and_few_shot(clouds, tmp_path):
    cls = finetune("pointjepa-vits", "cls", clouds, tmp_path / "cls", overrides=tiny_overrides("pointjepa-vits"),
                   train=quick(steps=3), log=lambda s: None)
    assert cls.model.config.num_classes == 10
    row = evaluate_model(cls.model, clouds, way=3, shot=1, query=1, episodes=2)
    assert 0 <= row["classification"]["overall"] <= 100
    assert {"nearest_centroid", "linear_probe"} <= set(row["few_shot"])

    seg = finetune("foundry-edge16", "seg", clouds, tmp_path / "seg", overrides=tiny_overrides("foundry-edge16"),
                   train=quick(steps=3), frozen=True, log=lambda s: None)
    assert seg.model.config.num_part_classes == clouds.num_parts
    torch.manual_seed(0)  # finetune seeds the same way before building the preset
    initial = create_model("foundry-edge16", **tiny_overrides("foundry-edge16")).state_dict()
    trained = seg.model.state_dict()
    backbone = [k for k in initial if not k.startswith(("cls_head.", "seg_head."))]
    assert all(torch.equal(initial[k], trained[k]) for k in backbone)  # frozen: weights and BN statistics
    row = evaluate_model(seg.model, clouds, way=0)
    assert 0 <= row["segmentation"]["instance_miou"] <= 100 and "few_shot" not in row


def test_metrics_on_known_answers():
    labels = np.array([0, 0, 1, 1])
    assert accuracy(np.array([0, 1, 1, 1]), labels) == {"overall": 75.0, "class_mean": 75.0}
    parts = np.array([[0, 0, 1, 1], [0, 1, 1, 1], [2, 2, 3, 3], [2, 2, 2, 3]])
    perfect = np.eye(4)[parts] * 5.0  # (M, N, P) logits that pick the true part
    assert part_miou(perfect, parts, labels) == {"class_miou": 100.0, "instance_miou": 100.0}
    # a logit on a part of another category is ignored: the argmax runs over the category's parts
    foreign = perfect.copy()
    foreign[0, :, 3] = 50.0
    assert part_miou(foreign, parts, labels)["instance_miou"] == 100.0
    wrong = perfect.copy()
    wrong[0, 0] = [0, 9, 0, 0]  # shape 0: one point of part 0 called part 1 -> IoUs 1/2 and 2/3
    assert part_miou(wrong, parts, labels)["instance_miou"] == pytest.approx(100 * (3 + (0.5 + 2 / 3) / 2) / 4)
    rng = np.random.default_rng(0)
    features = np.repeat(np.eye(4) * 10, 30, axis=0) + rng.normal(size=(120, 4))
    result = few_shot(features, np.repeat(np.arange(4), 30), way=3, shot=5, query=5, episodes=3)
    assert result["nearest_centroid"]["mean"] == 100.0 and result["linear_probe"]["mean"] == 100.0


def test_mismatched_students_are_refused(teacher_path, clouds, tmp_path):
    with pytest.raises(FoundryError, match="output_dim 32 vs teacher width 48"):
        distill(str(teacher_path), "foundry-edge16", clouds, tmp_path, overrides={**STUDENT, "output_dim": 32})
    with pytest.raises(FoundryError, match="num_groups 8 vs teacher 16"):
        distill(str(teacher_path), "foundry-edge16", clouds, tmp_path, overrides={**STUDENT, "num_groups": 8})
    with pytest.raises(FoundryError, match="must be a Foundry student"):
        distill(str(teacher_path), "pointjepa-vits", clouds, tmp_path, overrides=tiny_overrides("pointjepa-vits"))
    with pytest.raises(FoundryError, match="neither a preset"):
        distill(str(tmp_path / "missing.pt"), "foundry-edge16", clouds, tmp_path, overrides=STUDENT)
    assert not (tmp_path / "checkpoint.pt").exists()


def test_bad_resume_files_and_empty_data_are_refused(teacher_path, clouds, tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(FoundryError, match="cannot read checkpoint"):
        distill(str(teacher_path), "foundry-edge16", clouds, tmp_path / "a", overrides=STUDENT, train=quick(),
                resume=corrupt)
    with pytest.raises(FoundryError, match="is not a distill training checkpoint"):
        distill(str(teacher_path), "foundry-edge16", clouds, tmp_path / "b", overrides=STUDENT, train=quick(),
                resume=teacher_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FoundryError):
        open_training_data(str(empty), "train", 256)
    with pytest.raises(FoundryError, match="holds no point clouds"):
        open_training_data("synthetic", "train", 256, num_samples=0)
    with pytest.raises(FoundryError, match="fewer than one batch"):
        distill(str(teacher_path), "foundry-edge16", SyntheticShapes(2, 256), tmp_path / "c", overrides=STUDENT,
                train=quick())


def test_cli_refuses_conflicts_and_writes_an_evaluation_report(teacher_path, clouds, tmp_path, capsys):
    from foundry_edge.cli import main

    student_flags = [f"--set={k}={','.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in STUDENT.items()]
    assert main(["distill", "--teacher", str(teacher_path), "--out", str(tmp_path / "x"), "--lambda-gate", "0.1",
                 *student_flags]) == 2
    assert "has no gate" in capsys.readouterr().err
    assert main(["distill", "--teacher", str(teacher_path), "--out", str(tmp_path / "d"), "--samples", "8",
                 "--steps", "2", "--batch-size", "4", "--warmup-steps", "0", "--device", "cpu", *student_flags]) == 0
    assert main(["evaluate", str(teacher_path), str(tmp_path / "d" / "model.pt"), "--teacher", str(teacher_path),
                 "--samples", "20", "--way", "2", "--shot", "1", "--query", "1", "--episodes", "2",
                 "--out", str(tmp_path / "report")]) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert [m["kind"] for m in report["models"]] == ["teacher", "student"]
    assert "assignment_health" not in report["models"][0] and report["models"][1]["assignment_health"]["clouds"] == 20
    agreement = report["token_agreement"][0]
    assert -1.0 <= agreement["cosine"]["mean"] <= 1.0
    markdown = (tmp_path / "report" / "report.md").read_text()
    for picture in agreement["pictures"]:
        assert (tmp_path / "report" / picture).stat().st_size > 1000 and picture in markdown


def test_bundled_default_pair_loads_and_matches_its_record():
    from foundry_edge.fileio import sha256_file
    from foundry_edge.models.config import ModelConfig
    from foundry_edge.checkpoints.resolve import WEIGHTS_DIR, load_model

    record = json.loads((WEIGHTS_DIR / "bundled.json").read_text())
    teacher, _ = load_model("default-teacher")
    student, _ = load_model("default")
    assert student.config.kind == "student" and student.config.output_dim == teacher.config.embed_dim
    assert next(student.parameters()).dtype == torch.float32  # stored fp16, loaded fp32
    for model, entry in ((teacher, record["teacher"]), (student, record["student"])):
        assert model.config.to_dict() == ModelConfig.from_dict(entry["config"]).to_dict()
        assert sha256_file(WEIGHTS_DIR / entry["file"]) == entry["sha256"]
    with torch.no_grad():
        out = student(torch.from_numpy(SyntheticShapes(2, student.config.num_points, split="test")[0]["points"])[None])
    assert out["logits"].shape == (1, 10)


@pytest.mark.parametrize("options, message", [
    (dict(limit=0), "--limit must be >= 1"),
    (dict(shot=0), "few-shot needs --shot"),
    (dict(way=-1), "--way must be >= 0"),
])
def test_evaluate_refuses_sizes_that_evaluate_nothing(options, message):
    from foundry_edge.training.evaluate import evaluate_model

    with pytest.raises(FoundryError, match=message):  # refused before the model or data are touched
        evaluate_model(None, None, **options)
