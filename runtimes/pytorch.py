"""The PyTorch reference runtime: a preset, `default`, a checkpoint, or a PointModel already in memory."""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from foundry_edge.errors import FoundryError, require
from foundry_edge.checkpoints.resolve import PRESET_SEED
from foundry_edge.contracts.preprocessing import Preprocessing
from foundry_edge.runtimes.base import Runtime


class TorchRuntime(Runtime):
    """Runs `PointModel.forward` on raw clouds (grouping in the model), on the CPU or a CUDA device."""

    name = "torch"

    def __init__(self, model, device: str = "cpu", overrides: Optional[dict] = None, threads: Optional[int] = None,
                 seed: int = PRESET_SEED):
        """`seed`: the seed of a preset's random weights (the same default as export's)."""
        super().__init__()
        self.spec, self.device, self.overrides, self.threads = model, device, dict(overrides or {}), threads
        self.seed = seed
        self.model = None
        self.info: dict = {}

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
        from foundry_edge.checkpoints.resolve import class_names_of, load_model

        if isinstance(self.spec, str):
            self.model, self.info = load_model(self.spec, seed=self.seed, **self.overrides)
        else:
            self.model, self.info = self.spec, {"source": "module", "class_names": class_names_of(self.spec.config)}
        self.model = self.model.to(self.device).eval()
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


def model_specs(config):
    """ModelConfig -> (inputs, outputs) as TensorSpecs: what a graph-grouped export of it declares."""
    from foundry_edge.export.onnx_config import PointModelOnnxConfig, available_outputs

    declared = PointModelOnnxConfig(config, "graph", available_outputs(config, "graph"), config.num_points, batch=2,
                                    dynamic_batch=True, dynamic_points=True, max_batch=2,
                                    max_points=config.num_points, opset=18)
    return declared.input_specs(), declared.output_specs()
