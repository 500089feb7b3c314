"""Checks every export ends with: is the written file valid, shaped as asked, deployable, and equal
to the PyTorch reference? Each check returns a CheckResult; none raises, so a report lists them all
(optimum-onnx's validate_model_outputs collects failures the same way). Parity is measured and judged by
the one comparator (runtimes.compare) at the config's tolerance row (its "export" row by default)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from foundry_edge.assignment_health import describe
from foundry_edge.data.loader import CloudLoader
from foundry_edge.export.onnx_config import PointModelOnnxConfig
from foundry_edge.export.targets import DEFAULT_TARGET, get_target
from foundry_edge.runtimes.compare import assignment_figures, failures, near_tie_flips
from foundry_edge.runtimes.compare import output_metrics
from foundry_edge.runtimes.ort import make_session

# Ops the written graph must not hold, and why (docs/platform-notes.md, "TensorRT versions and ONNX opsets").
FORBIDDEN_OPS = {
    "OneHot": "not parsed by TensorRT 8.5; the model uses ArgMax + Equal",
    "ScatterND": "reductions are not parsed by TensorRT; the model groups with MatMul",
    "ScatterElements": "reductions need a TensorRT plugin",
    "Attention": "the opset-23 Attention op is rejected by TensorRT builders",
}
TOPK_MAX_K = 3840  # TensorRT's limit on a TopK's K


@dataclass
class CheckResult:
    name: str
    passed: bool
    detail: str
    metrics: dict = field(default_factory=dict)
    skipped: bool = False

    def to_dict(self) -> dict:
        return {"name": self.name, "passed": self.passed, "skipped": self.skipped, "detail": self.detail,
                "metrics": self.metrics}


def check_onnx_checker(path: Path) -> CheckResult:
    """onnx.checker with full_check (it runs strict shape inference too)."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        return CheckResult("onnx.checker", False, str(exc).strip().splitlines()[0])
    return CheckResult("onnx.checker", True, f"onnx {onnx.__version__} full_check")


def check_shape_inference(model) -> CheckResult:
    """Strict shape inference must give every output its declared rank."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except onnx.shape_inference.InferenceError as exc:
        return CheckResult("shape inference", False, str(exc).strip().splitlines()[0])
    unranked = [o.name for o in inferred.graph.output if not o.type.tensor_type.HasField("shape")]
    if unranked:
        return CheckResult("shape inference", False, f"outputs without an inferred shape: {unranked}")
    return CheckResult("shape inference", True, f"{len(inferred.graph.value_info)} intermediate shapes inferred")


def _dims(value) -> list:
    return [d.dim_param if d.dim_param else d.dim_value for d in value.type.tensor_type.shape.dim]


def check_dims(model, config: PointModelOnnxConfig) -> CheckResult:
    """The file's inputs and outputs have exactly the asked names, dtypes and dims (static or named)."""
    import onnx

    initializers = {i.name for i in model.graph.initializer}
    found = {"inputs": [v for v in model.graph.input if v.name not in initializers], "outputs": model.graph.output}
    wanted = {"inputs": config.input_specs(), "outputs": config.output_specs()}
    problems = []
    for side in ("inputs", "outputs"):
        got = [(v.name, onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name, _dims(v))
               for v in found[side]]
        want = [(s.name, s.dtype, list(s.shape)) for s in wanted[side]]
        if got != want:
            problems.append(f"{side} {got} != asked {want}")
    if problems:
        return CheckResult("dims", False, "; ".join(problems))
    shown = ", ".join(f"{s.name} {list(s.shape)}" for s in wanted["inputs"] + wanted["outputs"])
    return CheckResult("dims", True, shown)


def _constant_values(model) -> dict:
    """Tensor name -> numpy value for initializers and Constant nodes."""
    from onnx import numpy_helper

    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def check_ops(model, target: str = DEFAULT_TARGET) -> CheckResult:
    """No forbidden op (for `target` too), default-domain ops only, the target's opsets, every TopK's K a
    constant <= 3840."""
    trt = get_target(target)
    forbidden = {**FORBIDDEN_OPS, **trt.forbidden_ops()}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    problems = [] if opset in trt.opsets else [f"opset {opset} (expected one of {sorted(trt.opsets)} for {target})"]
    constants = _constant_values(model)
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
        if node.op_type in forbidden:
            problems.append(f"{node.op_type} {node.name!r}: {forbidden[node.op_type]}")
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"{node.op_type} {node.name!r} in custom domain {node.domain!r}")
        if node.op_type == "TopK":
            k = constants.get(node.input[1])
            if k is None:
                problems.append(f"TopK {node.name!r} has a computed K (TensorRT needs a constant)")
            elif int(np.max(k)) > TOPK_MAX_K:
                problems.append(f"TopK {node.name!r} K={int(np.max(k))} exceeds TensorRT's {TOPK_MAX_K}")
    metrics = {"opset": opset, "nodes": len(model.graph.node), "topk": counts.get("TopK", 0)}
    if problems:
        return CheckResult("ops", False, "; ".join(problems[:5]), metrics)
    return CheckResult("ops", True, f"opset {opset} for {target}, {len(model.graph.node)} nodes, no "
                                    f"{'/'.join(forbidden)}, {counts.get('TopK', 0)} TopK with constant K", metrics)


def check_ir_version(model, target: str = DEFAULT_TARGET) -> CheckResult:
    """The IR version is the one `target` gives the file's opset (export/targets.py): a newer one does not
    load in the ONNX Runtime builds the target's devices have."""
    trt = get_target(target)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset not in trt.opsets:
        return CheckResult("ir version", False, f"opset {opset} has no IR version for {target} (see the ops check)")
    wanted = trt.ir_version(opset)
    metrics = {"ir_version": model.ir_version, "expected": wanted}
    if model.ir_version != wanted:
        return CheckResult("ir version", False, f"IR version {model.ir_version}, expected {wanted} for opset {opset} "
                                                f"on {target}", metrics)
    return CheckResult("ir version", True, f"IR version {wanted} for opset {opset} on {target}", metrics)


def check_reduce_axes(model) -> CheckResult:
    """Every Reduce* node's axes is an attribute or an initializer: TensorRT 8.x's reduce importers want
    constant axes and TensorRT 10 rejects an axes input that is not an initializer. Loop bodies too."""
    from foundry_edge.export.rewrites import graphs, walk

    initializers = {i.name for g in graphs(model.graph) for i in g.initializer}
    reduces = [n for n in walk(model.graph) if n.op_type.startswith("Reduce")]
    computed = [f"{n.op_type} {n.name!r} axes {n.input[1]!r}" for n in reduces
                if len(n.input) > 1 and n.input[1] and n.input[1] not in initializers]
    as_input = sum(len(n.input) > 1 and bool(n.input[1]) for n in reduces)
    metrics = {"reduce": len(reduces), "axes_inputs": as_input}
    if computed:
        return CheckResult("reduce axes", False, f"computed axes (TensorRT needs constants): {'; '.join(computed[:5])}",
                           metrics)
    return CheckResult("reduce axes", True, f"{len(reduces)} Reduce nodes: {len(reduces) - as_input} axes attributes, "
                                            f"{as_input} initializers", metrics)


def _judge(name: str, metrics: dict, config: PointModelOnnxConfig) -> tuple[bool, str]:
    """One output's metrics (runtimes.compare.output_metrics) judged by the config's tolerance row -> (passed, text)."""
    found = failures(metrics, config.tolerances, name)
    if "shape" in metrics or "nonfinite" in metrics:
        return False, f"{name} " + (f"shape {metrics['shape']}" if "shape" in metrics
                                    else f"has {metrics['nonfinite']} NaN/inf values (reference + ONNX)")
    if "agreement" in metrics:
        text = f"{name} {100 * metrics['agreement']:.2f}% agree"
        text += f" (< {100 * config.tolerances.min_agreement:g}%)" if found else ""
        if "health" in metrics:
            text += f" [{describe(metrics['health'])}]"
        return not found, text
    if metrics.get("max_abs") is None:  # every cloud judged by cosine (a near-tie flip in each)
        text = f"{name} cos {metrics['cosine']:.6f} (by cosine only)"
    else:
        text = f"{name} abs {metrics['max_abs']:.1e} rel {metrics['max_rel']:.1e} cos {metrics['cosine']:.6f}"
    return not found, text + "".join(f" ({f})" for f in found)


def check_parity(path: Path, model, config: PointModelOnnxConfig, seed: int = 0) -> list[CheckResult]:
    """ONNX Runtime on the deployed path (raw clouds -> feed -> graph) vs `model(points)` in PyTorch,
    at the trace shape and at a second shape on every dynamic axis, on clouds other than the trace's.
    With host grouping, grouping and network are judged apart (`_host_grouping_checks`)."""
    import torch

    # The graph as written: ORT fuses LayerNorm back even at its basic level.
    session = make_session(path, optimization="disabled")
    results = []
    for i, (batch, points) in enumerate(config.validation_shapes()):
        clouds = CloudLoader(["example"], points, batch, seed=seed + 1 + i)().points
        if config.grouping == "host":
            results += _host_grouping_checks(session, model, config, clouds, (batch, points))
            continue
        with torch.no_grad():
            ref = model(torch.from_numpy(clouds))
        results.append(_outputs_check(f"onnxruntime vs torch b{batch} n{points}", session, config.feed(clouds), ref,
                                      config, (batch, points)))
    return results


def _host_grouping_checks(session, model, config: PointModelOnnxConfig, clouds: np.ndarray, shape: tuple):
    """Grouping and network judged apart (export/grouping_parity.py): the host's groups of the model's own
    normalised points against the model's, tie-aware; the graph on the model's groups, where an assignment may
    flip only at a near-tie; then the deployed path (the host normalises in float64 first, so at scale its
    groups can part from the model's at near-ties), judged where its groups are the model's, else reported."""
    import dataclasses

    import torch

    from foundry_edge.data.preprocess import feed_for
    from foundry_edge.export.grouping_parity import compare_groupings
    from foundry_edge.models.model import normalize_cloud

    with torch.no_grad():
        points = torch.from_numpy(clouds)
        points = normalize_cloud(points) if model.config.normalize_input else points
        neighbourhoods, centers = model.tokenizer.group(points)
        ref = model.forward_grouped(neighbourhoods, centers)  # = model(points): host grouping has no seg head
    model_groups = {"neighbourhoods": neighbourhoods.numpy(), "centers": centers.numpy()}
    label = f"b{shape[0]} n{shape[1]}"
    same_points = feed_for(points.numpy(), dataclasses.replace(config.preprocessing_spec(), normalize=False))
    grouping = compare_groupings(_groups(same_points), _groups(model_groups))
    results = [CheckResult(f"host grouping vs torch {label}", grouping.passed, grouping.detail(), grouping.to_dict()),
               _outputs_check(f"onnxruntime vs torch on torch's groups {label}", session, model_groups, ref, config, shape)]
    feed = config.feed(clouds)
    deployed = compare_groupings(_groups(feed), _groups(model_groups))
    result = _outputs_check(f"onnxruntime vs torch {label}", session, feed, ref, config, shape)
    if deployed.identical < deployed.groups:  # different groups, different outputs: the checks above judge
        result = CheckResult(result.name, True, f"not judged: with the host's float64 normalisation, "
                             f"{deployed.detail()}; " + result.detail, result.metrics, skipped=True)
    return results + [result]


def _groups(feed: dict) -> tuple:
    return feed["neighbourhoods"], feed["centers"]


def _outputs_check(name: str, session, feed: dict, ref: dict, config: PointModelOnnxConfig, shape: tuple) -> CheckResult:
    """The graph's outputs on `feed` against the torch outputs `ref`, judged at the config's tolerance row.

    A cloud whose SuperToken assignment flips only where the reference's margin lies within the two runtimes'
    own disagreement on it (runtimes.compare.near_tie_flips; the thousands of tokens of a large scene make such
    a near-tie likely) moves every token of the two SuperTokens involved, so that cloud is judged by cosine
    alone; clouds without a flip stay judged elementwise, and a flip at a clear margin fails."""
    got = dict(zip(config.outputs, session.run(list(config.outputs), feed)))
    ref = {name: value.numpy() for name, value in ref.items()}
    flipped = np.zeros(len(got[config.outputs[0]]), dtype=bool)
    ties = None
    if "assignment" in got and "assignment_margin" in got:
        ties = near_tie_flips(ref["assignment"], got["assignment"], ref["assignment_margin"], got["assignment_margin"])
        if ties["all_at_near_ties"]:
            flipped = ties["clouds"]
    metrics = {out: _split_metrics(ref[out], got[out], flipped if out != "assignment" else None)
               for out in config.outputs}
    if "agreement" in metrics.get("assignment", {}):
        margin = ref.get("assignment_margin")
        metrics["assignment"].update(assignment_figures(ref["assignment"], got["assignment"], margin,
                                                        config.model.num_supertokens))
    verdicts = [_judge(out, metrics[out], config) for out in config.outputs]
    if ties is not None and ties["flips"]:
        verdicts = [(ok or (out == "assignment" and ties["all_at_near_ties"]), text) for (ok, text), out
                    in zip(verdicts, config.outputs)]
        verdicts.append((ties["all_at_near_ties"], _describe_ties(ties)))
    passed = all(ok for ok, _ in verdicts)
    shown = [text for ok, text in verdicts if not ok] if not passed else [text for _, text in verdicts]
    return CheckResult(name, passed, "; ".join(shown), {"batch": shape[0], "num_points": shape[1], "outputs": metrics,
                                                        **({"near_ties": _jsonable(ties)} if ties else {})})


def _split_metrics(ref: np.ndarray, got: np.ndarray, by_cosine) -> dict:
    """output_metrics over the clouds not in `by_cosine` (B,) bool, with the lowest cosine over all clouds."""
    if by_cosine is None or not by_cosine.any():
        return output_metrics(ref, got)
    loose = output_metrics(ref[by_cosine], got[by_cosine])
    if "cosine" not in loose:  # a shape or NaN problem: that is the figure
        return loose
    strict = output_metrics(ref[~by_cosine], got[~by_cosine]) if (~by_cosine).any() else {}
    if strict and "cosine" not in strict:
        return strict
    return {"max_abs": strict.get("max_abs"), "max_rel": strict.get("max_rel"),  # None: no cloud elementwise
            "cosine": min(strict.get("cosine", 1.0), loose["cosine"])}


def _describe_ties(ties: dict) -> str:
    where = (f"all at near-ties (reference margin <= {ties['limit']:.1e}, within the runtimes' own margin "
             f"difference); {int(ties['clouds'].sum())} cloud(s) judged by cosine") if ties["all_at_near_ties"] else \
        f"{ties['flips'] - ties['at_near_ties']} not at a near-tie (margin > {ties['limit']:.1e})"
    return f"{ties['flips']} assignment flips, {where}"


def _jsonable(ties: dict) -> dict:
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in ties.items()}


def check_tensorrt(path: Path, mode: str) -> CheckResult:
    """The TensorRT parser check: `auto` runs it where tensorrt or tensorrt_rtx imports, `on` insists."""
    from foundry_edge.export.trt_check import check_with_tensorrt, find_tensorrt

    if mode == "off":
        return CheckResult("tensorrt parser", True, "off (--trt-check off)", skipped=True)
    if mode == "auto" and find_tensorrt() is None:
        return CheckResult("tensorrt parser", True, "skipped: neither tensorrt nor tensorrt_rtx is installed",
                           skipped=True)
    result = check_with_tensorrt(path)
    return CheckResult("tensorrt parser", result.passed, result.detail(),
                       {"module": result.module, "version": result.version, "errors": result.errors,
                        "unsupported": result.unsupported})


def validate_onnx(path, model, config: PointModelOnnxConfig, *, parity: bool = True, trt_check: str = "auto",
                  seed: int = 0) -> list[CheckResult]:
    """Every check on the written file at `path`; `model` is the PyTorch reference."""
    import onnx

    path = Path(path)
    proto = onnx.load(str(path))
    results = [check_onnx_checker(path), check_shape_inference(proto), check_dims(proto, config),
               check_ops(proto, config.target), check_ir_version(proto, config.target), check_reduce_axes(proto)]
    if parity:
        results += check_parity(path, model, config, seed)
    else:
        results.append(CheckResult("onnxruntime vs torch", True, "skipped (--no-check)", skipped=True))
    results.append(check_tensorrt(path, trt_check))
    return results
