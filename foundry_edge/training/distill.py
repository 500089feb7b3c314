"""Foundry distillation: a frozen teacher's tokens, reconstructed by a student (arXiv 2511.20721).

    loss = SmoothL1(student tokens, LN(teacher tokens)) - lambda_gate * mean(pi)   (pi: Foundry-Gate)

LN is a layer norm without affine parameters, the target Point-JEPA regresses in pretraining. The
student's output tokens therefore live in the normalised target space (its config records this in
`extra["target"]`). SmoothL1's beta is not in the paper: we take torch's default 1.0, which on unit-
variance targets behaves like a halved squared error for the small errors that remain late in training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from foundry_edge.errors import FoundryError

# Keys a student takes from its teacher when the shapes match (the paper initialises the student's
# encoder from the teacher; our student keeps the teacher's tokenizer layout as well).
INIT_PREFIXES = ("tokenizer.", "pos_embed.", "encoder.blocks.", "encoder.norm.")
TARGET = "layer_norm(teacher tokens), no affine"


@dataclass
class DistillConfig:
    beta: float = 1.0  # SmoothL1 beta (the paper does not state one; torch's default)
    lambda_gate: float = 0.01  # weight of -mean(pi) for Foundry-Gate students; unused without a gate
    init_from_teacher: bool = True


def check_pair(teacher_config, student_config) -> None:
    """Refuse a teacher/student pair whose tokens cannot be compared one to one."""
    if teacher_config.kind != "teacher":
        raise FoundryError(f"the teacher must be a teacher encoder, got a {teacher_config.kind} "
                           f"({teacher_config.name!r}): pass a teacher preset or checkpoint")
    if student_config.kind != "student":
        raise FoundryError(f"the student must be a Foundry student preset, got a {student_config.kind} "
                           f"({student_config.name!r}): pick one of the foundry-* presets")
    problems = []
    if student_config.output_dim != teacher_config.embed_dim:
        problems.append(f"output_dim {student_config.output_dim} vs teacher width {teacher_config.embed_dim} "
                        f"(--set output_dim={teacher_config.embed_dim})")
    for name in ("num_points", "num_groups", "group_size", "normalize_input"):
        mine, theirs = getattr(student_config, name), getattr(teacher_config, name)
        if mine != theirs:
            problems.append(f"{name} {mine} vs teacher {theirs} (--set {name}={theirs})")
    if problems:
        raise FoundryError("the student must reconstruct the teacher's tokens from the same groups, but "
                           + "; ".join(problems) + ": make the student match the teacher")


def build_student(teacher, preset: str, overrides: dict):
    """A fresh student from `preset` + `overrides`, checked against the teacher; records its lineage."""
    from foundry_edge.models.model import PointModel
    from foundry_edge.models.registry import get_config

    config = get_config(preset, **overrides)
    check_pair(teacher.config, config)
    extra = dict(config.extra, teacher=teacher.config.name, target=TARGET)
    return PointModel(config.replace(extra=extra))


def init_from_teacher(student, teacher) -> dict:
    """Copy the teacher's tokenizer, positions and encoder blocks where shapes match.

    -> {"copied": [keys], "skipped": ["key: why"]}. Blocks beyond the student's depth are ignored.
    """
    import torch

    own = student.state_dict()
    copied, skipped = [], []
    with torch.no_grad():
        for key, value in teacher.state_dict().items():
            if not key.startswith(INIT_PREFIXES) or key not in own:
                continue
            if own[key].shape != value.shape:
                skipped.append(f"{key}: teacher {tuple(value.shape)} vs student {tuple(own[key].shape)}")
                continue
            own[key].copy_(value)
            copied.append(key)
    return {"copied": copied, "skipped": skipped}


def distillation_loss(student_out: dict, teacher_tokens, beta: float, lambda_gate: float):
    """(student outputs, (B, c, D) teacher tokens) -> (loss, metrics)."""
    import torch.nn.functional as F

    target = F.layer_norm(teacher_tokens, teacher_tokens.shape[-1:])
    recon = F.smooth_l1_loss(student_out["tokens"], target, beta=beta)
    metrics = {"recon": float(recon.detach())}
    if "gate_prob" not in student_out:
        return recon, metrics
    fused = student_out["gate_prob"].mean()
    metrics["gate_prob"] = float(fused.detach())
    return recon - lambda_gate * fused, metrics


def make_loss_fn(teacher, cfg: DistillConfig):
    """The per-batch step: teacher targets without gradients, then the student on the same points."""
    import torch

    def loss_fn(net, batch):
        points = batch["points"]
        with torch.no_grad():
            target = teacher(points)
        out = net(points)
        if not torch.equal(out["centers"], target["centers"]):
            raise RuntimeError("student and teacher grouped the same clouds differently; check_pair should "
                               "have refused this pair")
        return distillation_loss(out, target["tokens"], cfg.beta, cfg.lambda_gate)

    return loss_fn


def resolve_model(spec_or_model, overrides: dict | None = None):
    """(preset | bundled name | checkpoint path | an already loaded PointModel) -> (model, info)."""
    from foundry_edge.resolve import load_model

    if isinstance(spec_or_model, str):
        return load_model(spec_or_model, **(overrides or {}))
    if overrides:
        raise FoundryError("configuration overrides apply to presets only, not to a loaded model")
    return spec_or_model, {"source": "loaded", "name": spec_or_model.config.name}


def distill(teacher_spec, student_preset: str, dataset, out_dir, *, overrides: dict | None = None,
            train=None, cfg: DistillConfig | None = None, resume=None, log=print):
    """Distil `teacher_spec` (preset, bundled name, checkpoint or model) into a `student_preset` student.

    Writes `out_dir/checkpoint.pt` (resumable, every `checkpoint_every` steps) and `log.jsonl`;
    returns the engine's TrainResult (its `model` is the student) and the weight-copy report.
    """
    import torch

    from foundry_edge.training.engine import Job, TrainConfig, fit

    train = train or TrainConfig()
    cfg = cfg or DistillConfig()
    if cfg.beta <= 0:
        raise FoundryError(f"SmoothL1 beta must be positive, got {cfg.beta}: pass e.g. --beta 1.0")
    torch.manual_seed(train.seed)
    teacher, info = resolve_model(teacher_spec)
    teacher.eval().requires_grad_(False)
    student = build_student(teacher, student_preset, overrides or {})
    copy_report = init_from_teacher(student, teacher) if cfg.init_from_teacher else {"copied": [], "skipped": []}
    log(f"distill: teacher {teacher.config.name} ({info['source']}, width {teacher.config.embed_dim}), student "
        f"{student.config.name}; copied {len(copy_report['copied'])} tensors from the teacher, "
        f"skipped {len(copy_report['skipped'])} of mismatched shape")
    provenance = {"source": "distill", "teacher": info.get("path", info.get("name")), "teacher_sha256": info.get("sha256"),
                  "beta": cfg.beta, "lambda_gate": cfg.lambda_gate, "target": TARGET}
    job = Job("distill", student, make_loss_fn(teacher, cfg), dataset, train, Path(out_dir),
              provenance=provenance, resume=Path(resume) if resume else None, extra_to_devices=(teacher,))
    return fit(job), copy_report
