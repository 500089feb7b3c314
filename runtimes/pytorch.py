"""The PyTorch reference runtime over a model already in memory (foundry_edge.checkpoints.resolve.open_model
loads a preset, `default` or a checkpoint into one)."""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from foundry_edge.contracts.preprocessing import Preprocessing
from foundry_edge.contracts.tensors import model_specs
from foundry_edge.errors import FoundryError, require
from foundry_edge.runtimes.base import Runtime


class TorchRuntime(Runtime):
    """Runs a point model's forward on raw clouds (grouping in the model), on the CPU or a CUDA device.

    `model`: anything with `.config` (a ModelConfig's attributes), `.to()`, `.eval()` and a forward that
    takes (B, N, 3) points and returns a dict of tensors; `info`: where it came from (source, class_names).
    """

    name = "torch"

    def __init__(self, model, device: str = "cpu", threads: Optional[int] = None, info: Optional[dict] = None):
        super().__init__()
        self.module, self.device, self.threads = model, device, threads
        self.model = None
        self.info: dict = info or {"source": "module", "class_names": config_class_names(model.config)}

    def load_impl(self) -> None:
        torch = require("torch", "torch")
        try:
            torch.device(self.device)
        except RuntimeError:
            raise FoundryError(f"expected a torch device such as cpu, cuda or cuda:0, got {self.device!r}") from None
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise FoundryError(f"expected a CUDA device for torch, found none (torch {torch.__version__}): "
                               "use --device cpu or install a CUDA build of torch")
        if self.threads:
            torch.set_num_threads(self.threads)
        self.model = self.module.to(self.device).eval()
        config = self.model.config
        self.inputs, self.outputs = model_specs(config)
        # What an export of it would put in its manifest: the base class recentres far-off clouds when it normalises.
        self.preprocessing = Preprocessing("graph", config.num_points, config.num_groups, config.group_size,
                                           config.normalize_input, config.grouping, config.fps_candidates)
        self.class_names = self.info.get("class_names")
        self.num_supertokens = config.num_supertokens if config.kind == "student" else None
        self.provider = f"torch-{torch.device(self.device).type}"

    @property
    def num_points(self) -> Optional[int]:
        return self.model.config.num_points if self.model is not None else None

    @property
    def group_size(self) -> Optional[int]:
        return self.model.config.group_size if self.model is not None else None

    def infer_impl(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        import torch

        with torch.inference_mode():
            out = self.model(torch.from_numpy(feed["points"]).to(self.device))
        return {name: value.detach().cpu().numpy() for name, value in out.items()}

    def close_impl(self) -> None:
        self.model = None

    def device_bytes_impl(self) -> Optional[int]:
        import torch

        return torch.cuda.memory_allocated(self.device) if self.device.startswith("cuda") else None


def config_class_names(config, names=None) -> Optional[list]:
    """`names` (default: the config's `extra["class_names"]`) where they fit its classifier head, else None."""
    names = config.extra.get("class_names") if names is None else names
    if not config.num_classes or not isinstance(names, list) or len(names) != config.num_classes:
        return None
    return [str(name) for name in names]
