"""Foundry distillation, fine-tuning and evaluation on any data the readers take (torch inside functions)."""

from foundry_edge.training.distill import DistillConfig, distill
from foundry_edge.training.engine import TrainConfig, fit
from foundry_edge.training.evaluate import evaluate_model, token_agreement
from foundry_edge.training.finetune import finetune

__all__ = ["DistillConfig", "TrainConfig", "distill", "evaluate_model", "finetune", "fit", "token_agreement"]
