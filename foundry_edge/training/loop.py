"""The training loop that distillation and fine-tuning share.

AdamW with a linear warm-up then a cosine decay (torch's LinearLR + CosineAnnealingLR in
SequentialLR); one or many processes through torch's own DistributedDataParallel and
DistributedSampler, set up from the torchrun environment (gloo on CPU, nccl on CUDA); a rich progress
bar; atomic periodic checkpoints that hold everything a resume needs (weights, optimizer, scheduler,
step, RNG), and the loss curve as JSON lines. A run counts steps, not epochs, so a resumed run replays
exactly the batches an uninterrupted one would have seen.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from foundry_edge.errors import FoundryError
from foundry_edge.fileio import write_text_atomic

CHECKPOINT_NAME = "checkpoint.pt"  # the latest resumable state, rewritten atomically
LOG_NAME = "log.jsonl"


@dataclass
class TrainConfig:
    """The optimisation settings of a run; `batch_size` is per process."""

    steps: int = 1000
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_steps: int = 50
    min_lr_ratio: float = 0.01  # the cosine ends at lr * min_lr_ratio
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 100
    device: str = "auto"  # "auto", "cpu", "cuda" (under torchrun: one GPU per local rank)
    augment: bool = False  # random anisotropic scale per cloud (it survives the model's normalisation)
    progress: bool = True

    def validate(self) -> None:
        problems = [f"{name} must be positive, got {getattr(self, name)}"
                    for name in ("steps", "batch_size", "lr", "log_every", "checkpoint_every")
                    if not 0 < getattr(self, name) < float("inf")]  # NaN fails both comparisons
        for name in ("weight_decay", "min_lr_ratio"):
            if not 0 <= getattr(self, name) < float("inf"):
                problems.append(f"{name} must be a finite number >= 0, got {getattr(self, name)}")
        if not 0 <= self.warmup_steps < self.steps:
            problems.append(f"warmup_steps must be in 0..steps-1 ({self.steps - 1}), got {self.warmup_steps}")
        if self.device not in ("auto", "cpu", "cuda"):
            problems.append(f"device must be auto, cpu or cuda, got {self.device!r}")
        if problems:
            raise FoundryError("invalid training settings: " + "; ".join(problems))


@dataclass
class Job:
    """One run: the model to train and save, how a batch becomes a loss, the data and where to write.

    `loss_fn(net, batch) -> (loss, metrics)` gets the (possibly DDP-wrapped) model; `train_mode(model)`
    puts the model in training mode (a fine-tune with a frozen backbone keeps the backbone in eval).
    """

    name: str
    model: object
    loss_fn: Callable
    dataset: object
    config: TrainConfig
    out_dir: Path
    provenance: dict = field(default_factory=dict)
    resume: Path | None = None
    train_mode: Callable | None = None
    extra_to_devices: tuple = ()  # frozen modules the loss uses (the teacher), moved with the model
    # Called with (model, step, total steps) before each step: schedules that are not the optimizer's
    # (the DSO's Gumbel temperature).
    before_step: Callable | None = None
    # Called with (model, step, records) at each checkpoint on rank 0, the model in eval mode; returns
    # metrics for the log (eval-mode assignment health). A "stop" entry (a reason) ends the run with
    # that line; the checkpoint just written is kept.
    monitor: Callable | None = None
    log: Callable = print


@dataclass
class TrainResult:
    model: object
    records: list
    checkpoint: Path
    seconds: float
    rank: int = 0
    world_size: int = 1
    provenance: dict = field(default_factory=dict)  # the job's, for the final weights


@dataclass
class DistContext:
    rank: int
    world_size: int
    device: object
    owns_group: bool  # we initialised the process group, so we tear it down

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str) -> DistContext:
    """One process, or one of torchrun's (WORLD_SIZE/RANK/LOCAL_RANK/MASTER_ADDR set by torchrun)."""
    import torch
    import torch.distributed as dist

    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise FoundryError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu or auto")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    target = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(target)
    if world == 1:
        return DistContext(0, 1, target, owns_group=False)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), target, owns_group=owns)


def param_groups(model, weight_decay: float) -> list[dict]:
    """Decay matrices only; biases, norms and SuperTokens' 1-D companions are left alone (timm)."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise FoundryError("nothing to train: every parameter is frozen")
    decay = [p for n, p in trainable if p.ndim >= 2]
    no_decay = [p for n, p in trainable if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model, cfg: TrainConfig):
    """AdamW, then `warmup_steps` of linear warm-up and a cosine decay to lr * min_lr_ratio."""
    import torch
    from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr)
    cosine = CosineAnnealingLR(optimizer, T_max=cfg.steps - cfg.warmup_steps, eta_min=cfg.lr * cfg.min_lr_ratio)
    if cfg.warmup_steps == 0:
        return optimizer, cosine
    warmup = LinearLR(optimizer, start_factor=1.0 / (cfg.warmup_steps + 1), total_iters=cfg.warmup_steps)
    return optimizer, SequentialLR(optimizer, [warmup, cosine], milestones=[cfg.warmup_steps])


def augment_scale(points):
    """(B, N, 3) -> (B, N, 3) each cloud scaled per axis by U(0.8, 1.25) (Point-MAE's augmentation)."""
    import torch

    scale = torch.empty(points.shape[0], 1, 3, device=points.device).uniform_(0.8, 1.25)
    return points * scale


def fit(job: Job) -> TrainResult:
    """Train `job.model` for `job.config.steps` steps; returns the trained model in eval mode."""
    cfg = job.config
    cfg.validate()
    ctx = setup_distributed(cfg.device)
    try:
        return _run(job, cfg, ctx)
    finally:
        if ctx.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def _run(job: Job, cfg: TrainConfig, ctx: DistContext) -> TrainResult:
    from torch.nn.parallel import DistributedDataParallel

    model = job.model.to(ctx.device)
    for module in job.extra_to_devices:
        module.to(ctx.device)
    optimizer, scheduler = make_optimizer(model, cfg)
    step, records = 0, []
    if job.resume is not None:
        step, records = restore(job, model, optimizer, scheduler)
    net = model
    if ctx.world_size > 1:
        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        net = DistributedDataParallel(model, device_ids=device_ids)
    (job.train_mode or (lambda m: m.train()))(model)
    checkpoint = Path(job.out_dir) / CHECKPOINT_NAME
    last_good = (job.resume, step) if job.resume is not None else None  # (checkpoint, step)
    started = time.perf_counter()
    with _progress(ctx.main and cfg.progress, job.name, cfg.steps, step) as show:
        window_start, window_clouds = time.perf_counter(), 0
        for batch in _batches(job.dataset, cfg, ctx, step):
            batch = {k: v.to(ctx.device) for k, v in batch.items()}
            if cfg.augment:
                batch["points"] = augment_scale(batch["points"])
            if job.before_step is not None:
                job.before_step(model, step, cfg.steps)
            loss, metrics = job.loss_fn(net, batch)
            value = _mean_over_ranks(loss.detach(), ctx)
            if not math.isfinite(value):
                _stop_on_nan(job, records, step, value, last_good, ctx)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            window_clouds += batch["points"].shape[0] * ctx.world_size
            if step % cfg.log_every == 0 or step == cfg.steps:
                rate = window_clouds / max(time.perf_counter() - window_start, 1e-9)
                records.append({"step": step, "loss": value, "lr": scheduler.get_last_lr()[0],
                                "clouds_per_s": round(rate, 2), **metrics})
                window_start, window_clouds = time.perf_counter(), 0
            show(step, value, records)
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                if ctx.main:
                    save_training_checkpoint(job, model, optimizer, scheduler, step, records)
                last_good = (checkpoint, step)
                if ctx.main and job.monitor is not None:
                    _monitor(job, model, step, records)
    _share_rank0_buffers(model, ctx)
    model.eval()
    return TrainResult(model, records, checkpoint, time.perf_counter() - started, ctx.rank, ctx.world_size,
                       job.provenance)


def _monitor(job: Job, model, step: int, records: list) -> None:
    """Run the job's monitor in eval mode, log what it measured, and restore the training mode."""
    model.eval()
    try:
        measured = dict(job.monitor(model, step, records))
    finally:
        (job.train_mode or (lambda m: m.train()))(model)
    stop = measured.pop("stop", None)
    if records and records[-1]["step"] == step:
        records[-1].update(measured)
    else:
        records.append({"step": step, **measured})
    write_log(Path(job.out_dir), records)
    if stop:
        raise FoundryError(f"{job.name} stopped at step {step}: {stop}; the checkpoint of this step is kept")


def _batches(dataset, cfg: TrainConfig, ctx: DistContext, start_step: int):
    """Yield collated batches from `start_step` to `cfg.steps`, epoch after epoch.

    DistributedSampler shuffles with seed + epoch and gives each rank its share; a resumed run skips
    the first `start_step % steps_per_epoch` batches of its epoch by index, without reading them.
    """
    import torch
    from torch.utils.data import DataLoader, DistributedSampler

    from foundry_edge.training.data import collate

    sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                 seed=cfg.seed, drop_last=True)
    per_epoch = len(sampler) // cfg.batch_size
    if per_epoch == 0:
        raise FoundryError(f"the training data has {len(dataset)} clouds, fewer than one batch of {cfg.batch_size} "
                           f"per process ({ctx.world_size} processes): lower --batch-size or add data")
    step = start_step
    while step < cfg.steps:
        epoch, skip = divmod(step, per_epoch)
        sampler.set_epoch(epoch)
        order = list(sampler)[skip * cfg.batch_size: per_epoch * cfg.batch_size]
        # An explicit generator: the loader would otherwise draw its seed from the global RNG.
        loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=order, collate_fn=collate,
                            drop_last=True, generator=torch.Generator())
        for batch in loader:
            yield batch
            step += 1
            if step >= cfg.steps:
                return


def _share_rank0_buffers(model, ctx: DistContext) -> None:
    """Give every rank rank 0's buffers (BatchNorm statistics), as saved in the checkpoint.

    DDP syncs gradients, so parameters agree, and broadcasts buffers before each forward; the last
    forward still leaves each rank with running statistics of its own batch.
    """
    if ctx.world_size > 1:
        import torch.distributed as dist

        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def _mean_over_ranks(loss, ctx: DistContext) -> float:
    """The loss averaged over processes, so every rank sees (and stops on) the same value."""
    if ctx.world_size > 1:
        import torch.distributed as dist

        loss = loss.clone()
        dist.all_reduce(loss)
        loss /= ctx.world_size
    return float(loss)


def _stop_on_nan(job: Job, records, step, value, last_good, ctx: DistContext):
    if ctx.main:
        write_log(Path(job.out_dir), records)
    kept = (f"the last good checkpoint is {str(last_good[0])!r} (step {last_good[1]}): resume from it with --resume"
            if last_good is not None else "no checkpoint was written before it")
    raise FoundryError(f"{job.name}: the loss became {value} at step {step + 1}, so training stopped; expected a "
                       f"finite loss; {kept}, and lower --lr or check the data for bad clouds")


def write_log(out_dir: Path, records: list) -> Path:
    """The loss curve as JSON lines, rewritten whole (atomically) so it never ends mid-line."""
    text = "".join(json.dumps(r) + "\n" for r in records)
    return write_text_atomic(Path(out_dir) / LOG_NAME, text)


def save_training_checkpoint(job: Job, model, optimizer, scheduler, step: int, records: list) -> Path:
    """A foundry-edge checkpoint plus `training`: what `--resume` needs to carry on exactly."""
    import torch

    from foundry_edge.checkpoints.format import save_checkpoint

    state = {"job": job.name, "step": step, "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(),
             "config": dataclasses.asdict(job.config)}
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    path = save_checkpoint(Path(job.out_dir) / CHECKPOINT_NAME, model, provenance=job.provenance,
                           extra={"training": state})
    write_log(Path(job.out_dir), records)
    return path


def restore(job: Job, model, optimizer, scheduler) -> tuple[int, list]:
    """Load a training checkpoint into model, optimizer and scheduler; -> (step, log records so far)."""
    import torch

    from foundry_edge.checkpoints.format import is_native, load_weights, torch_load_safe

    payload = torch_load_safe(job.resume)
    state = payload.get("training") if is_native(payload) else None
    if not isinstance(state, dict) or state.get("job") != job.name:
        raise FoundryError(f"{str(job.resume)!r} is not a {job.name} training checkpoint (it has no "
                           f"'training' state from a {job.name} run): pass the {CHECKPOINT_NAME} such a run wrote")
    if payload.get("config") != model.config.to_dict():
        name = payload["config"].get("name") if isinstance(payload.get("config"), dict) else None
        raise FoundryError(f"{str(job.resume)!r} was trained as model {name!r} with "
                           "another configuration than this run's: resume with the same model options")
    problems = resume_state_problems(state)
    if problems:
        raise FoundryError(f"{str(job.resume)!r} holds a training state this run cannot continue from "
                           f"({'; '.join(problems)}): resume from another {CHECKPOINT_NAME} or start a new run")
    if state["step"] >= job.config.steps:
        raise FoundryError(f"{str(job.resume)!r} is already at step {state['step']} of {job.config.steps}: "
                           "pass a larger --steps to train further")
    load_weights(model, payload["state_dict"], source=str(job.resume))
    try:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    except (KeyError, ValueError) as exc:
        raise FoundryError(f"{str(job.resume)!r} holds an optimizer state that does not fit this run ({exc}): "
                           "resume with the same model and trainable parameters") from None
    for line in resume_notes(state.get("config", {}), dataclasses.asdict(job.config)):
        job.log(line)
    torch.set_rng_state(state["rng"])
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return state["step"], _read_log(Path(job.out_dir), state["step"])


def resume_state_problems(state: dict) -> list[str]:
    """What in a checkpoint's `training` state cannot be resumed: the step, the RNG states, the optimizer's."""
    import torch

    problems = []
    if type(state.get("step")) is not int or state["step"] < 0:
        problems.append(f"step must be a count >= 0, found {state.get('step')!r}")
    for key in ("optimizer", "scheduler"):
        if not isinstance(state.get(key), dict):
            problems.append(f"no {key} state")
    with torch.random.fork_rng():  # try the saved RNG state without keeping it
        try:
            torch.set_rng_state(state.get("rng"))
        except (RuntimeError, TypeError, ValueError) as exc:
            problems.append(f"the RNG state is not torch's ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})")
    return problems


# Settings the resumed optimizer and schedule carry from the checkpoint, whatever this run asks.
FIXED_BY_CHECKPOINT = ("lr", "weight_decay", "warmup_steps", "min_lr_ratio")


def resume_notes(saved: dict, asked: dict) -> list[str]:
    """One line per setting that differs between the checkpoint and this run, saying which value wins."""
    notes = []
    for name in sorted(set(saved) & set(asked)):
        if saved[name] == asked[name] or name in ("progress", "device", "log_every", "checkpoint_every"):
            continue
        if name in FIXED_BY_CHECKPOINT:
            notes.append(f"resume: the checkpoint's {name} {saved[name]} wins over this run's {asked[name]} (the "
                         "optimizer and learning-rate schedule continue as saved; start a new run to change it)")
        elif name == "steps":
            notes.append(f"resume: training runs to step {asked[name]} (the checkpoint's run was for {saved[name]}); "
                         f"the cosine schedule keeps the checkpoint's length")
        else:
            notes.append(f"resume: this run's {name} {asked[name]} wins over the checkpoint's {saved[name]}")
    return notes


def _read_log(out_dir: Path, up_to_step: int) -> list:
    """The log records of the run being resumed, up to its checkpoint (later ones were lost)."""
    path = out_dir / LOG_NAME
    if not path.is_file():
        return []
    try:
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (ValueError, UnicodeDecodeError) as exc:
        raise FoundryError(f"{path} is not JSON lines ({exc}); it is the log of the run being resumed: restore it "
                           "or move it away to resume without the earlier records") from None
    return [r for r in records if isinstance(r, dict) and isinstance(r.get("step", 0), int) and r.get("step", 0) <= up_to_step]


class _progress:
    """A rich progress bar with the loss and the throughput, or nothing (other ranks, tests)."""

    def __init__(self, enabled: bool, name: str, total: int, start: int):
        self.enabled, self.name, self.total, self.start = enabled, name, total, start

    def __enter__(self):
        if not self.enabled:
            return lambda *args: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[rate]} clouds/s"),
                            TimeRemainingColumn())
        self.bar.__enter__()
        task = self.bar.add_task(self.name, total=self.total, completed=self.start, loss="-", rate="-")

        def show(step, loss, records):
            # the last training record (eval-mode health records at checkpoints carry no rate)
            rate = next((f"{r['clouds_per_s']:.1f}" for r in reversed(records) if "clouds_per_s" in r), "-")
            self.bar.update(task, completed=step, loss=f"{loss:.4f}", rate=rate)

        return show

    def __exit__(self, *exc):
        if self.enabled:
            self.bar.__exit__(*exc)
        return False
