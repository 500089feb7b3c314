"""Parameters and FLOPs of a model at a given input, counted by torch's own FlopCounterMode.

FlopCounterMode counts matrix products and convolutions (2 FLOPs per multiply-accumulate), which is
where the time goes; the grouping's distance matrices are MatMuls and are counted too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ModelCost:
    params: int
    flops: int  # per forward at `batch` clouds of `num_points`
    num_points: int
    batch: int

    @property
    def gflops_per_cloud(self) -> float:
        return self.flops / self.batch / 1e9


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
