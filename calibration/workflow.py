"""The `calibrate` and `accuracy` commands as API calls: read the manifest, feed, quantize, report.

Each step logs what it starts with and ends with its time and artifact size, through `log`.
"""

from __future__ import annotations

import copy
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

from foundry_edge.assignment_health import describe
from foundry_edge.calibration.feeds import preprocessing_from, prepare
from foundry_edge.data.loader import CloudLoader
from foundry_edge.calibration.qdq import QuantizeOptions
from foundry_edge.contracts.manifest import manifest_path, read_manifest
from foundry_edge.contracts.onnx_graph import graph_specs, onnx_precision, read_onnx
from foundry_edge.contracts.preprocessing import Preprocessing
from foundry_edge.errors import FoundryError
from foundry_edge.fileio import OutputSet, refuse_overwrite, sha256_file, write_json_atomic
from foundry_edge.interrupts import signal_point
from foundry_edge.runtimes.model_info import num_supertokens_of

Log = Callable[[str], None]


@dataclass
class CalibrateConfig:
    """`foundry-edge calibrate` options, one field each."""

    model: Path
    data: List[str]
    output: Optional[Path] = None  # default: MODEL.int8.onnx
    samples: int = 128
    batch: int = 8
    seed: int = 0
    quantize: QuantizeOptions = field(default_factory=QuantizeOptions)
    points: Optional[int] = None  # preprocessing when the model has no manifest
    grouping: Optional[str] = None
    groups: Optional[int] = None
    group_size: Optional[int] = None
    report: Optional[Path] = None  # folder for the FP32/FP16/INT8 accuracy report
    eval_data: Optional[List[str]] = None  # default: --data (the held-out "test" split)
    eval_samples: int = 64
    sensitivity: bool = False
    drop_invalid: bool = False  # drop NaN/Inf points of --data and --eval-data instead of refusing the cloud

    def problems(self) -> List[str]:
        out = []
        if self.report is None and (self.sensitivity or self.eval_data):
            out.append("--sensitivity and --eval-data need --report DIR")
        if self.batch < 1 or self.eval_samples < 1:
            out.append("--batch and --eval-samples must be >= 1")
        return out

    @property
    def output_path(self) -> Path:
        return self.output or self.model.with_name(self.model.stem + ".int8.onnx")


def load_model_facts(config: CalibrateConfig, role: str = "the model to calibrate"):
    """(manifest or None, preprocessing, input names) of an FP32 ONNX, refusing a missing or lower-precision one."""
    if not config.model.is_file():
        raise FoundryError(f"expected an ONNX model, found nothing at {config.model}: export it first "
                           "(foundry-edge export)")
    manifest = read_manifest(config.model)
    graph = read_onnx(config.model).graph
    precision = onnx_precision(graph)
    if precision != "fp32":
        raise FoundryError(f"expected {role} in FP32, found {config.model.name} is already {precision.upper()} "
                           f"({'Q/DQ nodes' if precision == 'int8' else 'FP16 weights'}): pass the FP32 ONNX it came from")
    pre = preprocessing_from(manifest, config.points, config.grouping, config.groups, config.group_size)
    inits = {i.name for i in graph.initializer}
    return manifest, pre, [i.name for i in graph.input if i.name not in inits]


def _refuse_overwriting(config: CalibrateConfig) -> None:
    """No output may land on the model, its manifest or a data file; the report must be a folder."""
    inputs = [config.model, manifest_path(config.model), *config.data, *(config.eval_data or [])]
    refuse_overwrite(config.output_path, inputs)
    refuse_overwrite(manifest_path(config.output_path), inputs, option="the INT8 manifest")
    if config.quantize.cache_path is not None:
        refuse_overwrite(config.quantize.cache_path, [config.output_path, *inputs], option="--cache")
    if config.report is not None:
        refuse_overwrite(config.report, inputs, folder=True, option="--report")


def calibrate(config: CalibrateConfig, log: Log = print, on_feed=None) -> dict:
    """FP32 ONNX -> Q/DQ INT8 ONNX + manifest + range cache (+ accuracy report) -> a summary dict with `passed`.

    The files are written as one set (foundry_edge.fileio.OutputSet): on an error or a signal none is, and
    an older INT8 file, manifest, cache and report stay as they were.
    """
    from foundry_edge.calibration.qdq import quantize_int8

    problems = config.problems()
    if problems:
        raise FoundryError("conflicting options: " + "; ".join(problems))
    config.quantize.validate()
    manifest, pre, names = load_model_facts(config)
    _refuse_overwriting(config)
    clouds = CloudLoader(config.data, pre.num_points, config.samples, split="calibration", seed=config.seed,
                         min_points=pre.group_size or 1, drop_invalid=config.drop_invalid)()
    feeds = prepare(clouds, pre, names, config.batch, config.seed)
    log(f"calibrating {config.model.name} ({pre.placement} grouping, {pre.num_points} points) on {config.samples} "
        f"clouds of {clouds.source}: {_backend_version(config.quantize.backend)}, method {config.quantize.method}")
    cache = config.quantize.cache_path
    folders = [config.output_path.parent] + ([Path(cache).parent] if cache else []) + \
        ([config.report] if config.report is not None else [])
    with OutputSet("calibrate", folders) as outputs:
        out = outputs.path(config.output_path)
        options = copy.copy(config.quantize)
        if cache:
            options.cache_path = outputs.path(cache)
            if Path(cache).is_file():  # read there, rewritten there: the old cache stays until the set is in place
                shutil.copyfile(cache, options.cache_path)
        start = time.perf_counter()
        result = quantize_int8(config.model, out, feeds, options, on_feed)
        signal_point("calibrate:quantized")
        for pattern in result.exclusions.unmatched:
            warnings.warn(f"--exclude {pattern!r} matches no node name or op type of {config.model.name}, so it keeps "
                          "nothing in FP32: check the pattern (fnmatch globs, e.g. '*attn*', or an op type)",
                          stacklevel=2)
        facts = {**result.to_dict(), "data": clouds.source, "seconds": round(time.perf_counter() - start, 2)}
        write_json_atomic(manifest_path(out), output_manifest(manifest, pre, config, facts, out))
        log(f"staged {config.output_path} ({_mib(out)}) in {facts['seconds']:.1f} s: {result.qdq_nodes} "
            f"Q/DQ nodes, {len(result.exclusions.nodes)} nodes kept FP32, range cache {result.cache}")
        summary = {"output": str(config.output_path), "calibration": facts, "passed": parser_check(out, log)}
        if config.report is not None:
            summary["report"] = report(config, manifest, pre, names, feeds, log, out, outputs.folder(config.report),
                                       options)
            summary["passed"] = summary["passed"] and summary["report"]["passed"]
        signal_point("calibrate:staged")
    log(f"wrote {config.output_path}, {manifest_path(config.output_path).name}"
        + (f", {cache}" if cache else "") + (f" and the report in {config.report}" if config.report else ""))
    return summary


def parser_check(path: Path, log: Log) -> bool:
    """TensorRT's (or TensorRT-RTX's) ONNX parser on the written file, where one is installed."""
    from foundry_edge.export.trt_check import check_with_tensorrt, find_tensorrt

    trt = find_tensorrt()
    if trt is None:
        log("TensorRT parser check skipped: neither tensorrt nor tensorrt_rtx is installed")
        return True
    result = check_with_tensorrt(path, trt)
    log(f"TensorRT parser check on {path.name}: {result.detail()}")
    return result.passed


def report(config: CalibrateConfig, manifest: Optional[dict], pre: Preprocessing, names, calib_feeds, log: Log,
           int8: Path, folder: Path, options: QuantizeOptions) -> dict:
    """FP32 vs FP16 (converted here) vs the INT8 just made (`int8`), on held-out clouds, written into `folder`
    (the report's staging folder); optional sweep with `options` (their cache_path staged too)."""
    from foundry_edge.calibration.accuracy import accuracy_report, sensitivity_sweep, write_report
    from foundry_edge.calibration.fp16 import convert_to_fp16

    fp16 = folder / (config.model.stem + ".fp16.onnx")
    start = time.perf_counter()
    convert_to_fp16(config.model, fp16)
    log(f"converted {config.model.name} to FP16 ({_mib(fp16)}) in {time.perf_counter() - start:.1f} s")
    held_out = CloudLoader(config.eval_data or config.data, pre.num_points, config.eval_samples, split="test",
                           seed=config.seed, min_points=pre.group_size or 1, drop_invalid=config.drop_invalid)()
    feeds = prepare(held_out, pre, names, config.batch, config.seed)
    log(f"measuring FP32 vs FP16 vs INT8 on {config.eval_samples} held-out clouds of {held_out.source}")
    start = time.perf_counter()
    result = accuracy_report({"fp32": config.model, "fp16": fp16, "int8": int8}, feeds,
                             held_out.labels, held_out.source, num_supertokens_of(manifest))
    for row, final in ((result["precisions"]["fp16"], config.report / fp16.name),
                       (result["precisions"]["int8"], config.output_path)):
        row["model"] = str(final)  # the report names where the files end up, not their staging folder
    _log_health(result, log)
    if config.sensitivity:
        log("sensitivity sweep: one layer quantized at a time")
        result["sensitivity"] = sensitivity_sweep(config.model, calib_feeds, feeds, options)
    write_report(result, folder)
    log(f"measured in {time.perf_counter() - start:.1f} s")
    return result


def output_manifest(manifest: Optional[dict], pre: Preprocessing, config: CalibrateConfig, facts: dict,
                    path: Path) -> dict:
    """The input's manifest with the INT8 file (`path`, staged), precision and calibration facts; without one,
    a complete manifest from the INT8 graph and the preprocessing options."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    out = copy.deepcopy(manifest) if manifest is not None else _manifest_from_graph(model, pre, config)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    out["onnx"] = {**out.get("onnx", {}), "file": config.output_path.name, "sha256": sha256_file(path), "opset": opset,
                   "nodes": len(model.graph.node), "precision": "int8"}
    out["source_onnx"] = {"file": config.model.name, "sha256": sha256_file(config.model)}
    out["calibration"] = facts
    return out


def _manifest_from_graph(model, pre: Preprocessing, config: CalibrateConfig) -> dict:
    """What an export would have written, from what the graph and the options tell (no model config, no checks;
    group sizes only where the options gave them)."""
    from foundry_edge.export.manifest import build_manifest
    from foundry_edge.runtimes.model_info import DEFAULT_BATCH_PROFILE

    inputs, outputs = graph_specs(model.graph)
    stamped = {p.key: p.value for p in model.metadata_props}
    axes = {s.shape[0] for s in inputs if s.shape and isinstance(s.shape[0], str)}
    return build_manifest(
        model={"name": stamped.get("foundry_edge.model", config.model.stem), "kind": stamped.get("foundry_edge.kind"),
               "config": None, "checkpoint": None, "class_names": None},
        onnx={}, grouping=pre.placement, preprocessing={k: v for k, v in pre.to_manifest().items() if v != 0},
        inputs=[s.to_dict() for s in inputs], outputs=[s.to_dict() for s in outputs],
        profiles={axis: list(DEFAULT_BATCH_PROFILE) for axis in axes}, versions={},
        checks={"passed": True, "items": []}, export_options={})


def _log_health(result: dict, log: Log) -> None:
    """The FP32 assignment's health, beside the agreement figures it qualifies."""
    if result["assignment_health"] is not None:
        log(f"assignment health of the FP32 reference: {describe(result['assignment_health'])}")


def _backend_version(backend: str) -> str:
    import importlib.metadata as md

    package = {"ort": "onnxruntime", "modelopt": "nvidia-modelopt"}[backend]
    try:
        return f"{package} {md.version(package)}"
    except md.PackageNotFoundError:
        return package


def _mib(path: Path) -> str:
    return f"{path.stat().st_size / 2**20:.2f} MiB"


def evaluate(model: Path, int8: Optional[Path], fp16: Optional[Path], data: List[str], samples: int, out: Path,
             batch: int = 8, seed: int = 0, log: Log = print, drop_invalid: bool = False, **preprocessing) -> dict:
    """`foundry-edge accuracy`: FP32 `model` vs the given INT8 / FP16 files (FP16 converted if not given), each
    checked to be that precision and the same model first; the report (and a converted FP16) as one set."""
    from foundry_edge.calibration.accuracy import accuracy_report, write_report
    from foundry_edge.calibration.fp16 import convert_to_fp16

    manifest, pre, names = load_model_facts(CalibrateConfig(model=model, data=data, **preprocessing),
                                            role="the reference MODEL")
    given = {"int8": int8, "fp16": fp16}
    for precision, path in given.items():
        if path is not None:
            check_variant(model, Path(path), precision)
    inputs = [model, manifest_path(model), *(p for p in given.values() if p is not None), *data]
    refuse_overwrite(out, inputs, folder=True)
    for name in ("accuracy.json", "accuracy.md", model.stem + ".fp16.onnx"):
        refuse_overwrite(out / name, inputs, option="the report's output")
    with OutputSet("accuracy", [out]) as outputs:
        folder = outputs.folder(out)
        if fp16 is None:
            fp16 = folder / (model.stem + ".fp16.onnx")
            convert_to_fp16(model, fp16)
            log(f"converted {model.name} to FP16 ({_mib(fp16)})")
        held_out = CloudLoader(data, pre.num_points, samples, split="test", seed=seed, min_points=pre.group_size or 1,
                               drop_invalid=drop_invalid)()
        log(f"measuring FP32 vs {'FP16 vs INT8' if int8 else 'FP16'} on {samples} clouds of {held_out.source}")
        start = time.perf_counter()
        models = {"fp32": model, "fp16": fp16, **({"int8": int8} if int8 is not None else {})}
        result = accuracy_report(models, prepare(held_out, pre, names, batch, seed), held_out.labels,
                                 held_out.source, num_supertokens_of(manifest))
        if fp16.parent == folder:
            result["precisions"]["fp16"]["model"] = str(out / fp16.name)
        _log_health(result, log)
        paths = [outputs.final(p) for p in write_report(result, folder)]
        signal_point("accuracy:staged")
    log(f"wrote {', '.join(str(p) for p in paths)} in {time.perf_counter() - start:.1f} s")
    return result


def check_variant(reference: Path, path: Path, precision: str) -> None:
    """Refuse an --int8 / --fp16 file that is missing, corrupt, not that precision, or another model than the
    reference: other inputs or outputs, another model or preprocessing stamped in it, or (by its manifest)
    quantized from another ONNX."""
    flag = f"--{precision}"
    if not path.is_file():
        raise FoundryError(f"expected an ONNX model for {flag}, found nothing at {path}: check the path")
    other, ref = read_onnx(path), read_onnx(reference)
    found = onnx_precision(other.graph)
    if found != precision:
        what = {"int8": "Q/DQ nodes", "fp16": "FP16 weights"}[precision]
        raise FoundryError(f"expected {flag} {path.name} to be {precision.upper()} ({what}), found an "
                           f"{found.upper()} graph: pass the file `foundry-edge calibrate` (INT8) or the FP16 "
                           "conversion wrote")
    manifest = read_manifest(path)
    source = (manifest or {}).get("source_onnx") or {}
    if source.get("sha256") and source["sha256"] != sha256_file(reference):
        raise FoundryError(f"{flag} {path.name} was made from {source.get('file')!r} (sha256 "
                           f"{source['sha256'][:12]}...), not from {reference.name}: pass the pair that belongs together")
    (ref_in, ref_out), (in_, out_) = graph_specs(ref.graph), graph_specs(other.graph)
    differ = [side for side, a, b in (("inputs", ref_in, in_), ("outputs", ref_out, out_))
              if [(s.name, len(s.shape)) for s in a] != [(s.name, len(s.shape)) for s in b]]
    stamped = [{p.key: p.value for p in m.metadata_props} for m in (ref, other)]
    differ += [key.split(".")[1] for key in ("foundry_edge.model", "foundry_edge.preprocessing")
               if key in stamped[0] and key in stamped[1] and stamped[0][key] != stamped[1][key]]
    if differ:
        raise FoundryError(f"{flag} {path.name} is not a {precision.upper()} version of {reference.name} (their "
                           f"{' and '.join(differ)} differ): pass the files of one model")
