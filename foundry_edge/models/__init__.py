"""The PyTorch reference: the Point-JEPA teacher, the Foundry student and their heads."""

from foundry_edge.models.config import ModelConfig
from foundry_edge.models.registry import PRESETS, create_model, get_config, list_presets

__all__ = ["ModelConfig", "PRESETS", "create_model", "get_config", "list_presets"]
