"""Where a PyTorch model's time goes by stage: timers around each stage's call for a few extra runs.

The stages are the parts of `PointModel.forward` a reader can act on: the grouping (normalisation is not
timed apart; FPS + kNN in `tokenizer.group`), the mini-PointNet tokenizer, the DSO assignment, the positional
MLP, the transformer encoder, the cross-attention upsampling (CAU) and the heads. Time outside them
(grouped means, the gate, tensor glue) is "other". The runs with timers are not the timed latency runs.
"""

from __future__ import annotations

import time
from statistics import median
from typing import Callable

# (stage, attribute path in PointModel); modules get forward hooks, methods a timing wrapper.
STAGES = (("grouping", "tokenizer.group"), ("tokenizer", "tokenizer.embed"), ("assignment", "assigner"),
          ("positions", "pos_embed"), ("encoder", "encoder"), ("upsampling", "cau"), ("head", "cls_head"),
          ("head", "seg_head"))


def stage_times(model, run: Callable[[], object], runs: int = 5, sync: Callable[[], None] = lambda: None) -> dict:
    """{stage: median ms per run} over `runs` calls of `run`, plus "other" (the median of each run's total
    minus its stages). `sync` waits for the device (torch.cuda.synchronize on a GPU) at each boundary."""
    spent: dict[str, float] = {}
    undo = [_timed(model, path, stage, spent, sync) for stage, path in STAGES]
    per_run, totals = [], []
    try:
        for _ in range(runs):
            spent.clear()
            sync()
            start = time.perf_counter()
            run()
            sync()
            totals.append((time.perf_counter() - start) * 1e3)
            per_run.append(dict(spent))
    finally:
        for restore in undo:
            restore()
    stages = {stage: median(run_.get(stage, 0.0) for run_ in per_run) for stage in per_run[0]} if per_run else {}
    stages["other"] = max(0.0, median(total - sum(run_.values()) for total, run_ in zip(totals, per_run)))
    return stages


def _timed(model, path: str, stage: str, spent: dict, sync) -> Callable[[], None]:
    """Start timing `path` (if the model has it) into spent[stage]; return what undoes it."""
    import torch

    parent_path, _, name = path.rpartition(".")
    parent = model
    for part in filter(None, parent_path.split(".")):
        parent = getattr(parent, part, None)
    target = getattr(parent, name, None) if parent is not None else None
    if target is None:
        return lambda: None
    started: list[float] = []

    def begin(*_args) -> None:
        sync()
        started.append(time.perf_counter())

    def finish(*_args) -> None:
        sync()
        spent[stage] = spent.get(stage, 0.0) + (time.perf_counter() - started.pop()) * 1e3

    if isinstance(target, torch.nn.Module):
        handles = [target.register_forward_pre_hook(begin), target.register_forward_hook(finish)]
        return lambda: [handle.remove() for handle in handles]

    def wrapper(*args, **kwargs):
        begin()
        try:
            return target(*args, **kwargs)
        finally:
            finish()

    setattr(parent, name, wrapper)  # an instance attribute shadows the method until undone
    return lambda: delattr(parent, name)
