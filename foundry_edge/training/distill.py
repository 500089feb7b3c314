"""Foundry distillation: a frozen teacher's tokens, reconstructed by a student (arXiv 2511.20721).

    loss = SmoothL1(student tokens, LN(teacher tokens)) - lambda_gate * mean(pi)   (pi: Foundry-Gate)
           + lambda_balance * KL(mean_j softmax(DSO logits)_j || uniform)         (per cloud)

LN is a layer norm without affine parameters, the target Point-JEPA regresses in pretraining. The
student's output tokens therefore live in the normalised target space (its config records this in
`extra["target"]`). SmoothL1's beta is not in the paper: we take torch's default 1.0, which on unit-
variance targets behaves like a halved squared error for the small errors that remain late in training.

The DSO schedule makes training end on the assignment inference uses (README, "Why DSO collapsed"):
Gumbel noise with tau annealed from `tau_start` to `tau_end`, then the last `hard_fraction` of the steps
noise-free (straight-through argmax). The balance term keeps each cloud's tokens spread over the
SuperTokens; the monitor measures eval-mode assignment health at every checkpoint and stops a run whose
eval-mode assignment has collapsed while its training-mode one has not.
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
    lambda_balance: float = 0.1  # weight of the per-cloud load-balancing term on the DSO's soft assignment
    tau_start: float = 1.0  # Gumbel-softmax temperature at the first step ...
    tau_end: float = 0.3  # ... annealed geometrically to this one
    hard_fraction: float = 0.2  # the last share of the steps: noise-free straight-through argmax

    def validate(self) -> None:
        problems = []
        if not self.beta > 0:
            problems.append(f"SmoothL1 beta must be positive, got {self.beta} (e.g. --beta 1.0)")
        if not (self.tau_start > 0 and self.tau_end > 0):
            problems.append(f"tau must be positive, got {self.tau_start} -> {self.tau_end}")
        if not 0 <= self.hard_fraction <= 1:
            problems.append(f"hard_fraction must be in 0..1, got {self.hard_fraction}")
        if not (self.lambda_balance >= 0 and self.lambda_gate >= 0):
            problems.append("lambda_balance and lambda_gate must be >= 0")
        if problems:
            raise FoundryError("invalid distillation settings: " + "; ".join(problems))


def dso_schedule(cfg: DistillConfig):
    """(model, step, steps) -> sets the DSO's tau and noise for this step (a Job.before_step)."""
    import math

    def before_step(model, step: int, steps: int) -> None:
        assigner = getattr(model, "assigner", None)
        if assigner is None or not hasattr(assigner, "noise"):
            return
        noisy_steps = max(1, round(steps * (1.0 - cfg.hard_fraction)))
        progress = min(step / noisy_steps, 1.0)
        assigner.tau = math.exp(math.log(cfg.tau_start) + progress * (math.log(cfg.tau_end) - math.log(cfg.tau_start)))
        assigner.noise = step < noisy_steps

    return before_step


def balance_loss(logits, tau: float):
    """(B, c, s) logits -> KL(per-cloud mean of softmax(logits / tau) || uniform), averaged over clouds.

    0 when each cloud's tokens spread evenly in expectation; log(s) when all go to one SuperToken.
    """
    import math

    import torch

    mean = torch.softmax(logits / tau, dim=-1).mean(dim=1)  # (B, s)
    return (math.log(logits.shape[-1]) + (mean * torch.log(mean.clamp_min(1e-12))).sum(dim=-1)).mean()


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
    for name in MATCHED_FIELDS:
        mine, theirs = getattr(student_config, name), getattr(teacher_config, name)
        if mine != theirs:
            problems.append(f"{name} {mine} vs teacher {theirs} (--set {name}={theirs})")
    if problems:
        raise FoundryError("the student must reconstruct the teacher's tokens from the same groups, but "
                           + "; ".join(problems) + ": drop the --set that contradicts the teacher")


MATCHED_FIELDS = ("num_points", "num_groups", "group_size", "normalize_input")


def matched_overrides(teacher_config, overrides: dict) -> dict:
    """What the student must share with its teacher, taken from the teacher unless `overrides` says.

    An explicit override still wins; if it contradicts the teacher, check_pair refuses it in one line.
    """
    derived = {name: getattr(teacher_config, name) for name in MATCHED_FIELDS}
    derived["output_dim"] = teacher_config.embed_dim
    return {**{k: v for k, v in derived.items() if k not in overrides}, **overrides}


def build_student(teacher, preset: str, overrides: dict):
    """A fresh student from `preset` + `overrides`, checked against the teacher; records its lineage."""
    from foundry_edge.models.model import PointModel
    from foundry_edge.models.registry import get_config

    config = get_config(preset, **matched_overrides(teacher.config, overrides))
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


def distillation_loss(student_out: dict, teacher_tokens, beta: float, lambda_gate: float,
                      lambda_balance: float = 0.0, tau: float = 1.0):
    """(student outputs, (B, c, D) teacher tokens) -> (loss, metrics).

    The balance term needs the training-mode `assignment_logits`; eval-mode outputs have none.
    """
    import torch.nn.functional as F

    target = F.layer_norm(teacher_tokens, teacher_tokens.shape[-1:])
    recon = F.smooth_l1_loss(student_out["tokens"], target, beta=beta)
    loss, metrics = recon, {"recon": float(recon.detach())}
    if lambda_balance > 0 and "assignment_logits" in student_out:
        balance = balance_loss(student_out["assignment_logits"], tau)
        metrics["balance"] = float(balance.detach())
        loss = loss + lambda_balance * balance
    if "gate_prob" in student_out:
        fused = student_out["gate_prob"].mean()
        metrics["gate_prob"] = float(fused.detach())
        loss = loss - lambda_gate * fused
    return loss, metrics


def train_health(student_out: dict, config) -> dict:
    """Training-mode assignment health of this batch, for the log (prefix `train_`)."""
    from foundry_edge.assignment_health import assignment_health

    if config.kind != "student":
        return {}
    health = assignment_health(student_out["assignment"].detach().cpu().numpy(), config.num_supertokens)
    return {"train_used": health["used_mean"], "train_entropy": round(health["entropy_mean"], 4)}


def health_monitor(probe_points, num_supertokens: int, check_after: int):
    """A Job.monitor: eval-mode assignment health on fixed clouds; stops a run that collapses at inference.

    The stop applies from step `check_after` on (after the warm-up), when the eval-mode assignment uses
    COLLAPSED_AT or fewer SuperTokens while the last training batches used more.
    """
    import torch

    from foundry_edge.assignment_health import COLLAPSED_AT, assignment_health

    def monitor(model, step: int, records: list) -> dict:
        with torch.no_grad():
            out = model(probe_points.to(next(model.parameters()).device))
        health = assignment_health(out["assignment"].cpu().numpy(), num_supertokens)
        measured = {"eval_used": health["used_mean"], "eval_entropy": round(health["entropy_mean"], 4),
                    "eval_largest_share": round(health["largest_share_mean"], 4)}
        train_used = next((r["train_used"] for r in reversed(records) if "train_used" in r), None)
        if step >= check_after and health["collapsed"] and train_used is not None and train_used > COLLAPSED_AT:
            measured["stop"] = (f"the assignment collapsed at inference: eval mode uses {health['used_mean']:.1f} of "
                                f"{num_supertokens} SuperTokens per cloud while training uses {train_used:.1f}, so the "
                                "exported model would not be the one trained; raise --lambda-balance or use "
                                "dso_logits=centered-cosine")
        return measured

    return monitor


def make_loss_fn(teacher, cfg: DistillConfig, student_config):
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
        tau = getattr(getattr(net, "module", net).assigner, "tau", 1.0)
        loss, metrics = distillation_loss(out, target["tokens"], cfg.beta, cfg.lambda_gate, cfg.lambda_balance, tau)
        return loss, {**metrics, **train_health(out, student_config), "tau": round(tau, 4)}

    return loss_fn


def resolve_model(spec_or_model, overrides: dict | None = None):
    """(preset | bundled name | checkpoint path | an already loaded PointModel) -> (model, info).

    A preset draws from the global RNG, which training seeds with its --seed just before: the same weights as
    `load_model(preset, seed=that seed)` gives export, run and verify.
    """
    from foundry_edge.checkpoints.resolve import load_model

    if isinstance(spec_or_model, str):
        return load_model(spec_or_model, seed=None, **(overrides or {}))
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

    from foundry_edge.training.loop import Job, TrainConfig, fit

    train = train or TrainConfig()
    cfg = cfg or DistillConfig()
    cfg.validate()
    torch.manual_seed(train.seed)
    teacher, info = resolve_model(teacher_spec)
    teacher.eval().requires_grad_(False)
    student = build_student(teacher, student_preset, overrides or {})
    copy_report = init_from_teacher(student, teacher) if cfg.init_from_teacher else {"copied": [], "skipped": []}
    log(f"distill: teacher {teacher.config.name} ({info['source']}, width {teacher.config.embed_dim}), student "
        f"{student.config.name}; copied {len(copy_report['copied'])} tensors from the teacher, "
        f"skipped {len(copy_report['skipped'])} of mismatched shape")
    sc = student.config
    log(f"distill: from the teacher: {sc.num_points} points, {sc.num_groups} groups of {sc.group_size}, "
        f"normalize_input={sc.normalize_input}, output_dim {sc.output_dim}")
    provenance = {"source": "distill", "teacher": info.get("path", info.get("name")), "teacher_sha256": info.get("sha256"),
                  "beta": cfg.beta, "lambda_gate": cfg.lambda_gate, "target": TARGET,
                  "dso_schedule": {"lambda_balance": cfg.lambda_balance, "tau_start": cfg.tau_start,
                                   "tau_end": cfg.tau_end, "hard_fraction": cfg.hard_fraction}}
    job = Job("distill", student, make_loss_fn(teacher, cfg, sc), dataset, train, Path(out_dir),
              provenance=provenance, resume=Path(resume) if resume else None, extra_to_devices=(teacher,),
              before_step=dso_schedule(cfg), monitor=student_monitor(student, dataset, train), log=log)
    return fit(job), copy_report


def student_monitor(model, dataset, train):
    """The eval-mode health monitor on the first (up to) 64 clouds of `dataset`; None for non-DSO models."""
    import torch

    if model.config.kind != "student":
        return None
    probe = torch.stack([torch.as_tensor(dataset[i]["points"]) for i in range(min(64, len(dataset)))])
    return health_monitor(probe, model.config.num_supertokens, check_after=train.warmup_steps)
