"""The SuperToken trade-off: distil (or take) a student per SuperToken count and gate budget, fine-tune a
head, measure accuracy and assignment health on held-out clouds, export, profile, and write the Pareto
front of latency (or energy) against accuracy, saying which configurations are dominated.

    sweep = run_sweep(SweepConfig(teacher="default-teacher", supertokens=[4, 8, 16, 32], steps=150))
    sweep_report.write_sweep(sweep, "benchmarks/results/sweep")   # sweep.json, sweep.md, sweep.html

Every entry is the same student preset with the teacher's grouping and width (so distillation copies the
teacher's tokenizer and blocks, as the bundled student was made) and its own `num_supertokens` (and a
Foundry-Gate with `gate_budget` for gated entries). An entry that fails to load, distil, fine-tune,
evaluate or export becomes a row with the stage and its error, and the sweep goes on. The teacher is
measured the same way, as a reference point on the plot (and in the front: a student it dominates is
not worth its speed).
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from foundry_edge.errors import FoundryError
from foundry_edge.profiling.runner import RUNTIMES, default_threads

SCHEMA, SCHEMA_VERSION = "foundry-edge/sweep", 1
OBJECTIVES = ("latency", "energy")
# The student's architecture taken from the teacher unless overridden: the sweep varies s alone.
FROM_TEACHER = ("embed_dim", "num_heads", "depth", "tokenizer_widths", "pos_hidden")


@dataclass
class SweepConfig:
    """What to sweep and how; the CLI's options map one to one onto these fields."""

    teacher: str = "default-teacher"
    student: str = "foundry-edge16"
    supertokens: list[int] = field(default_factory=lambda: [4, 8, 16, 32])
    gate_budgets: list[int] = field(default_factory=list)  # each adds a gated entry per SuperToken count
    checkpoints: list[str] = field(default_factory=list)  # students taken as they are (no distillation)
    overrides: dict = field(default_factory=dict)
    data: str = "synthetic"
    train_samples: int | None = None  # synthetic only; default 2000
    test_samples: int | None = None  # synthetic only; default 500
    steps: int = 150  # distillation steps
    finetune_steps: int | None = None  # classification-head fine-tune (assignment kept); default: steps
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0
    export: bool = True
    runtimes: list[str] = field(default_factory=lambda: ["ort-cpu"])
    points: int | None = None  # profiled points per cloud; default: the teacher's
    batch: int = 1
    warmup_s: float = 0.2
    duration_s: float | None = 1.0
    iterations: int | None = None
    threads: int = field(default_factory=default_threads)
    telemetry_interval_s: float = 0.05
    objective: str = "latency"
    out_dir: Path = Path("runs/sweep")
    work_dir: Path | None = None  # checkpoints, exports and the profile cache; default out_dir/work

    def __post_init__(self):
        problems = [message for bad, message in (
            (not self.supertokens and not self.checkpoints, "nothing to sweep: give --supertokens or --checkpoint"),
            (min(self.supertokens + self.gate_budgets, default=1) < 1, "--supertokens and --gate-budget must be >= 1"),
            (self.steps < 1 or (self.finetune_steps or 1) < 1, "--steps and --finetune-steps must be >= 1"),
            (self.objective not in OBJECTIVES, f"--objective is latency or energy, got {self.objective!r}"),
            (bool(set(self.runtimes) - set(RUNTIMES)), f"--runtime takes {', '.join(RUNTIMES)}, got {self.runtimes}"),
            (not self.runtimes, "give at least one --runtime"),
        ) if bad]
        if problems:
            raise FoundryError("invalid sweep settings: " + "; ".join(problems))
        self.out_dir = Path(self.out_dir)
        self.work_dir = Path(self.work_dir) if self.work_dir else self.out_dir / "work"
        self.finetune_steps = self.finetune_steps or self.steps


@dataclass
class Entry:
    label: str
    num_supertokens: int | None
    gate_budget: int | None = None
    checkpoint: str | None = None


def plan(config: SweepConfig) -> list[Entry]:
    """s4, s8, ... then s4-g2 ... (gated), then the given checkpoints by file name."""
    entries = [Entry(f"s{s}", s) for s in config.supertokens]
    entries += [Entry(f"s{s}-g{b}", s, b) for s in config.supertokens for b in config.gate_budgets]
    entries += [Entry(Path(spec).stem if Path(spec).suffix else spec, None, checkpoint=spec) for spec in config.checkpoints]
    labels = [e.label for e in entries]
    if len(set(labels)) != len(labels):
        raise FoundryError(f"each sweep entry needs its own name, got {labels}: rename the checkpoint files")
    return entries


Log = Callable[[str], None]


def run_sweep(config: SweepConfig, log: Log = print) -> dict:
    """Every entry trained, measured and profiled -> the sweep dict (sweep_report.write_sweep writes it)."""
    import torch

    from foundry_edge.checkpoints.resolve import load_model
    from foundry_edge.training.data import open_training_data

    started = time.time()
    torch.set_num_threads(config.threads)
    teacher, _ = load_model(config.teacher)
    points = config.points or teacher.config.num_points
    train = open_training_data(config.data, "train", teacher.config.num_points, config.train_samples, config.seed)
    test = open_training_data(config.data, "test", teacher.config.num_points, config.test_samples, config.seed)
    log(f"sweep: teacher {config.teacher} ({teacher.config.name}, {teacher.config.num_groups} groups), student "
        f"{config.student}; {len(train)} training and {len(test)} held-out clouds of {config.data!r}; torch "
        f"{torch.__version__}, {config.threads} threads")
    rows = [{**measure_teacher(config, teacher), **evaluate(teacher, test)}]
    for entry in plan(config):
        rows.append(run_entry(config, entry, teacher, train, test, log))
        row = rows[-1]
        log(f"[{entry.label}] " + (f"top-1 {row['accuracy']['top1']:.1f} %" if row["status"] == "ok"
                                   else f"FAILED at {row['stage']}: {row['error']}") + f" ({row['seconds']:.0f} s)")
    profile = profile_rows(config, rows, points, log)
    sweep = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION,
             "created": dt.datetime.fromtimestamp(started, dt.timezone.utc).isoformat(timespec="seconds"),
             "duration_s": None, "settings": settings(config, points), "rows": rows,
             "profile_report": profile.get("report_path"), "machine": profile.get("machine")}
    sweep["fronts"] = fronts(sweep)
    sweep["duration_s"] = time.time() - started
    return sweep


def settings(config: SweepConfig, points: int) -> dict:
    out = {key: str(value) if isinstance(value, Path) else value for key, value in asdict(config).items()}
    return {**out, "points": points, "accuracy": "top-1 % on the held-out split after the head fine-tune"}


def measure_teacher(config: SweepConfig, teacher) -> dict:
    """The teacher's row: its own head, exported once for the ONNX runtimes."""
    row = {"entry": "teacher", "role": "teacher", "model": teacher.config.name, "num_supertokens": None,
           "gate_budget": None, "status": "ok", "stage": None, "error": None, "checkpoint": config.teacher,
           "params": sum(p.numel() for p in teacher.parameters())}
    if config.export and needs_onnx(config):
        try:
            row["onnx"] = export(teacher, config.work_dir / "teacher")
        except (FoundryError, RuntimeError) as exc:
            row["onnx_error"] = f"{type(exc).__name__}: {exc}"
    return row


def needs_onnx(config: SweepConfig) -> bool:
    return any(runtime != "torch" for runtime in config.runtimes)


def run_entry(config: SweepConfig, entry: Entry, teacher, train, test, log: Log) -> dict:
    """Load or distil, fine-tune, evaluate and export one entry; a failure becomes the row's error."""
    from foundry_edge.checkpoints.format import save_checkpoint

    row = {"entry": entry.label, "role": "student", "num_supertokens": entry.num_supertokens,
           "gate_budget": entry.gate_budget, "status": "ok", "stage": None, "error": None}
    work = config.work_dir / entry.label
    stage = "load" if entry.checkpoint else "distill"
    started = time.perf_counter()
    try:
        model = load_student(entry) if entry.checkpoint else distil(config, entry, teacher, train, work, row, log)
        stage = "finetune"
        model = with_classifier(config, model, train, work, row, log)
        model.config = model.config.replace(name=f"sweep-{entry.label}")
        row.update(model=model.config.name, num_supertokens=model.config.num_supertokens,
                   params=sum(p.numel() for p in model.parameters()))
        row["checkpoint"] = str(save_checkpoint(work / f"sweep-{entry.label}.pt", model))
        stage = "evaluate"
        row.update(evaluate(model, test))
        if config.export:
            stage = "export"
            log(f"[{entry.label}] export")
            row["onnx"] = export(model, work / "onnx")
    except FoundryError as exc:
        row.update(status="error", stage=stage, error=str(exc))
    except RuntimeError as exc:  # torch's exporter raises these for graphs it cannot trace
        if stage != "export":
            raise
        row.update(status="error", stage=stage, error=f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
    row["seconds"] = time.perf_counter() - started
    return row


def load_student(entry: Entry):
    from foundry_edge.checkpoints.resolve import load_model

    model, _ = load_model(entry.checkpoint)
    if model.config.kind != "student":
        raise FoundryError(f"{entry.checkpoint} is a {model.config.kind}, not a Foundry student: pass student "
                           "checkpoints to --checkpoint")
    return model


def train_config(config: SweepConfig, steps: int):
    from foundry_edge.training.loop import TrainConfig

    return TrainConfig(steps=steps, batch_size=config.batch_size, lr=config.lr, warmup_steps=min(20, steps // 5),
                       seed=config.seed, log_every=max(1, steps // 5), checkpoint_every=steps, augment=True,
                       progress=False)


def distil(config: SweepConfig, entry: Entry, teacher, train, work: Path, row: dict, log: Log):
    """Distil the teacher into the student preset at this entry's s (and gate budget)."""
    from foundry_edge.training.distill import distill

    overrides = {**{name: getattr(teacher.config, name) for name in FROM_TEACHER}, **config.overrides,
                 "num_supertokens": entry.num_supertokens}
    if entry.gate_budget is not None:
        overrides.update(gate=True, gate_budget=entry.gate_budget)
    result, copied = distill(teacher, config.student, train, work / "distill", overrides=overrides,
                             train=train_config(config, config.steps), log=lambda line: log(f"[{entry.label}] {line}"))
    last = result.records[-1] if result.records else {}
    row["distill"] = {"steps": config.steps, "seconds": result.seconds, "loss": last.get("loss"),
                      "copied_from_teacher": len(copied["copied"])}
    return result.model


def with_classifier(config: SweepConfig, model, train, work: Path, row: dict, log: Log):
    """The model with a classification head for the data's classes: kept if it has one, else fine-tuned
    (the assignment distillation learned is kept: training/finetune.py)."""
    from foundry_edge.training.data import num_classes_of
    from foundry_edge.training.finetune import finetune

    if model.config.num_classes == num_classes_of(train):
        return model
    result = finetune(model, "cls", train, work / "finetune", train=train_config(config, config.finetune_steps),
                      log=lambda line: log(f"[{row['entry']}] {line}"))
    last = result.records[-1] if result.records else {}
    row["finetune"] = {"steps": config.finetune_steps, "seconds": result.seconds, "loss": last.get("loss")}
    return result.model.cpu()


def evaluate(model, test) -> dict:
    """Top-1 on the held-out clouds and, for a student, its eval-mode assignment health."""
    from foundry_edge.training.evaluate import evaluate_model

    found = evaluate_model(model.cpu(), test, way=0)
    if "classification" not in found:
        raise FoundryError(f"{model.config.name} has no classification head to measure accuracy with")
    out = {"accuracy": {"top1": found["classification"]["overall"], "class_mean": found["classification"]["class_mean"],
                        "clouds": found["clouds"]}}
    health = found.get("assignment_health")
    if health:
        out["health"] = {key: health[key] for key in ("num_supertokens", "used_mean", "used_min", "entropy_mean",
                                                      "largest_share_mean", "bypass_share_mean", "collapsed")}
    return out


def export(model, out: Path) -> str:
    """The model as a checked ONNX (PyTorch parity included; TensorRT's parser is the device's job)."""
    from foundry_edge.export import ExportOptions, export_model

    return str(export_model(ExportOptions(model=model, output_dir=out, trt_check="off")).onnx_path)


# -- profiling and the front ------------------------------------------------------------------------
def profile_rows(config: SweepConfig, rows: list[dict], points: int, log: Log) -> dict:
    """Profile every measured entry and the teacher on each runtime; latency, energy and validity go
    into the rows under "profile" by runtime. Torch runs the checkpoints, the others the ONNX files."""
    from foundry_edge.profiling import ProfileConfig, Subject, run_profile, write_reports

    measured: dict = {}
    reports = []
    for family in (["torch"], [r for r in config.runtimes if r != "torch"]):
        runtimes = [r for r in family if r in config.runtimes]
        if not runtimes:
            continue
        key = "checkpoint" if runtimes == ["torch"] else "onnx"
        specs = {row[key]: row for row in rows if row["status"] == "ok" and row.get(key)}
        teacher = next((spec for spec, row in specs.items() if row["role"] == "teacher"), None)
        students = [Subject(spec, "student") for spec, row in specs.items() if row["role"] == "student"]
        if not students:
            continue
        log(f"sweep: profiling {len(students)} students and the teacher on {', '.join(runtimes)}")
        profile = ProfileConfig(students=students, teacher=Subject(teacher, "teacher") if teacher else None,
                                runtimes=runtimes, points=[points], batches=[config.batch], warmup_s=config.warmup_s,
                                duration_s=None if config.iterations else config.duration_s,
                                iterations=config.iterations, threads=config.threads,
                                telemetry_interval_s=config.telemetry_interval_s, out_dir=config.work_dir / "profile",
                                accuracy={Subject(spec, "student").label: row["accuracy"]["top1"]
                                          for spec, row in specs.items() if "accuracy" in row})
        report = run_profile(profile, progress=lambda label: None)
        reports.append(report)
        for m in report["measurements"]:
            measured.setdefault(m["spec"], {})[m["runtime"]] = profile_figures(m)
        for spec, row in specs.items():
            row.setdefault("profile", {}).update(measured.get(spec, {}))
    if not reports:
        return {}
    merged = {**reports[0], "measurements": [m for r in reports for m in r["measurements"]],
              "comparisons": [c for r in reports for c in r["comparisons"]],
              "operators": [], "notes": [n for r in reports for n in r["notes"]],
              "settings": {**reports[0]["settings"], "runtimes": config.runtimes,
                           "accuracy": {k: v for r in reports for k, v in r["settings"]["accuracy"].items()}}}
    paths = write_reports(merged, config.out_dir / "profile")
    return {"report_path": str(paths["html"].relative_to(config.out_dir)), "machine": merged["machine"]}


def profile_figures(m: dict) -> dict:
    """What the sweep keeps of one measurement."""
    if m.get("status") != "ok":
        return {"error": m.get("error")}
    t = m.get("telemetry") or {}
    return {"median_ms": m["latency_ms"]["median"], "p90_ms": m["latency_ms"]["p90"], "flops": m.get("flops"),
            "energy_mj_per_cloud": t.get("energy_mj_per_cloud"), "valid": t.get("valid"),
            "invalid_reasons": t.get("invalid_reasons") or []}


def cost_of(row: dict, runtime: str, objective: str) -> float | None:
    figures = (row.get("profile") or {}).get(runtime) or {}
    return figures.get("median_ms") if objective == "latency" else figures.get("energy_mj_per_cloud")


def fronts(sweep: dict) -> dict:
    """{runtime: {"front": [labels], "dominated": {label: [by]}, "missing": [labels without a figure]}}."""
    from foundry_edge.profiling.pareto import dominated_by, front

    objective = sweep["settings"]["objective"]
    out = {}
    for runtime in sweep["settings"]["runtimes"]:
        points = [{"label": row["entry"], "cost": cost_of(row, runtime, objective),
                   "accuracy": (row.get("accuracy") or {}).get("top1")} for row in sweep["rows"]]
        beaten = dominated_by(points)
        out[runtime] = {"front": [p["label"] for p in front(points)],
                        "dominated": {label: by for label, by in beaten.items() if by},
                        "missing": [p["label"] for p in points if p["label"] not in beaten]}
    return out
