"""The models a profile compares: what the user named (preset, `default`, checkpoint, .onnx, .plan),
the model at a given point count, its cost, and the file a runtime opens.

A preset or checkpoint is built and counted with torch, its group count scaled with the points
(`ModelConfig.replace(num_points=...)` keeps N / 16), so a student and its teacher are compared at the
same c at every point count. An exported ONNX or plan needs no torch: its group count is fixed at export
and its FLOPs come from the `cost` its export recorded (docs/contracts.md, "Export artifacts").
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from foundry_edge.contracts.artifacts import PRESET_SEED
from foundry_edge.contracts.artifacts import model_kind
from foundry_edge.contracts.manifest import read_manifest
from foundry_edge.contracts.onnx_graph import graph_specs, read_onnx
from foundry_edge.contracts.sidecar import read_sidecar_unchecked
from foundry_edge.errors import FoundryError


@dataclass
class Subject:
    """One model to profile, as named on the command line; `overrides` apply to presets only."""

    spec: str
    role: str  # "teacher" or "student"
    overrides: dict = field(default_factory=dict)
    seed: int = PRESET_SEED  # a preset's random weights (the same default as every command)

    @property
    def format(self) -> str:
        """'onnx', 'plan', or 'torch' (a preset, `default`, or a checkpoint)."""
        return model_kind(self.spec)

    @property
    def label(self) -> str:
        """The model's name: an ONNX file's manifest names it (`model.onnx` says little), with its precision."""
        if self.format == "onnx" and Path(self.spec).is_file():
            try:
                manifest = read_manifest(self.spec) or {}
            except FoundryError:  # a broken manifest is reported where the model is measured
                manifest = {}
            name = (manifest.get("model") or {}).get("name")
            precision = (manifest.get("onnx") or {}).get("precision", "fp32")
            if name:
                return name if precision == "fp32" else f"{name} ({precision})"
        return Path(self.spec).stem if self.format != "torch" or Path(self.spec).suffix else self.spec


def build_model(spec: str, points: int, overrides: dict, seed: int = PRESET_SEED):
    """(preset | 'default' | checkpoint) -> PointModel for clouds of `points` points, c = N / 16 kept."""
    from foundry_edge.checkpoints.resolve import load_model

    model, info = load_model(spec, seed=seed, **overrides)
    if points != model.config.num_points:
        config = model.config.replace(num_points=points)  # validates: s <= c, K <= N
        if info["source"] == "preset":
            model, _ = load_model(spec, seed=seed, **{**overrides, "num_points": points})
        else:  # a checkpoint fixes the weights; the group count is not a weight
            model.config = config
            model.tokenizer.num_groups = config.num_groups
    return model


def onnx_inputs(path: str | Path) -> list[dict]:
    """The graph's inputs as [{"name", "dtype", "shape"}] (a dim is an int or its symbolic name)."""
    return [spec.to_dict() for spec in graph_specs(read_onnx(path).graph)[0]]


def check_points(subject: Subject, points: int, inputs: list[dict], profiles: dict) -> None:
    """Refuse a point count a file's fixed dims or its manifest's (or sidecar's) profile does not admit."""
    for spec in inputs:
        if spec["name"] == "points" and len(spec["shape"]) == 3 and isinstance(spec["shape"][1], int) \
                and spec["shape"][1] and spec["shape"][1] != points:
            raise FoundryError(f"{subject.spec} takes exactly {spec['shape'][1]} points, not {points}; "
                               f"profile it at --points {spec['shape'][1]} or export it with a dynamic point count")
    low, _, high = profiles.get("num_points", [None, None, None])
    if low is not None and not low <= points <= high:
        raise FoundryError(f"{subject.spec} admits {low}..{high} points (its manifest's profile), not {points}; "
                           "re-export or rebuild it with a profile that covers this point count")


def describe(subject: Subject, points: int) -> dict:
    """Cost and inputs of a subject at `points`: params, FLOPs per cloud, model bytes, input signature.

    A preset or checkpoint is counted with torch; an ONNX file or plan takes its cost from the `cost` its
    export recorded (manifest, or the plan's sidecar), and without one its FLOPs are None, with a `warning`.
    """
    if subject.format == "torch":
        return _describe_torch(subject, points)
    path = Path(subject.spec)
    if not path.is_file():
        raise FoundryError(f"model file {subject.spec} does not exist; pass an existing .onnx/.plan, a preset or a checkpoint")
    if subject.format == "onnx":
        manifest = read_manifest(path) or {}
        model, inputs = manifest.get("model") or {}, onnx_inputs(path)
        cost, profiles = manifest.get("cost"), manifest.get("profiles") or {}
        in_graph = (manifest.get("preprocessing") or {}).get("in_graph")
    else:
        model = (read_sidecar_unchecked(path) or {}).get("model") or {}  # checked where the plan is loaded
        inputs, cost, profiles = model.get("inputs", []), model.get("cost"), model.get("profiles") or {}
        in_graph = (model.get("preprocessing") or {}).get("in_graph")
    check_points(subject, points, inputs, profiles)
    info = {"name": model.get("name", subject.label), "kind": model.get("kind"),
            "inputs": [spec["name"] for spec in inputs], "normalize_in_graph": in_graph,
            "model_bytes": path.stat().st_size, "model_bytes_source": f"{subject.format} file"}
    return {**info, **recorded_cost(cost, points, subject)}


def recorded_cost(cost: dict | None, points: int, subject: Subject) -> dict:
    """params, num_groups and FLOPs per cloud at `points` from an export's `cost` section (docs/contracts.md:
    `fixed + per_point * N`, the graph's groups fixed); unknown, with a one-line warning, where none was recorded."""
    flops = (cost or {}).get("flops_per_cloud") or {}
    if not isinstance(flops.get("fixed"), int) or not isinstance(flops.get("per_point"), int):
        return {"params": None, "flops": None,
                "warning": f"FLOPs unknown: {subject.spec} records no cost (the `cost` section this version's "
                           "`foundry-edge export` writes); re-export it (and rebuild a plan) for FLOPs and GFLOP/s"}
    return {"params": cost.get("params"), "num_groups": cost.get("num_groups"),
            "flops": flops["fixed"] + flops["per_point"] * points}


def _describe_torch(subject: Subject, points: int) -> dict:
    """A preset or checkpoint at `points` (groups scaled), counted with torch's FlopCounterMode."""
    from foundry_edge.models.flops import measure_cost

    model = build_model(subject.spec, points, subject.overrides, subject.seed)
    cost = measure_cost(model, points)
    path = Path(subject.spec)
    info = {"name": model.config.name, "kind": model.config.kind, "num_groups": model.config.num_groups,
            "inputs": ["points"], "normalize_in_graph": model.config.normalize_input,
            "params": cost.params, "flops": cost.flops}
    if path.is_file():
        info.update(model_bytes=path.stat().st_size, model_bytes_source="checkpoint file")
    else:
        info.update(model_bytes=sum(p.numel() * p.element_size() for p in model.parameters()),
                    model_bytes_source="parameters in memory")
    return info


def cache_key(subject: Subject, points: int) -> str:
    """A folder name that changes when the model, its overrides, a checkpoint's bytes or N change."""
    path = Path(subject.spec)
    stamp = [subject.spec, subject.overrides, points] + ([subject.seed] if subject.seed != PRESET_SEED else [])
    if path.is_file():
        stamp += [path.stat().st_size, path.stat().st_mtime_ns]
    digest = hashlib.sha256(json.dumps(stamp, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', subject.label)}-n{points}-{digest}"


def artifact_for(subject: Subject, runtime: str, points: int, cache_dir: Path, placement: str = "graph") -> str | None:
    """The file `runtime` opens for a subject: None where the worker builds the model itself (torch),
    the given file, or where the ONNX export at `points` (grouping at `placement`) goes in `cache_dir`
    (see export_to_cache)."""
    if runtime == "torch":
        if subject.format != "torch":
            raise FoundryError(f"the torch runtime runs presets and checkpoints, not the {subject.format} file "
                               f"{subject.spec}; use --runtime ort-cpu/ort-cuda/trt for it")
        return None
    if subject.format == "plan" and runtime != "trt":
        raise FoundryError(f"{subject.spec} is a TensorRT plan; it runs with --runtime trt only")
    if subject.format != "torch":
        return subject.spec
    folder = cache_key(subject, points) + ("-host" if placement == "host" else "")
    return str(cache_dir / folder / "model.onnx")


def export_to_cache(spec: str, overrides: dict, points: int, target: str, max_batch: int,
                    seed: int = PRESET_SEED, grouping: str = "graph") -> dict:
    """Export the model at `points` (groups scaled) into `target`'s folder with the export API ->
    {"path", "warning"}. Parity against PyTorch is `foundry-edge export`'s job and is skipped here (at 16384
    points it costs minutes per model); an export whose structural checks fail is kept as *.failed.onnx
    and timed anyway, with the failure as a warning: its speed does not depend on them."""
    from foundry_edge.export import ExportCheckError, ExportOptions, export_model

    options = ExportOptions(model=build_model(spec, points, overrides, seed), output_dir=Path(target).parent,
                            num_points=points, max_batch=max(max_batch, 2), check=False, trt_check="off",
                            keep_failed=True, grouping=grouping)
    try:
        return {"path": str(export_model(options).onnx_path), "warning": None}
    except ExportCheckError as exc:
        if exc.result.onnx_path is None:
            raise
        return {"path": str(exc.result.onnx_path), "warning": f"timed an export that failed its checks: {exc}"}
