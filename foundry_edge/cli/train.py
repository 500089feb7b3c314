"""`foundry-edge distill`, `finetune` and `evaluate`: Foundry training and the teacher/student comparison.

Each runs in one process or, launched by torchrun, in several (gloo on CPU, nccl on CUDA):

    torchrun --nproc_per_node 2 -m foundry_edge distill --teacher T.pt --student foundry-edge16 --out runs/d
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import List, Optional

import typer

from foundry_edge.cli import options as opt
from foundry_edge.errors import FoundryError

# Options of distill and finetune that are training's own; each maps onto a TrainConfig field. --data, --samples,
# --points, --seed, --set and --out are the shared ones of foundry_edge.cli.options.
DATA = opt.data("synthetic")
SAMPLES = opt.samples(None)
OUT = opt.out_dir(..., "checkpoint.pt (resumable), log.jsonl and model.pt")
STEPS = typer.Option(1000, "--steps", help="Optimizer steps.")
BATCH_SIZE = typer.Option(32, "--batch-size", help="Clouds per step and per process.")
LR = typer.Option(5e-4, "--lr", help="Peak learning rate (AdamW).")
WD = typer.Option(0.05, "--weight-decay", help="AdamW weight decay on weight matrices.")
WARMUP_STEPS = typer.Option(None, "--warmup-steps", help="Linear warm-up steps before the cosine decay (default 50).")
WARMUP_DEFAULT = 50
LOG_EVERY = typer.Option(10, "--log-every", help="Steps between log.jsonl records.")
CKPT_EVERY = typer.Option(100, "--checkpoint-every", help="Steps between checkpoints.")
DEVICE = typer.Option("auto", "--device", help="auto, cpu or cuda.")
AUGMENT = typer.Option(False, "--augment/--no-augment", help="Random anisotropic scaling of the clouds.")
RESUME = typer.Option(None, "--resume", help="A checkpoint.pt of an interrupted run of the same command.")


def register(app: typer.Typer) -> None:
    app.command("distill")(distill)
    app.command("finetune")(finetune)
    app.command("evaluate")(evaluate)


def _say(text: str) -> None:
    """Print on the main process only (every torchrun rank runs this command)."""
    if os.environ.get("RANK", "0") == "0":
        typer.echo(text)


def _size(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.2f} MB"


def _train_config(steps, batch_size, lr, weight_decay, warmup, seed, log_every, checkpoint_every, device, augment):
    """The TrainConfig of the options, validated before any model or data is loaded."""
    from foundry_edge.training.loop import TrainConfig

    config = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup_steps=warmup,
                         seed=seed, log_every=log_every, checkpoint_every=checkpoint_every, device=device,
                         augment=augment, progress=os.environ.get("RANK", "0") == "0")
    config.validate()
    return config


def _writing(out: Path, command: str, resume: Optional[Path] = None):
    """Lock --out for the run on rank 0, its only writer (checkpoints go in place, so a stopped run resumes)."""
    import contextlib

    from foundry_edge.fileio import OutputSet, refuse_overwrite

    refuse_overwrite(out, [], folder=True, option="--out")
    if resume is not None and not Path(resume).is_file():
        raise FoundryError(f"expected a checkpoint to --resume from, found nothing at {resume}: pass the "
                           "checkpoint.pt of the run to continue")
    return OutputSet(command, [out]) if os.environ.get("RANK", "0") == "0" else contextlib.nullcontext()


def _start_line(command: str, train, data: str, dataset) -> None:
    import torch

    world = os.environ.get("WORLD_SIZE", "1")
    _say(f"{command}: torch {torch.__version__}, device {train.device}, {world} process(es); data {data!r}: "
         f"{len(dataset)} clouds x {dataset[0]['points'].shape[0]} points; {train.steps} steps of "
         f"{train.batch_size} clouds per process, lr {train.lr}")


def _finish(command: str, result, out: Path) -> None:
    """Write the final weights (no optimizer state) and say what was written."""
    from foundry_edge.checkpoints.format import save_checkpoint

    if result.rank != 0:
        return
    model_path = save_checkpoint(out / "model.pt", result.model, provenance=result.provenance)
    last = result.records[-1] if result.records else {}
    _say(f"{command}: done in {result.seconds:.1f} s, final loss {last.get('loss', float('nan')):.4f}; wrote "
         f"{model_path} ({_size(model_path)}), {result.checkpoint} ({_size(result.checkpoint)}), {out / 'log.jsonl'}")


def distill(
    teacher: str = typer.Option("default-teacher", "--teacher", help="Teacher: a preset, 'default-teacher' or a checkpoint."),
    student: str = typer.Option("foundry-edge16", "--student", help="Student preset (foundry-*)."),
    set_: List[str] = opt.SET,
    data: str = DATA, samples: Optional[int] = SAMPLES, points: Optional[int] = opt.POINTS, out: Path = OUT,
    steps: int = STEPS, batch_size: int = BATCH_SIZE, lr: float = LR, weight_decay: float = WD,
    warmup_steps: Optional[int] = WARMUP_STEPS, warmup: Optional[int] = opt.deprecated("--warmup"),
    seed: int = opt.SEED, log_every: int = LOG_EVERY, checkpoint_every: int = CKPT_EVERY, device: str = DEVICE,
    augment: bool = AUGMENT, resume: Optional[Path] = RESUME,
    beta: float = typer.Option(1.0, "--beta", help="SmoothL1 beta (the paper gives none; torch's default)."),
    lambda_gate: Optional[float] = typer.Option(None, "--lambda-gate", help="Gate term weight (Foundry-Gate students only; default 0.01)."),
    init_from_teacher: bool = typer.Option(True, "--init-from-teacher/--no-init-from-teacher", help="Copy the teacher's tokenizer, positions and blocks where shapes match."),
    lambda_balance: float = typer.Option(0.1, "--lambda-balance", help="Weight of the per-cloud load-balancing term that keeps the DSO assignment spread (0: off)."),
    tau_start: float = typer.Option(1.0, "--tau-start", help="Gumbel-softmax temperature at the first step."),
    tau_end: float = typer.Option(0.3, "--tau-end", help="Temperature reached when the noisy phase ends (geometric annealing)."),
    hard_fraction: float = typer.Option(0.2, "--hard-fraction", help="Last share of the steps trained noise-free on the argmax assignment inference uses."),
) -> None:
    """Distil a frozen teacher's tokens into a Foundry student (SmoothL1 on layer-normed targets).

    Points, groups, group size, input normalisation and the output width come from the teacher;
    an explicit --set of one of them must agree with it.
    """
    from foundry_edge.models.config import parse_overrides
    from foundry_edge.models.registry import get_config
    from foundry_edge.training.data import open_training_data
    from foundry_edge.training.distill import DistillConfig, distill as run_distill, matched_overrides, resolve_model

    overrides = parse_overrides(set_)
    warmup = opt.renamed("distill", "--warmup", "--warmup-steps", warmup, warmup_steps, WARMUP_DEFAULT)
    train = _train_config(steps, batch_size, lr, weight_decay, warmup, seed, log_every, checkpoint_every, device, augment)
    teacher_config = resolve_model(teacher)[0].config
    student_config = get_config(student, **matched_overrides(teacher_config, overrides))
    if lambda_gate is not None and not student_config.gate:
        raise FoundryError(f"--lambda-gate weights the Foundry-Gate term, but {student!r} has no gate: drop "
                           "--lambda-gate or pick a gated student (foundry-gate16, or --set gate=true)")
    dataset = open_training_data(data, "train", points or student_config.num_points, samples, seed)
    _start_line("distill", train, data, dataset)
    cfg = DistillConfig(beta=beta, init_from_teacher=init_from_teacher, lambda_balance=lambda_balance,
                        tau_start=tau_start, tau_end=tau_end, hard_fraction=hard_fraction,
                        **({} if lambda_gate is None else {"lambda_gate": lambda_gate}))
    cfg.validate()
    with _writing(out, "distill", resume):
        result, _ = run_distill(teacher, student, dataset, out, overrides=overrides, train=train, cfg=cfg,
                                resume=resume, log=_say)
        _finish("distill", result, out)


def finetune(
    model: str = typer.Argument(..., help="A teacher or student: preset (trains from scratch), 'default', or a checkpoint."),
    task: str = typer.Option("cls", "--task", help="cls (classification head) or seg (part-segmentation head)."),
    freeze_backbone: bool = typer.Option(False, "--freeze-backbone", help="Train the head only, on frozen tokens."),
    set_: List[str] = opt.SET,
    data: str = DATA, samples: Optional[int] = SAMPLES, points: Optional[int] = opt.POINTS, out: Path = OUT,
    steps: int = STEPS, batch_size: int = BATCH_SIZE, lr: float = LR, weight_decay: float = WD,
    warmup_steps: Optional[int] = WARMUP_STEPS, warmup: Optional[int] = opt.deprecated("--warmup"),
    seed: int = opt.SEED, log_every: int = LOG_EVERY, checkpoint_every: int = CKPT_EVERY, device: str = DEVICE,
    augment: bool = AUGMENT, resume: Optional[Path] = RESUME,
    test_samples: Optional[int] = typer.Option(None, "--test-samples", help="Synthetic data only: clouds in the test split."),
    lambda_balance: float = typer.Option(0.1, "--lambda-balance", help="DSO students: weight of the load-balancing term that keeps the assignment spread (0: off)."),
    train_assignment: bool = typer.Option(False, "--train-assignment", help="DSO students: also train the assignment (queries, keys, SuperTokens); by default distillation's is kept."),
) -> None:
    """Fine-tune a teacher or student with a classification or part-segmentation head, then test it."""
    from foundry_edge.models.config import parse_overrides
    from foundry_edge.checkpoints.resolve import load_model
    from foundry_edge.training.data import open_training_data
    from foundry_edge.training.evaluate import evaluate_model
    from foundry_edge.training.finetune import finetune as run_finetune

    warmup = opt.renamed("finetune", "--warmup", "--warmup-steps", warmup, warmup_steps, WARMUP_DEFAULT)
    train = _train_config(steps, batch_size, lr, weight_decay, warmup, seed, log_every, checkpoint_every, device, augment)
    if lambda_balance < 0:
        raise FoundryError(f"--lambda-balance must be >= 0, got {lambda_balance}")
    base, _ = load_model(model, seed=seed, **parse_overrides(set_))
    num_points = points or base.config.num_points
    dataset = open_training_data(data, "train", num_points, samples, seed)
    _start_line("finetune", train, data, dataset)
    with _writing(out, "finetune", resume):
        result = run_finetune(base, task, dataset, out, train=train, frozen=freeze_backbone, resume=resume, log=_say,
                              lambda_balance=lambda_balance, train_assignment=train_assignment)
        _finish("finetune", result, out)
    if result.rank == 0:
        test = open_training_data(data, "test", num_points, test_samples, seed)
        start = time.perf_counter()
        row = evaluate_model(result.model.cpu(), test, way=0)
        metric = row.get("classification") or row.get("segmentation")
        _say(f"finetune: test split ({row['clouds']} clouds, {time.perf_counter() - start:.1f} s): "
             + ", ".join(f"{k} {v:.2f}" for k, v in metric.items()))


def evaluate(
    models: List[str] = typer.Argument(..., help="Teachers and students to compare: presets, 'default', checkpoints."),
    teacher: Optional[str] = typer.Option(None, "--teacher", help="Compare each student's tokens with this teacher's."),
    data: str = DATA, points: Optional[int] = opt.POINTS,
    split: str = typer.Option("test", "--split", help="The split to evaluate on."),
    samples: Optional[int] = SAMPLES,
    limit: Optional[int] = typer.Option(None, "--limit", help="Evaluate the first LIMIT clouds only."),
    way: int = typer.Option(5, "--way", help="Few-shot classes per episode (0: no few-shot)."),
    shot: int = typer.Option(10, "--shot", help="Few-shot support clouds per class."),
    query: int = typer.Option(20, "--query", help="Few-shot query clouds per class."),
    episodes: int = typer.Option(10, "--episodes", help="Few-shot episodes."),
    seed: int = opt.SEED,
    out: Path = opt.out_dir(..., "report.json, report.md and the pictures"),
) -> None:
    """Accuracy, part mIoU, few-shot probes, a student's eval-mode assignment health and teacher/student
    token agreement -> report.json + report.md."""
    from foundry_edge.fileio import OutputSet, refuse_overwrite
    from foundry_edge.checkpoints.resolve import load_model
    from foundry_edge.training.data import open_training_data

    start = time.perf_counter()
    refuse_overwrite(out, [], folder=True, option="--out")
    for name in ("report.json", "report.md"):
        refuse_overwrite(out / name, [*models, teacher], option="the report")
    loaded = [(spec, *load_model(spec, seed=seed)) for spec in models]
    reference = load_model(teacher, seed=seed)[0] if teacher else None
    dataset = open_training_data(data, split, points or loaded[0][1].config.num_points, samples, seed)
    typer.echo(f"evaluate: {len(loaded)} model(s) on {data!r} split {split!r} ({len(dataset)} clouds)")
    report = {"data": data, "split": split, "models": [], "token_agreement": []}
    with OutputSet("evaluate", [out]) as outputs:
        json_path, md_path = _evaluate_all(loaded, reference, teacher, dataset, report, outputs.folder(out), limit, way,
                                           shot, query, episodes, seed)
    json_path, md_path = out / json_path.name, out / md_path.name
    typer.echo(f"evaluate: done in {time.perf_counter() - start:.1f} s; wrote {json_path} ({_size(json_path)}), "
               f"{md_path} ({_size(md_path)})")


def _evaluate_all(loaded, reference, teacher, dataset, report: dict, folder: Path, limit, way, shot, query, episodes,
                  seed):
    """Every model's row (and each student's agreement with the teacher) into `report`, written to `folder`."""
    from foundry_edge.training.evaluate import evaluate_model
    from foundry_edge.training.report import write_report

    for spec, model, _ in loaded:
        row = {"spec": spec, **evaluate_model(model, dataset, limit=limit, way=way, shot=shot, query=query,
                                              episodes=episodes, seed=seed)}
        report["models"].append(row)
        typer.echo(f"  {spec}: " + "; ".join(_summary(row)))
        if reference is not None and model.config.kind == "student":
            stem = f"{len(report['token_agreement']) + 1}-{Path(spec).stem}"
            report["token_agreement"].append(_agreement(reference, model, spec, teacher, dataset, limit, folder, stem))
    return write_report(report, folder)


def _agreement(reference, model, spec: str, teacher: str, dataset, limit, out: Path, stem: str) -> dict:
    """One student's tokens against the teacher's: cosine summary and two pictures in `out`."""
    from foundry_edge.training.evaluate import token_agreement
    from foundry_edge.training.report import cosine_summary, plot_agreement

    agreement = token_agreement(reference, model, dataset, limit=limit)
    pictures = plot_agreement(agreement, getattr(dataset, "classes", None), f"{spec} vs {teacher}", out, stem)
    summary = cosine_summary(agreement["cosine"])
    typer.echo(f"  {spec} vs {teacher}: token cosine mean {summary['mean']:.3f}, median {summary['median']:.3f}")
    return {"student": spec, "teacher": teacher, "cosine": summary, "pictures": pictures}


def _summary(row: dict) -> list[str]:
    parts = []
    if "classification" in row:
        parts.append(f"accuracy {row['classification']['overall']:.2f}%")
    if "segmentation" in row:
        seg = row["segmentation"]
        parts.append(f"mIoU class {seg['class_miou']:.2f}% / instance {seg['instance_miou']:.2f}%")
    if "few_shot" in row:
        fs = row["few_shot"]
        parts.append(f"{fs['way']}-way {fs['shot']}-shot NC {fs['nearest_centroid']['mean']:.1f}% "
                     f"LP {fs['linear_probe']['mean']:.1f}%")
    if "assignment_health" in row:
        from foundry_edge.assignment_health import describe

        parts.append(describe(row["assignment_health"]))
    return parts or ["no head and no few-shot: nothing to measure"]
