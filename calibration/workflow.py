"""The `calibrate` and `accuracy` commands as API calls: read the manifest, feed, quantize, report.

Each step logs what it starts with and ends with its time and artifact size, through `log`.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

from foundry_edge.assignment_health import describe
from foundry_edge.calibration.feeds import Preprocessing, open_clouds, preprocessing_from, prepare
from foundry_edge.calibration.qdq import QuantizeOptions
from foundry_edge.errors import FoundryError
from foundry_edge.export.manifest import manifest_path, read_manifest
from foundry_edge.fileio import sha256_file, write_json_atomic
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


def input_names(onnx_path: Path) -> List[str]:
    from foundry_edge.runtimes.model_info import read_onnx

    model = read_onnx(onnx_path)
    inits = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


def load_model_facts(config: CalibrateConfig):
    """(manifest or None, preprocessing, input names), refusing a missing model first."""
    if not config.model.is_file():
        raise FoundryError(f"expected an ONNX model, found nothing at {config.model}: export it first "
                           "(foundry-edge export)")
    manifest = read_manifest(config.model)
    pre = preprocessing_from(manifest, config.points, config.grouping, config.groups, config.group_size)
    return manifest, pre, input_names(config.model)


def calibrate(config: CalibrateConfig, log: Log = print, on_feed=None) -> dict:
    """FP32 ONNX -> Q/DQ INT8 ONNX + manifest (+ accuracy report) -> a summary dict with `passed`."""
    from foundry_edge.calibration.qdq import quantize_int8

    problems = config.problems()
    if problems:
        raise FoundryError("conflicting options: " + "; ".join(problems))
    config.quantize.validate()
    manifest, pre, names = load_model_facts(config)
    clouds = open_clouds(config.data, config.samples, "calibration", config.seed, pre.num_points, pre.group_size or 1,
                         config.drop_invalid)
    feeds = prepare(clouds, pre, names, config.batch, config.seed)
    log(f"calibrating {config.model.name} ({pre.grouping} grouping, {pre.num_points} points) on {config.samples} "
        f"clouds of {clouds.source}: {_backend_version(config.quantize.backend)}, method {config.quantize.method}")
    start = time.perf_counter()
    result = quantize_int8(config.model, config.output_path, feeds, config.quantize, on_feed)
    facts = {**result.to_dict(), "data": clouds.source, "seconds": round(time.perf_counter() - start, 2)}
    write_json_atomic(manifest_path(config.output_path), output_manifest(manifest, pre, config, facts))
    log(f"wrote {config.output_path} ({_mib(config.output_path)}) in {facts['seconds']:.1f} s: {result.qdq_nodes} "
        f"Q/DQ nodes, {len(result.exclusions.nodes)} nodes kept FP32, range cache {result.cache}")
    summary = {"output": str(config.output_path), "calibration": facts, "passed": parser_check(config.output_path, log)}
    if config.report is not None:
        summary["report"] = report(config, manifest, pre, names, feeds, log)
        summary["passed"] = summary["passed"] and summary["report"]["passed"]
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


def report(config: CalibrateConfig, manifest: Optional[dict], pre: Preprocessing, names, calib_feeds, log: Log) -> dict:
    """FP32 vs FP16 (converted here) vs the INT8 just written, on held-out clouds; optional sweep."""
    from foundry_edge.calibration.accuracy import accuracy_report, sensitivity_sweep, write_report
    from foundry_edge.calibration.fp16 import convert_to_fp16

    fp16 = config.report / (config.model.stem + ".fp16.onnx")
    start = time.perf_counter()
    convert_to_fp16(config.model, fp16)
    log(f"wrote {fp16} ({_mib(fp16)}) in {time.perf_counter() - start:.1f} s")
    held_out = open_clouds(config.eval_data or config.data, config.eval_samples, "test", config.seed, pre.num_points,
                          pre.group_size or 1, config.drop_invalid)
    feeds = prepare(held_out, pre, names, config.batch, config.seed)
    log(f"measuring FP32 vs FP16 vs INT8 on {config.eval_samples} held-out clouds of {held_out.source}")
    start = time.perf_counter()
    result = accuracy_report({"fp32": config.model, "fp16": fp16, "int8": config.output_path}, feeds,
                             held_out.labels, held_out.source, num_supertokens_of(manifest))
    _log_health(result, log)
    if config.sensitivity:
        log("sensitivity sweep: one layer quantized at a time")
        result["sensitivity"] = sensitivity_sweep(config.model, calib_feeds, feeds, config.quantize)
    paths = write_report(result, config.report)
    log(f"wrote {', '.join(str(p) for p in paths)} in {time.perf_counter() - start:.1f} s")
    return result


def output_manifest(manifest: Optional[dict], pre: Preprocessing, config: CalibrateConfig, facts: dict) -> dict:
    """The input's manifest with the INT8 file, precision and calibration facts (built fresh if none)."""
    import onnx

    out = copy.deepcopy(manifest) if manifest is not None else {
        "schema": "foundry-edge/manifest", "schema_version": 1, "grouping": pre.grouping,
        "preprocessing": pre.to_manifest()}
    path = config.output_path
    model = onnx.load(str(path), load_external_data=False)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    out["onnx"] = {**out.get("onnx", {}), "file": path.name, "sha256": sha256_file(path), "opset": opset,
                   "nodes": len(model.graph.node), "precision": "int8"}
    out["source_onnx"] = {"file": config.model.name, "sha256": sha256_file(config.model)}
    out["calibration"] = facts
    return out


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
    """`foundry-edge accuracy`: FP32 `model` vs the given INT8 / FP16 files (FP16 converted if not given)."""
    from foundry_edge.calibration.accuracy import accuracy_report, write_report
    from foundry_edge.calibration.fp16 import convert_to_fp16

    from foundry_edge.runtimes.model_info import read_onnx

    for path in (p for p in (int8, fp16) if p is not None):
        if not path.is_file():
            raise FoundryError(f"expected an ONNX model, found nothing at {path}: check the path")
        read_onnx(path)  # a corrupt file fails now, in one line, not after the FP32 run
    manifest, pre, names = load_model_facts(CalibrateConfig(model=model, data=data, **preprocessing))
    if fp16 is None:
        fp16 = out / (model.stem + ".fp16.onnx")
        convert_to_fp16(model, fp16)
        log(f"wrote {fp16} ({_mib(fp16)})")
    held_out = open_clouds(data, samples, "test", seed, pre.num_points, pre.group_size or 1, drop_invalid)
    log(f"measuring FP32 vs {'FP16 vs INT8' if int8 else 'FP16'} on {samples} clouds of {held_out.source}")
    start = time.perf_counter()
    models = {"fp32": model, "fp16": fp16, **({"int8": int8} if int8 is not None else {})}
    result = accuracy_report(models, prepare(held_out, pre, names, batch, seed), held_out.labels, held_out.source,
                             num_supertokens_of(manifest))
    _log_health(result, log)
    paths = write_report(result, out)
    log(f"wrote {', '.join(str(p) for p in paths)} in {time.perf_counter() - start:.1f} s")
    return result
