"""Parameters and FLOPs of a model at a given input, counted by torch's own FlopCounterMode.

FlopCounterMode counts matrix products and convolutions (2 FLOPs per multiply-accumulate), which is
where the time goes; the grouping's distance matrices are MatMuls and are counted too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

COUNTER = "torch.utils.flop_counter.FlopCounterMode: matrix products and convolutions, 2 FLOPs per multiply-add"


@dataclass
class ModelCost:
    params: int
    flops: int  # per forward at `batch` clouds of `num_points`
    num_points: int
    batch: int


def measure_cost(model, num_points: int | None = None, batch: int = 1) -> ModelCost:
    from torch.utils.flop_counter import FlopCounterMode

    num_points = num_points or model.config.num_points
    points = torch.randn(batch, num_points, 3, generator=torch.Generator().manual_seed(0))
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(points)
    model.train(was_training)
    params = sum(p.numel() for p in model.parameters())
    return ModelCost(params=params, flops=int(counter.get_total_flops()), num_points=num_points, batch=batch)


def cost_section(model, num_points: int, min_points: int) -> dict:
    """The manifest's `cost`: FLOPs per cloud as `fixed + per_point * N` with the groups the model has, so a
    profile computes them at any N without torch.

    With G fixed, the only counted work that grows with N is the grouping's (G, N) distance MatMul
    (2 * 3 * G FLOPs per point), so two counts give the line exactly: at `num_points` and at half of it
    (twice it where half is below `min_points`), at batch 1.
    """
    other = num_points // 2 if num_points // 2 >= min_points else 2 * num_points
    low, high = sorted((measure_cost(model, num_points), measure_cost(model, other)), key=lambda c: c.num_points)
    per_point = (high.flops - low.flops) // (high.num_points - low.num_points)
    return {"params": low.params, "num_groups": model.config.num_groups,
            "flops_per_cloud": {"fixed": low.flops - per_point * low.num_points, "per_point": per_point},
            "counted_at": [low.num_points, high.num_points], "counter": COUNTER}
