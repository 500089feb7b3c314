"""`export_model(ExportOptions(...)) -> ExportResult`: load, torch2onnx, simplify_onnx, the target's
rewrites and IR version, validate_onnx, write. The orchestrator only calls the steps in order; what is
valid together is one table here.

Files are written only after every check passed, as one set (foundry_edge.fileio.OutputSet: staged in the
locked output folder, renamed into place together): model.onnx + model.manifest.json (and teacher.onnx +
teacher.manifest.json with a teacher). With keep_failed a failed export is kept as *.failed.onnx;
otherwise nothing is written and ExportCheckError says which check failed and by how much. An error or a
signal at any point leaves the folder as it was.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from foundry_edge.errors import FoundryError, require
from foundry_edge.contracts.manifest import manifest_path
from foundry_edge.export.manifest import build_manifest, write_manifest
from foundry_edge.contracts.artifacts import RUNTIMES
from foundry_edge.data.grouping.placement import PLACEMENTS_OR_AUTO, choose_placement
from foundry_edge.contracts.tensors import available_outputs
from foundry_edge.export.onnx_config import PointModelOnnxConfig
from foundry_edge.export.targets import DEFAULT_TARGET, get_target, opset_problem
from foundry_edge.export.validate import CheckResult
from foundry_edge.fileio import OutputSet, refuse_overwrite
from foundry_edge.interrupts import signal_point

TRT_CHECK_MODES = ("auto", "on", "off")
CHECK_COPIES = 3  # the export's checks peak at about three inferences' memory (check_memory)


@dataclass
class ExportOptions:
    """Everything an export takes; the CLI options map one to one onto these fields."""

    model: Any = "default"  # preset name, 'default', a checkpoint path, or a PointModel
    output_dir: Any = None  # default: out/<model name>
    teacher: Any = None  # also export this teacher (same kinds of spec) as teacher.onnx
    overrides: dict = field(default_factory=dict)  # preset fields, e.g. {"num_supertokens": 8}
    teacher_overrides: dict = field(default_factory=dict)
    target: str = DEFAULT_TARGET  # the TensorRT the file is for: trt8.5, trt8.6, trt10, trt11 (export/targets.py)
    opset: Optional[int] = None  # default: the target's (17 for trt8.x, else 18)
    num_points: Optional[int] = None  # points per cloud to trace at; default: the model's
    batch: int = 2  # trace batch (the static batch with a static batch)
    static: bool = False  # static batch and point count
    dynamic_batch: Optional[bool] = None  # default: not static
    dynamic_points: Optional[bool] = None  # default: not static, with graph grouping
    max_batch: int = 8  # TensorRT profile max
    max_points: Optional[int] = None  # TensorRT profile max; default 4 x num_points
    outputs: Optional[tuple] = None  # default: every output the model has
    grouping: str = "graph"  # "graph": FPS/kNN in the graph; "host": foundry_edge.data.preprocess; "auto": measured
    grouping_for: Optional[str] = None  # with grouping "auto": the runtime to choose for (default trt, the target's)
    simplify: bool = True
    check: bool = True  # ONNX Runtime vs PyTorch parity (structural checks always run)
    trt_check: str = "auto"
    keep_failed: bool = False
    seed: int = 0  # weights of a preset (random initialisation) and the example clouds

    def resolved(self) -> "ExportOptions":
        """A copy with the opset and dynamic axes decided; refuses contradicting options (one line each)."""
        target = get_target(self.target)
        opset = target.default_opset if self.opset is None else self.opset
        problems = [opset_problem(target, opset)] + [message for bad, message in _option_conflicts(self) if bad]
        problems = [message for message in problems if message]
        if problems:
            raise FoundryError("; ".join(problems))
        dynamic_batch = (not self.static) if self.dynamic_batch is None else self.dynamic_batch
        dynamic_points = (not self.static and self.grouping != "host") if self.dynamic_points is None \
            else self.dynamic_points
        if dynamic_batch and self.batch < 2:
            raise FoundryError(f"a dynamic batch is traced at batch >= 2 (a batch of 1 can export a static batch), "
                               f"got batch {self.batch}: pass --trace-batch 2 or --static-batch")
        return dataclasses.replace(self, opset=opset, dynamic_batch=dynamic_batch, dynamic_points=dynamic_points)


def _option_conflicts(o: ExportOptions) -> list:
    """(is it wrong, what to say) for every combination that cannot work."""
    return [
        (o.grouping not in PLACEMENTS_OR_AUTO, f"grouping {o.grouping!r}: expected one of {PLACEMENTS_OR_AUTO}"),
        (o.grouping_for is not None and o.grouping != "auto",
         "--grouping-for tells --grouping auto which runtime to choose for: drop it or pass --grouping auto"),
        (o.grouping_for is not None and o.grouping_for not in RUNTIMES,
         f"--grouping-for {o.grouping_for!r}: expected one of {', '.join(RUNTIMES)}"),
        (o.trt_check not in TRT_CHECK_MODES, f"trt check {o.trt_check!r}: expected one of {TRT_CHECK_MODES}"),
        (o.static and o.dynamic_batch is True, "--static contradicts --dynamic-batch: drop one of them"),
        (o.static and o.dynamic_points is True, "--static contradicts --dynamic-points: drop one of them"),
        (o.grouping == "host" and o.dynamic_points is True,
         "--grouping host feeds fixed G x K groups, so there is no point axis to make dynamic: "
         "drop --dynamic-points or use --grouping graph"),
        (bool(o.teacher_overrides) and o.teacher is None,
         "--teacher-set overrides the teacher's preset, and no --teacher was given: add --teacher or drop --teacher-set"),
        (o.batch < 1, f"batch must be >= 1, got {o.batch}"),
        (o.num_points is not None and o.num_points < 1, f"--points must be >= 1, got {o.num_points}: drop it for the model's"),
        (o.max_points is not None and o.max_points < 1, f"--max-points must be >= 1, got {o.max_points}"),
        (o.max_batch < o.batch, f"max batch {o.max_batch} is below the trace batch {o.batch}: raise --max-batch"),
    ]


@dataclass
class Artifact:
    """One exported graph: where it went (None if not written), its manifest and checks."""

    role: str  # "model" or "teacher"
    onnx_path: Optional[Path]
    manifest: dict
    checks: list

    @property
    def manifest_path(self) -> Optional[Path]:
        return manifest_path(self.onnx_path) if self.onnx_path else None

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def failures(self) -> list:
        return [f"{self.role}: {c.name}: {c.detail}" for c in self.checks if not c.passed]


@dataclass
class ExportResult:
    artifacts: list

    @property
    def passed(self) -> bool:
        return all(a.passed for a in self.artifacts)

    @property
    def onnx_path(self) -> Optional[Path]:
        return self.artifacts[0].onnx_path

    @property
    def manifest(self) -> dict:
        return self.artifacts[0].manifest


class ExportCheckError(FoundryError):
    """Checks failed; `.result` holds every check so a caller can still show the report."""

    def __init__(self, message: str, result: ExportResult):
        super().__init__(message)
        self.result = result


def _quiet(_: str) -> None:
    pass


def export_model(options: ExportOptions, log: Callable[[str], None] = _quiet) -> ExportResult:
    """Export options.model (and options.teacher) to checked ONNX files; see the module docstring."""
    options = options.resolved()
    for module in ("torch", "onnxscript"):
        require(module, "torch")
    roles = [("model", options.model, options.overrides)]
    if options.teacher is not None:
        roles.append(("teacher", options.teacher, options.teacher_overrides))
    loaded = [(role, *_load(spec, overrides, options, log)) for role, spec, overrides in roles]
    _check_roles(loaded)
    if options.grouping == "auto":
        options = _auto_placement(options, options.num_points or loaded[0][1].config.num_points, log)
    configs = [onnx_config_for(model.config, options if role == "model" else _for_teacher(options, model.config))
               for role, model, _ in loaded]
    for (role, model, _), config in zip(loaded, configs):
        if options.check:  # the parity runs are what a large point count cannot fit (ONNX Runtime ran out)
            check_memory(model.config, config, role)
    out_dir = Path(options.output_dir or Path("out") / loaded[0][1].config.name)
    _refuse_overwriting_inputs(out_dir, [info.get("path") for _, _, info in loaded])
    with OutputSet("export", [out_dir]) as outputs, tempfile.TemporaryDirectory(prefix="foundry-export-") as work:
        signal_point("export:started")
        built = [_build(role, model, info, config, options, Path(work), log)
                 for (role, model, info), config in zip(loaded, configs)]
        signal_point("export:checked")
        result = _stage(built, out_dir, options, outputs)
        signal_point("export:staged")
    for artifact in result.artifacts:
        if artifact.onnx_path:
            log(f"{artifact.role}: wrote {artifact.onnx_path} ({artifact.onnx_path.stat().st_size / 1e6:.2f} MB) "
                f"and {artifact.manifest_path.name}")
    if not result.passed:
        where = (f"kept as {', '.join(str(a.onnx_path) for a in result.artifacts)}" if options.keep_failed
                 else "nothing was written (--keep-failed keeps the files as *.failed.onnx)")
        failures = [f for a in result.artifacts for f in a.failures()]
        raise ExportCheckError(f"export checks failed: {'; '.join(failures)}; {where}", result)
    return result


def _auto_placement(options: ExportOptions, points: int, log: Callable[[str], None]) -> ExportOptions:
    """--grouping auto -> graph or host, the measured faster for the runtime at the traced point count, said."""
    chosen, why = choose_placement(options.grouping_for or "trt", points)
    log(f"--grouping auto: {why}")
    # host grouping feeds fixed G x K groups: no point axis to keep dynamic
    return dataclasses.replace(options, grouping=chosen, dynamic_points=options.dynamic_points and chosen == "graph")


def check_memory(model_config, config: PointModelOnnxConfig, role: str) -> None:
    """Refuse a point count whose checks cannot fit in the memory available now, before the minutes of
    tracing (foundry_edge.scenes.check_budget at the traced points).

    The checks hold PyTorch's reference outputs and ONNX Runtime's activations at once, at up to 1.25 x the
    points: `default` at 400k points peaked at 2.1 GiB where one batch-3 inference is estimated at 0.74 GiB,
    so the checks count as CHECK_COPIES times their largest batch.
    """
    from foundry_edge.models.memory import available_memory_bytes, check_budget

    budget = available_memory_bytes()
    if budget is None:
        return
    batch = CHECK_COPIES * max(b for b, _ in config.validation_shapes())
    at = model_config.replace(num_points=config.num_points, num_groups=model_config.num_groups)
    check_budget(at, budget, batch, "graph" if config.grouping == "graph" else "host",
                 fix=f"export the {role} at fewer --points (the TensorRT profile still reaches --max-points)",
                 scale_groups=False)


def _refuse_overwriting_inputs(out_dir: Path, sources: list) -> None:
    """A checkpoint in the output folder under a name the export writes would be replaced by it."""
    written = [out_dir / f"{role}{suffix}" for role in ("model", "teacher", "model.failed", "teacher.failed")
               for suffix in (".onnx", ".manifest.json")]
    for path in written:
        refuse_overwrite(path, sources, option="the export's output")


def _load(spec, overrides: dict, options: ExportOptions, log):
    """(spec) -> (PointModel in eval mode, info); presets initialise from `options.seed`, reproducibly."""
    import torch

    from foundry_edge.checkpoints.resolve import load_model

    if isinstance(spec, torch.nn.Module):
        if overrides:
            raise FoundryError("overrides apply to presets only; a PointModel passed in Python is exported as it "
                               "is: build it with the fields you want instead")
        log(f"load: {spec.config.name} (a PointModel passed in Python)")
        return spec.eval(), {"source": "python object", "name": spec.config.name}
    log(f"load: {spec}")
    model, info = load_model(str(spec), seed=options.seed, **overrides)
    return model.eval(), info


def _check_roles(loaded: list) -> None:
    if len(loaded) < 2:
        return
    (_, model, _), (_, teacher, _) = loaded
    if model.config.kind == "teacher":
        raise FoundryError(f"{model.config.name!r} is itself a teacher; --teacher pairs a student with its teacher: "
                           "export the teacher alone or pass a student")
    if teacher.config.kind != "teacher":
        raise FoundryError(f"--teacher {teacher.config.name!r} is a {teacher.config.kind}, expected a teacher "
                           "(e.g. pointjepa-vits or default-teacher)")


def _for_teacher(options: ExportOptions, teacher_config) -> ExportOptions:
    """The teacher exports those of the asked outputs it has (it has no assignment, gate or heads)."""
    if options.outputs is None:
        return options
    have = available_outputs(teacher_config, options.grouping)
    return dataclasses.replace(options, outputs=tuple(n for n in options.outputs if n in have))


def onnx_config_for(model_config, options: ExportOptions) -> PointModelOnnxConfig:
    """The export declaration for this model under these (resolved) options; refuses what cannot fit."""
    num_points = options.num_points or model_config.num_points
    max_points = options.max_points or 4 * num_points
    have = available_outputs(model_config, options.grouping)
    if options.grouping == "host" and model_config.num_part_classes and options.outputs is None:
        raise FoundryError(f"{model_config.name!r} has a segmentation head, which needs the points inside the graph: "
                           "use --grouping graph, or name the outputs without seg_logits (--outputs tokens,...)")
    if getattr(model_config, "grouping", "exact") == "scalable" and options.grouping == "graph" \
            and options.dynamic_points:
        # Its Z-order sort is a TopK over all N points: K must be a constant, and TensorRT caps it at 3840.
        raise FoundryError(f"{model_config.name!r} uses scalable grouping, whose in-graph sort needs a fixed point "
                           "count: pass --static-points (ONNX Runtime), or --grouping host for TensorRT and large scenes")
    outputs = tuple(have if options.outputs is None else options.outputs)
    missing = [name for name in outputs if name not in have]
    if missing or not outputs:
        raise FoundryError(f"output(s) {missing or '(none)'} not available from {model_config.name!r} with "
                           f"{options.grouping} grouping; available: {', '.join(have)}")
    config = PointModelOnnxConfig(model_config, options.grouping, outputs, num_points, options.batch,
                                  options.dynamic_batch, options.dynamic_points, options.max_batch, max_points,
                                  options.opset, options.target)
    if num_points < config.min_points:
        raise FoundryError(f"{num_points} points per cloud is below what grouping needs ({config.min_points}: "
                           f"{model_config.num_groups} groups of {model_config.group_size}); raise --points")
    if max_points < num_points:
        raise FoundryError(f"max points {max_points} is below the {num_points} points traced: raise --max-points")
    return config


@dataclass
class _Built:
    role: str
    data: bytes
    manifest: dict
    checks: list


def _build(role: str, model, info: dict, config: PointModelOnnxConfig, options: ExportOptions, work: Path,
           log) -> _Built:
    """torch2onnx -> simplify_onnx -> the target's rewrites and IR -> metadata -> validate_onnx on a temporary file."""
    import onnx
    import torch

    from foundry_edge.export.rewrites import apply_rewrites, stamp_ir_version
    from foundry_edge.export.simplify import simplify_onnx
    from foundry_edge.export.torch2onnx import torch2onnx
    from foundry_edge.export.validate import validate_onnx

    axes = [name for name, on in (("batch", config.dynamic_batch), ("num_points", config.dynamic_points)) if on]
    log(f"{role}: torch {torch.__version__} dynamo exporter, opset {config.export_opset}, {config.grouping} grouping, "
        f"trace batch {config.batch} x {config.num_points} points, dynamic: {', '.join(axes) or 'none'}")
    start = time.perf_counter()
    proto = torch2onnx(model, config, options.seed)
    log(f"{role}: exported in {time.perf_counter() - start:.1f} s, {_size(proto)}")
    simplifier = "none"
    if options.simplify:
        start = time.perf_counter()
        proto, simplifier = simplify_onnx(proto)
        log(f"{role}: simplified with {simplifier} in {time.perf_counter() - start:.1f} s, {_size(proto)}")
    target = get_target(config.target)
    rewrites = target.rewrites(config.opset)
    if rewrites:
        start = time.perf_counter()
        proto = apply_rewrites(proto, rewrites)
        log(f"{role}: rewrote for {config.target} with onnx {onnx.__version__} ({', '.join(rewrites)}) in "
            f"{time.perf_counter() - start:.1f} s, {_size(proto)}")
    written_ir = proto.ir_version
    stamp_ir_version(proto, target.ir_version(config.opset))
    log(f"{role}: stamped IR version {proto.ir_version} for opset {config.opset} (the exporter wrote IR {written_ir}; "
        f"see export/targets.py)")
    _stamp_metadata(proto, model.config, config)
    data = proto.SerializeToString()
    path = work / f"{role}.onnx"
    path.write_bytes(data)
    log(f"{role}: checking with onnx {onnx.__version__}, onnxruntime{_version('onnxruntime')}, "
        f"tensorrt parser {options.trt_check}")
    start = time.perf_counter()
    checks = validate_onnx(path, model, config, parity=options.check, trt_check=options.trt_check, seed=options.seed)
    failed = sum(not c.passed for c in checks)
    log(f"{role}: {len(checks)} checks in {time.perf_counter() - start:.1f} s, {failed} failed, "
        f"{sum(c.skipped for c in checks)} skipped")
    manifest = _manifest(model, info, config, options, proto, data, simplifier, rewrites, checks)
    return _Built(role, data, manifest, checks)


def _size(proto) -> str:
    return f"{len(proto.graph.node)} nodes, {proto.ByteSize() / 1e6:.2f} MB"


def _version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    for dist in (module, f"{module}-gpu"):
        try:
            return " " + version(dist)
        except PackageNotFoundError:
            continue
    return " (not installed)"


def _stamp_metadata(proto, model_config, config: PointModelOnnxConfig) -> None:
    """ONNX metadata_props: what the graph is and how to feed it (no timestamps: reproducible bytes)."""
    import json

    from foundry_edge import __version__

    props = {"foundry_edge.version": __version__, "foundry_edge.model": model_config.name,
             "foundry_edge.kind": model_config.kind, "foundry_edge.grouping": config.grouping,
             "foundry_edge.preprocessing": json.dumps(config.preprocessing(), sort_keys=True)}
    del proto.metadata_props[:]
    for key, value in props.items():
        proto.metadata_props.add(key=key, value=value)


def _manifest(model, info, config: PointModelOnnxConfig, options: ExportOptions, proto, data: bytes,
              simplifier: str, rewrites: tuple, checks: list) -> dict:
    import hashlib

    import onnx
    import torch

    from foundry_edge import __version__
    from foundry_edge.checkpoints.resolve import class_names_of
    from foundry_edge.models.flops import cost_section

    source = info.get("path") or f"{info['source']}:{info.get('name', model.config.name)}"
    if "weights" in info:
        source += f" ({info['weights']})"
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    export_options = {"target": config.target, "opset": options.opset, "batch": config.batch,
                      "dynamic_batch": config.dynamic_batch, "dynamic_points": config.dynamic_points,
                      "outputs": list(config.outputs), "simplify": options.simplify, "check": options.check,
                      "trt_check": options.trt_check, "seed": options.seed}
    manifest = build_manifest(
        model={"name": model.config.name, "kind": model.config.kind, "config": model.config.to_dict(),
               "checkpoint": {"source": source, "sha256": info.get("sha256")},
               "class_names": info.get("class_names") or class_names_of(model.config)},
        onnx={"file": None, "sha256": hashlib.sha256(data).hexdigest(), "opset": opset, "ir_version": proto.ir_version,
              "nodes": len(proto.graph.node), "precision": "fp32", "rewrites": list(rewrites)},
        grouping=config.grouping, preprocessing=config.preprocessing(),
        inputs=[s.to_dict() for s in config.input_specs()], outputs=[s.to_dict() for s in config.output_specs()],
        profiles=config.profiles(),
        versions={"foundry_edge": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
                  "onnxruntime": _version("onnxruntime").strip(), "simplifier": simplifier},
        checks={"passed": all(c.passed for c in checks), "items": [c.to_dict() for c in checks]},
        export_options=export_options)
    manifest["cost"] = cost_section(model, config.num_points, config.min_points)  # profile's FLOPs without torch
    return manifest


def _stage(built: list, out_dir: Path, options: ExportOptions, outputs: OutputSet) -> ExportResult:
    """Good exports into the output set; failed ones only as *.failed.onnx with keep_failed."""
    passed = all(all(c.passed for c in b.checks) for b in built)
    artifacts = []
    for b in built:
        path = out_dir / (f"{b.role}.onnx" if passed else f"{b.role}.failed.onnx")
        keep = passed or options.keep_failed
        manifest = {**b.manifest, "onnx": {**b.manifest["onnx"], "file": path.name}}
        if keep:
            outputs.path(path).write_bytes(b.data)
            write_manifest(outputs.path(path), manifest)
        artifacts.append(Artifact(b.role, path if keep else None, manifest, b.checks))
    return ExportResult(artifacts)


__all__ = ["Artifact", "CheckResult", "ExportCheckError", "ExportOptions", "ExportResult", "export_model",
           "onnx_config_for"]
