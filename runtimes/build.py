"""ONNX -> raw TensorRT plan + sidecar JSON + the equivalent trtexec line (`onnx2engine`).

Steps, each a small function: read the model's inputs and profiles -> check how precision is expressed
(builder flags on TensorRT <= 10; an FP16 or Q/DQ ONNX on strongly typed TensorRT 11) -> take the caller's
EngineInputs -> parse -> config (profiles, workspace, optimisation level, timing cache, DLA, precision,
FP32 layers, INT8 calibrator) -> build -> write atomically.

The builder only builds: converting to FP16, choosing the nodes kept in FP32 and reading calibration
clouds are the caller's (foundry_edge.calibration.engine_inputs), handed over as EngineInputs.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from foundry_edge.contracts.artifacts import PRECISIONS
from foundry_edge.contracts.manifest import manifest_path
from foundry_edge.contracts.onnx_graph import grouping_nodes, onnx_precision, read_onnx
from foundry_edge.contracts.sidecar import sidecar_path, write_sidecar
from foundry_edge.contracts.trtexec import shape_flags
from foundry_edge.errors import FoundryError
from foundry_edge.fileio import OutputSet, refuse_overwrite, sha256_file
from foundry_edge.interrupts import signal_point
from foundry_edge.runtimes import trt_compat
from foundry_edge.runtimes.model_info import ModelInfo, read_model_info

CALIB_METHODS = ("entropy", "minmax")
Shape = Tuple[int, ...]


@dataclass
class BuildConfig:
    """The `foundry-edge build` options, one field each (trtexec's names in comments)."""

    precision: str = "fp16"                      # --fp16 / --int8 (weakly typed) or the ONNX's own types
    min_shapes: Dict[str, Shape] = field(default_factory=dict)  # --minShapes
    opt_shapes: Dict[str, Shape] = field(default_factory=dict)  # --optShapes
    max_shapes: Dict[str, Shape] = field(default_factory=dict)  # --maxShapes
    workspace_mib: Optional[int] = None          # --memPoolSize=workspace:N
    opt_level: Optional[int] = None              # --builderOptimizationLevel
    timing_cache: Optional[Path] = None          # --timingCacheFile
    dla_core: Optional[int] = None               # --useDLACore
    allow_gpu_fallback: bool = False             # --allowGPUFallback
    calib_cache: Optional[Path] = None           # --calib
    calib_method: str = "entropy"
    verbose: bool = False                        # --verbose
    trt_module: Optional[str] = None             # tensorrt, or tensorrt_rtx for graph checks

    def problems(self) -> List[str]:
        """Options that conflict, as one table of what is valid together."""
        out = []
        if self.precision not in PRECISIONS:
            out.append(f"--precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.allow_gpu_fallback and self.dla_core is None:
            out.append("--allow-gpu-fallback needs --dla-core")
        if self.calib_cache and self.precision != "int8":
            out.append("--calib/--calib-cache need --precision int8")
        if self.calib_method not in CALIB_METHODS:
            out.append(f"--calib-method must be one of {CALIB_METHODS}, got {self.calib_method!r}")
        if self.opt_level is not None and not 0 <= self.opt_level <= 5:
            out.append(f"--opt-level must be 0..5, got {self.opt_level}")
        if self.dla_core is not None and self.dla_core < 0:
            out.append(f"--dla-core must be a core index >= 0, got {self.dla_core}")
        if self.workspace_mib is not None and self.workspace_mib < 1:
            out.append(f"--workspace must be a positive number of MiB, got {self.workspace_mib}")
        return out


Feed = Mapping[str, Any]  # {input name: np.ndarray}, the runtimes' one data contract


@dataclass
class EngineInputs:
    """What the caller hands the builder besides its options.

    onnx: the ONNX TensorRT parses, where it ends up (None: the exported ONNX itself); on strongly typed
          TensorRT an FP16 build needs an FP16 ONNX here. A file written with BuildContext.stage lands
          beside the plan with it.
    fp32_layers: ONNX node names kept in FP32 on weakly typed TensorRT with --fp16/--int8.
    calib_feed: feeds for an implicit INT8 calibrator (TensorRT <= 10), iterable more than once.
    notes: facts for the sidecar's `build` section (e.g. what an FP16 conversion kept in FP32).
    """

    onnx: Optional[Path] = None
    fp32_layers: Sequence[str] = ()
    calib_feed: Optional[Iterable[Feed]] = None
    notes: dict = field(default_factory=dict)


@dataclass(frozen=True)
class BuildContext:
    """What the builder knows when it asks a callable for its EngineInputs (inside its output set)."""

    trt: Any  # the imported tensorrt (or tensorrt_rtx) module
    strongly_typed: bool
    onnx: Path  # the exported ONNX, with its manifest beside it
    plan: Path
    info: ModelInfo
    precision: str
    outputs: Tuple[Path, ...]  # every file the build writes: no input of the caller's may be one of them
    stage: Callable[[Path], Path]  # final path -> where to write it so it lands with the plan (or not at all)
    log: Callable[[str], None]


InputsOrLoader = Union[EngineInputs, Callable[[BuildContext], EngineInputs], None]


@dataclass
class BuildResult:
    plan: Path
    sidecar: Path
    trtexec: Path
    onnx_built: Path  # the ONNX TensorRT parsed (an FP16 conversion on strongly typed TensorRT)
    seconds: float
    plan_bytes: int
    sidecar_data: dict


def parse_shapes(text: str) -> Dict[str, Shape]:
    """trtexec's 'points:1x1024x3,centers:1x64x3' -> {'points': (1, 1024, 3), ...}."""
    shapes = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, dims = item.rpartition(":")
        try:
            shapes[name] = tuple(int(d) for d in dims.split("x"))
        except ValueError:
            shapes[name] = ()
        if not sep or not name or not shapes[name]:
            raise FoundryError(f"expected shapes like points:1x1024x3, got {item!r}: write NAME:DxDxD, comma-separated")
    return shapes


def profile_shapes(info: ModelInfo, config: BuildConfig) -> Dict[str, Tuple[Shape, Shape, Shape]]:
    """Input name -> (min, opt, max): the options where given, else the manifest's per-axis profiles."""
    names = [spec.name for spec in info.inputs]
    for flag, given in (("--min-shapes", config.min_shapes), ("--opt-shapes", config.opt_shapes),
                        ("--max-shapes", config.max_shapes)):
        unknown = [name for name in given if name not in names]
        if unknown:
            raise FoundryError(f"{flag} names {', '.join(map(repr, unknown))}, which the model does not take; its "
                               f"inputs are {', '.join(names)}: use those names")
        if any(d < 1 for shape in given.values() for d in shape):
            raise FoundryError(f"{flag} needs positive dims, got {given}: write NAME:DxDxD with every D >= 1")
    out = {}
    for spec in info.inputs:
        given = [config.min_shapes.get(spec.name), config.opt_shapes.get(spec.name), config.max_shapes.get(spec.name)]
        triple = []
        for which, shape in enumerate(given):
            triple.append(shape or _shape_from_profiles(spec, info.profiles, which))
        for shape in triple:
            fixed = [(w, g) for w, g in zip(spec.shape, shape) if isinstance(w, int) and w >= 0 and w != g]
            if len(shape) != len(spec.shape) or fixed:
                raise FoundryError(f"shape {shape} for input {spec.name!r} does not fit its dims {spec.shape}: "
                                   "change only the dynamic axes")
        if any(a > b for lo, hi in zip(triple, triple[1:]) for a, b in zip(lo, hi)):
            raise FoundryError(f"input {spec.name!r} needs min <= opt <= max per axis, got {triple}: fix the shapes")
        out[spec.name] = tuple(triple)
    return out


def _shape_from_profiles(spec, profiles: Dict[str, List[int]], which: int) -> Shape:
    dims = []
    for dim in spec.shape:
        if isinstance(dim, int) and dim >= 0:
            dims.append(dim)
        elif dim in profiles:
            dims.append(int(profiles[dim][which]))
        else:
            raise FoundryError(f"input {spec.name!r} has a dynamic axis {dim!r} with no profile: pass "
                               f"--min-shapes/--opt-shapes/--max-shapes {spec.name}:..., or export with a manifest")
    return tuple(dims)


def trtexec_command(onnx: Path, plan: Path, shapes, config: BuildConfig, strongly_typed: bool,
                    fp32_layers: Sequence[str] = ()) -> str:
    """The trtexec line that builds the same engine (flags from TensorRT 8.5 to 11)."""
    parts = ["trtexec", f"--onnx={onnx}", f"--saveEngine={plan}", *shape_flags(shapes)]
    if strongly_typed:
        parts.append("--stronglyTyped")
    elif config.precision in ("fp16", "int8"):
        parts.append("--fp16")
        if config.precision == "int8":
            parts.append("--int8")
            if config.calib_cache:
                parts.append(f"--calib={config.calib_cache}")
        if fp32_layers:
            parts += ["--precisionConstraints=prefer", "--layerPrecisions=" + ",".join(f"{n}:fp32" for n in fp32_layers)]
    if config.workspace_mib:
        parts.append(f"--memPoolSize=workspace:{config.workspace_mib}")
    if config.opt_level is not None:
        parts.append(f"--builderOptimizationLevel={config.opt_level}")
    if config.timing_cache:
        parts.append(f"--timingCacheFile={config.timing_cache}")
    if config.dla_core is not None:
        parts.append(f"--useDLACore={config.dla_core}")
        if config.allow_gpu_fallback:
            parts.append("--allowGPUFallback")
    if config.verbose:
        parts.append("--verbose")
    return " ".join(parts)


def check_precision(trt, onnx_path: Path, info: ModelInfo, precision: str) -> bool:
    """Whether this TensorRT is strongly typed, refusing a precision the ONNX cannot give on it."""
    strongly = trt_compat.strongly_typed_only(trt)
    if info.precision == "int8" and precision != "int8":
        raise FoundryError(f"{onnx_path.name} is a Q/DQ INT8 ONNX, asked for {precision}: build it with --precision int8")
    if not strongly:
        return False
    if precision == "int8" and info.precision != "int8":
        raise FoundryError(f"TensorRT {trt_compat.version(trt)} is strongly typed and needs a Q/DQ ONNX for INT8, "
                           f"{onnx_path.name} has no Q/DQ nodes: run `foundry-edge calibrate {onnx_path}` first")
    if precision == "fp32" and info.precision == "fp16":
        raise FoundryError(f"{onnx_path.name} is an FP16 ONNX and TensorRT {trt_compat.version(trt)} takes its types "
                           "as they are: build it with --precision fp16 or pass the FP32 ONNX")
    return True


def check_parsed_precision(trt, parse_path: Path, precision: str, strongly: bool) -> None:
    """Strongly typed TensorRT builds FP16 only from an FP16 ONNX: the caller converts, the builder never does."""
    if not (strongly and precision == "fp16") or onnx_precision(read_onnx(parse_path).graph) != "fp32":
        return
    raise FoundryError(f"TensorRT {trt_compat.version(trt)} is strongly typed and builds FP16 from an FP16 ONNX, "
                       f"{parse_path.name} is FP32: convert it first (foundry_edge.calibration.engine_inputs."
                       "EngineInputsFromOnnx, as `foundry-edge build` does)")


def parse_network(trt, builder, onnx_path: Path, logger):
    """(network, parser): both are returned because the network must outlive the parser's caller."""
    network = trt_compat.create_network(trt, builder)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(trt_compat.parser_errors(parser))
        raise FoundryError(f"TensorRT {trt_compat.version(trt)} could not parse {onnx_path.name}: {errors}: "
                           "re-export for this TensorRT (`foundry-edge export --target trt8.5|trt8.6|trt10|trt11`)")
    return network, parser


def configure(trt, builder, network, shapes, config: BuildConfig, strongly: bool, fp32_layers: Sequence[str], log):
    """An IBuilderConfig with profiles, limits, cache, DLA and precision -> (config, keep-alive, FP32 layers)."""
    cfg = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, lo, opt, hi)
    cfg.add_optimization_profile(profile)
    if config.workspace_mib:
        trt_compat.set_workspace(trt, cfg, config.workspace_mib)
    if config.opt_level is not None:
        trt_compat.set_opt_level(trt, cfg, config.opt_level)
    alive = [profile]
    if config.timing_cache:
        cache = Path(config.timing_cache)
        alive.append(trt_compat.load_timing_cache(cfg, cache.read_bytes() if cache.is_file() else b""))
    if config.dla_core is not None:
        trt_compat.set_dla(trt, builder, cfg, config.dla_core, config.allow_gpu_fallback)
    if not strongly and config.precision != "fp32":
        trt_compat.set_precision_flags(trt, builder, cfg, config.precision)
        pinned = trt_compat.keep_layers_fp32(trt, network, cfg, fp32_layers)
        log(f"kept {len(pinned)} sensitive layers in FP32 (LayerNorm, softmax, decision inputs)")
        return cfg, alive, pinned
    return cfg, alive, []


def attach_calibrator(trt, cfg, config: BuildConfig, feed: Optional[Iterable[Feed]], has_qdq: bool, log):
    """INT8 without Q/DQ on TensorRT <= 10: an implicit calibrator over the caller's feed (or the cache alone)."""
    if config.precision != "int8" or has_qdq:
        return None
    if feed is None and not config.calib_cache:
        raise FoundryError("INT8 from an FP32 ONNX needs calibration data: pass --calib CLOUDS (or --calib-cache), "
                           "or run `foundry-edge calibrate` and build its Q/DQ ONNX")
    if not trt_compat.has_implicit_calibrators(trt):
        raise FoundryError(f"TensorRT {trt_compat.version(trt)} has no implicit INT8 calibrators: "
                           "run `foundry-edge calibrate` and build its Q/DQ ONNX")
    from foundry_edge.runtimes.calibrator import make_calibrator

    calibrator = make_calibrator(feed or (), config.calib_cache, config.calib_method, trt=trt)
    log(f"INT8 calibrator: {config.calib_method}, {len(calibrator.feeds)} batches, "
        f"cache {config.calib_cache or 'none'}")
    cfg.int8_calibrator = calibrator
    return calibrator


def onnx2engine(onnx_path: str | Path, plan_path: str | Path, config: BuildConfig, inputs: InputsOrLoader = None,
                log: Callable[[str], None] = print) -> BuildResult:
    """Build `plan_path` (+ `<plan>.json`, `<plan>.trtexec.txt`, and an ONNX the caller staged) from `onnx_path`,
    as one set (foundry_edge.fileio.OutputSet): on an error or a signal nothing new is left and the old plan,
    sidecar and caches stay as they were.

    `inputs`: EngineInputs, or a callable giving them from a BuildContext once the model and TensorRT are
    known (foundry_edge.calibration.engine_inputs.EngineInputsFromOnnx); None parses `onnx_path` as it is.
    """
    problems = config.problems()
    if problems:
        raise FoundryError("conflicting build options: " + "; ".join(problems))
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    trt = trt_compat.import_tensorrt(config.trt_module)
    log(f"building with {trt_compat.module_name(trt)} {trt_compat.version(trt)}: {onnx_path.name} -> "
        f"{plan_path.name} ({config.precision})")
    info = read_model_info(onnx_path)
    read_onnx(onnx_path)  # a corrupt file fails here in one line, not deep in a converter or parser
    shapes = profile_shapes(info, config)
    sidecar, trtexec = sidecar_path(plan_path), plan_path.with_name(plan_path.name + ".trtexec.txt")
    sources = [onnx_path, manifest_path(onnx_path)]
    for written in (plan_path, sidecar, trtexec):
        refuse_overwrite(written, sources, option="the plan" if written == plan_path else "the build's output")
    caches = [c for c in (config.timing_cache, config.calib_cache) if c]
    for cache in caches:
        refuse_overwrite(cache, [*sources, plan_path, sidecar, trtexec], option="a cache")
    with OutputSet("build", [plan_path.parent, *(Path(c).parent for c in caches)]) as outputs:
        staged = _staged_config(config, outputs)
        strongly = check_precision(trt, onnx_path, info, config.precision)
        written: Dict[Path, Path] = {}  # final -> staged, for files the caller wrote through `stage`

        def stage(final: Path) -> Path:
            written[Path(final)] = outputs.path(final)
            return written[Path(final)]

        context = BuildContext(trt, strongly, onnx_path, plan_path, info, config.precision,
                               (plan_path, sidecar, trtexec, *map(Path, caches)), stage, log)
        given = inputs(context) if callable(inputs) else inputs or EngineInputs()
        parse_path = Path(given.onnx or onnx_path)
        built_from = written.get(parse_path, parse_path)
        check_parsed_precision(trt, built_from, config.precision, strongly)
        logger = trt.Logger(trt.Logger.VERBOSE if config.verbose else trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network, _parser = parse_network(trt, builder, built_from, logger)
        signal_point("build:parsed")
        cfg, _alive, fp32_layers = configure(trt, builder, network, shapes, staged, strongly, given.fp32_layers, log)
        _calibrator = attach_calibrator(trt, cfg, staged, given.calib_feed, info.precision == "int8", log)
        start = time.perf_counter()
        serialized = builder.build_serialized_network(network, cfg)
        seconds = time.perf_counter() - start
        if serialized is None:
            raise FoundryError(f"TensorRT could not build an engine from {parse_path.name} ({config.precision}): "
                               "rerun with --verbose to see the failing layer")
        signal_point("build:built")
        outputs.path(plan_path).write_bytes(bytes(serialized))
        if config.timing_cache:
            outputs.path(config.timing_cache).write_bytes(trt_compat.timing_cache_bytes(cfg))
        command = trtexec_command(parse_path, plan_path, shapes, config, strongly, fp32_layers)
        outputs.path(trtexec).write_text(command + "\n", encoding="utf-8")
        data = sidecar_data(trt, onnx_path, built_from, outputs.path(plan_path), info, shapes, config, strongly,
                            seconds, given.notes)
        write_sidecar(outputs.path(plan_path), data)
        plan_bytes = outputs.path(plan_path).stat().st_size
        signal_point("build:staged")
    return BuildResult(plan_path, sidecar, trtexec, parse_path, seconds, plan_bytes, data)


def _staged_config(config: BuildConfig, outputs) -> BuildConfig:
    """The config with its caches read from and written to the staging folders (copied there first), so an
    old cache stays as it was until the whole build is in place."""
    import shutil

    staged = {}
    for name in ("timing_cache", "calib_cache"):
        path = getattr(config, name)
        if path:
            staged[name] = outputs.path(path)
            if Path(path).is_file():
                shutil.copyfile(path, staged[name])
    return dataclasses.replace(config, **staged)


def sidecar_data(trt, onnx_path, parse_path, plan_path, info, shapes, config, strongly, seconds, notes) -> dict:
    return {
        "plan": {"file": plan_path.name, "sha256": sha256_file(plan_path), "bytes": plan_path.stat().st_size},
        "onnx": {"file": onnx_path.name, "sha256": sha256_file(onnx_path), "precision": info.precision,
                 "built_from": parse_path.name, "built_from_sha256": sha256_file(parse_path),
                 "node_stages": node_stages(parse_path)},
        "precision": config.precision,
        "strongly_typed": strongly,
        "profiles": [{name: {"min": list(t[0]), "opt": list(t[1]), "max": list(t[2])} for name, t in shapes.items()}],
        "build": {"seconds": round(seconds, 3), "workspace_mib": config.workspace_mib, "opt_level": config.opt_level,
                  "dla_core": config.dla_core, "allow_gpu_fallback": config.allow_gpu_fallback,
                  "timing_cache": str(config.timing_cache) if config.timing_cache else None, **notes},
        "device": this_device(trt),
        "model": info.to_dict(),
    }


def node_stages(onnx_path) -> dict:
    """{"grouping": [...], "network": [...]} ONNX node names of the parsed file: TensorRT names its layers after
    them (fused ones join them), so `profile` can split the engine's per-layer times by stage on a device
    without the ONNX (runtimes/trt_layers.py)."""
    graph = read_onnx(onnx_path).graph
    grouping = grouping_nodes(graph)
    return {"grouping": sorted(grouping), "network": sorted(n.name for n in graph.node if n.name not in grouping)}


def this_device(trt) -> dict:
    """This machine's facts; GPU fields stay None where CUDA is unusable (graph checks without a GPU)."""
    from foundry_edge.contracts.device import device_facts
    from foundry_edge.runtimes.cuda_host import open_cuda

    try:
        cuda = open_cuda()
    except FoundryError:
        return device_facts(trt)
    try:
        return device_facts(trt, cuda)
    finally:
        cuda.close()
