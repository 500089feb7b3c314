"""Fine-tuning a teacher or a student with a classification or a part-segmentation head.

The same code serves both kinds: heads read tokens of the model's token width, which for a student are
its reconstruction of the teacher's tokens. `freeze_backbone` trains the head alone on frozen tokens
(what the distilled tokens are worth as they are); otherwise everything trains (the paper's fine-tune).
"""

from __future__ import annotations

from pathlib import Path

from foundry_edge.errors import FoundryError

TASKS = ("cls", "seg")
HEADS = ("cls_head.", "seg_head.")


def with_head(model, task: str, num_outputs: int):
    """(PointModel, 'cls' | 'seg', classes or parts) -> a PointModel with that head.

    The backbone's weights carry over; an existing head of the same size carries over too (so a
    fine-tune can continue), any other head starts fresh.
    """
    from foundry_edge.checkpoints.format import load_weights
    from foundry_edge.models.model import PointModel

    if task not in TASKS:
        raise FoundryError(f"task must be one of {TASKS}, got {task!r}")
    field, prefix = ("num_classes", "cls_head.") if task == "cls" else ("num_part_classes", "seg_head.")
    config = model.config.replace(**{field: num_outputs})
    state = model.state_dict()
    if getattr(model.config, field) != num_outputs:
        state = {k: v for k, v in state.items() if not k.startswith(prefix)}
    new = PointModel(config)
    load_weights(new, state, allow_missing=(prefix,), source=f"{model.config.name} backbone")
    return new


# The DSO's assignment parameters: what decides which SuperToken a token goes to.
ASSIGNMENT_PARAMS = ("assigner.q.", "assigner.k.", "assigner.supertokens", "assigner.logit_scale")


def keep_assignment(model) -> None:
    """Freeze the DSO's queries, keys, SuperTokens and logit scale; its values and the rest still train.

    With keys-only centred logits an end-to-end fine-tune for classification merged SuperTokens (eval
    mode: 13.3 -> 9.7 used of 16, entropy 0.88 -> 0.71); keeping the assignment held 12.5 / 0.85. With
    keys and queries centred both ways stay spread (README, "Why the DSO collapsed"): keeping is the
    default because it cannot merge what distillation spread.
    """
    for name, param in model.named_parameters():
        if name.startswith(ASSIGNMENT_PARAMS):
            param.requires_grad_(False)


def freeze_backbone(model) -> None:
    """Only the heads keep gradients."""
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith(HEADS))


def head_only_train_mode(model) -> None:
    """Heads train; the frozen backbone stays in eval (BatchNorm statistics fixed, DSO by argmax)."""
    model.train()
    for name, child in model.named_children():
        if name not in ("cls_head", "seg_head"):
            child.eval()


def make_loss_fn(task: str, config, lambda_balance: float = 0.0):
    """(net, batch) -> (cross-entropy [+ DSO balance term], {"acc", training-mode assignment health})."""
    import torch.nn.functional as F

    from foundry_edge.training.distill import balance_loss, train_health

    def loss_fn(net, batch):
        out = net(batch["points"])
        if task == "cls":
            logits, target = out["logits"], batch["label"]
        else:
            logits, target = out["seg_logits"].transpose(1, 2), batch["parts"]  # (B, P, N) for cross_entropy
        loss = F.cross_entropy(logits, target)
        metrics = {"acc": float((logits.argmax(dim=1) == target).float().mean()), **train_health(out, config)}
        if lambda_balance > 0 and "assignment_logits" in out:
            balance = balance_loss(out["assignment_logits"], getattr(net, "module", net).assigner.tau)
            metrics["balance"] = float(balance.detach())
            loss = loss + lambda_balance * balance
        return loss, metrics

    return loss_fn


def finetune(model_spec, task: str, dataset, out_dir, *, overrides: dict | None = None, train=None,
             frozen: bool = False, resume=None, log=print, lambda_balance: float = 0.1,
             train_assignment: bool = False):
    """Fine-tune `model_spec` (preset, bundled name, checkpoint or model) on `dataset` for `task`.

    A preset trains from scratch (how the bundled teacher was made). A DSO student keeps the assignment
    distillation learned (`keep_assignment`) unless `train_assignment`; then it trains on its inference
    assignment (noise-free straight-through argmax) with the load-balancing term (`lambda_balance`). Writes
    `out_dir/checkpoint.pt` and `log.jsonl`; returns the engine's TrainResult.
    """
    import torch

    from foundry_edge.training.data import num_classes_of, num_parts_of
    from foundry_edge.training.distill import resolve_model, student_monitor
    from foundry_edge.training.loop import Job, TrainConfig, fit

    train = train or TrainConfig()
    if task not in TASKS:
        raise FoundryError(f"task must be one of {TASKS}, got {task!r}")
    if task == "seg" and dataset[0].get("parts") is None:
        raise FoundryError("part segmentation needs per-point part labels, and this data set has none: "
                           "use --task cls or a data set with parts")
    torch.manual_seed(train.seed)
    base, info = resolve_model(model_spec, overrides)
    outputs = num_classes_of(dataset) if task == "cls" else num_parts_of(dataset)
    model = with_head(base, task, outputs)
    if frozen:
        freeze_backbone(model)
    if hasattr(getattr(model, "assigner", None), "noise"):
        model.assigner.noise = False  # fine-tune on the assignment inference uses (straight-through argmax)
        if not train_assignment:
            keep_assignment(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log(f"finetune: {model.config.name} ({info['source']}, {model.config.kind}) for {task} with {outputs} outputs; "
        f"{trainable} trainable parameters{' (backbone frozen)' if frozen else ''}")
    provenance = {"source": "finetune", "base": info.get("path", info.get("name")), "base_sha256": info.get("sha256"), "task": task,
                  "frozen_backbone": frozen, "trained_assignment": train_assignment}
    job = Job("finetune", model, make_loss_fn(task, model.config, 0.0 if frozen else lambda_balance), dataset, train, Path(out_dir), provenance=provenance,
              resume=Path(resume) if resume else None, train_mode=head_only_train_mode if frozen else None,
              monitor=student_monitor(model, dataset, train), log=log)
    return fit(job)
