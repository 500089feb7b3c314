"""What FP16 and INT8 cost against FP32, on held-out clouds, and which layers cost it.

Measured and judged by the one comparator (runtimes.compare: summary_metrics, and the `accuracy`
targets of its precision rows) as docs/platform-notes.md, "FP16 pitfalls" says, not by elementwise 1e-5 tolerances:
token cosine, agreement of the DSO assignments and of the classification top-1, accuracy where labels
exist, and whether the groups (centres) stayed the same. The assignment agreement comes with its flip
rate, the agreement on the FP32 near-ties (lowest 10 % assignment margin) and the FP32 assignment's health: a collapsed DSO
agrees 100 % in every precision, so its agreement is marked uninformative (foundry_edge/assignment_health.py).
All variants run in ONNX Runtime on the CPU:
- FP32: full graph optimisation.
- FP16: ORT_ENABLE_EXTENDED (ENABLE_ALL segfaulted with FP16 and a dynamic batch).
  ORT computes ops without an FP16 CPU kernel in FP32 after a cast, so this measures FP16 storage and
  rounding between ops, not FP16 accumulation inside a GEMM as on a GPU.
- INT8: graph optimisations disabled, so each Q/DQ pair rounds in float and the layers run in FP32,
  which is how TensorRT computes Q/DQ (int8 GEMMs accumulate exactly in int32). ORT's fused int8
  kernels saturate on CPUs without VNNI (docs/platform-notes.md, "ONNX Runtime on this project's CPUs"):
  the CPU's error, not the model's.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from foundry_edge.assignment_health import assignment_health, describe
from foundry_edge.calibration.feeds import Feed
from foundry_edge.fileio import write_json_atomic, write_text_atomic
from foundry_edge.runtimes.compare import TOLERANCES, summary_metrics
from foundry_edge.runtimes.ort import make_session

HOW = {"fp32": "ORT CPU, ORT_ENABLE_ALL",
       "fp16": "ORT CPU, ORT_ENABLE_EXTENDED (FP16 storage; FP32 compute where ORT has no FP16 kernel)",
       "int8": "ORT CPU, optimisations disabled: Q/DQ simulated unfused, as TensorRT computes it"}
OPTIMIZATION = {"fp32": "all", "fp16": "extended", "int8": "disabled"}  # why: see the module's docstring


def run_onnx(path: str | Path, feeds: Sequence[Feed], precision: str) -> Dict[str, np.ndarray]:
    """Run every feed through one model -> {output name: outputs concatenated over the batches}."""
    session = make_session(path, optimization=OPTIMIZATION[precision])
    names = [o.name for o in session.get_outputs()]
    runs = [session.run(names, feed) for feed in feeds]
    return {name: np.concatenate([r[i] for r in runs]) for i, name in enumerate(names)}


def check_targets(precision: str, metrics: dict, informative: bool) -> List[dict]:
    """Each target that applies to the metrics present: {metric, minimum, value, passed}; the assignment
    target also says whether it is `informative` (False: the FP32 assignment collapsed)."""
    targets = [{"metric": m, "minimum": low, "value": metrics[m], "passed": metrics[m] >= low}
               for m, low in TOLERANCES[precision].accuracy.items() if m in metrics]
    for target in targets:
        if target["metric"] == "assignment_agreement":
            target["informative"] = informative
    return targets


def accuracy_report(models: Dict[str, Path], feeds: Sequence[Feed], labels: Optional[Sequence[int]],
                    data: str, num_supertokens: Optional[int] = None) -> dict:
    """FP32 (the reference) vs each other precision given in `models` -> the report dict.

    `num_supertokens`: the student's s from its manifest (None: estimated from the FP32 assignment).
    """
    label_array = np.asarray(labels) if labels is not None else None
    ref = run_onnx(models["fp32"], feeds, "fp32")
    health = assignment_health(ref["assignment"], num_supertokens) if "assignment" in ref else None
    informative = health is None or not health["collapsed"]
    rows = {}
    for precision, path in models.items():
        out = ref if precision == "fp32" else run_onnx(path, feeds, precision)
        metrics = summary_metrics(ref, out, label_array, num_supertokens)
        rows[precision] = {"model": str(path), "how": HOW[precision], "metrics": metrics,
                           "targets": check_targets(precision, metrics, informative)}
    checks = [t for row in rows.values() for t in row["targets"]]
    return {"schema": "foundry-edge/accuracy", "schema_version": 1, "data": data,
            "samples": int(sum(len(next(iter(f.values()))) for f in feeds)), "precisions": rows,
            "assignment_health": health, "passed": all(t["passed"] for t in checks), "sensitivity": []}


def sensitivity_sweep(src: Path, calib_feeds: Sequence[Feed], eval_feeds: Sequence[Feed], options,
                      reference: Optional[Dict[str, np.ndarray]] = None) -> List[dict]:
    """Quantize one layer (the exporter's module scope) at a time -> its metrics vs FP32, worst first.

    Ranges come from `options.cache_path` (set it: calibration then runs once for the whole sweep).
    """
    import onnx

    from foundry_edge.calibration.graph import find_exclusions, layer_of
    from foundry_edge.calibration.qdq import prepare_graph, quantize_int8

    reference = reference if reference is not None else run_onnx(src, eval_feeds, "fp32")
    with tempfile.TemporaryDirectory(prefix="foundry-sweep-") as tmp:
        model = onnx.load(str(prepare_graph(Path(src), Path(tmp) / "prepared.onnx")))
        excluded = find_exclusions(model, options.exclude, options.default_exclusions).nodes
        layers: Dict[str, List[str]] = {}
        for node in model.graph.node:
            if node.op_type in options.op_types and node.name not in excluded:
                layers.setdefault(layer_of(node), []).append(node.name)
        rows = []
        for layer, nodes in layers.items():
            out_path = Path(tmp) / "one-layer.onnx"
            quantize_int8(src, out_path, calib_feeds, replace(options, only_nodes=nodes))
            metrics = summary_metrics(reference, run_onnx(out_path, eval_feeds, "int8"))
            rows.append({"layer": layer, "nodes": len(nodes), "metrics": metrics})
    key = "assignment_agreement" if any("assignment_agreement" in r["metrics"] for r in rows) else "token_cosine_mean"
    return sorted(rows, key=lambda r: r["metrics"].get(key, 1.0))


def write_report(report: dict, folder: str | Path) -> List[Path]:
    """accuracy.json and accuracy.md in `folder` (atomic)."""
    folder = Path(folder)
    return [write_json_atomic(folder / "accuracy.json", report), write_text_atomic(folder / "accuracy.md", to_markdown(report))]


def to_markdown(report: dict) -> str:
    metrics = sorted({m for row in report["precisions"].values() for m in row["metrics"]})
    lines = [f"# Accuracy: FP32 vs lower precision ({report['samples']} held-out clouds, {report['data']})", "",
             "| precision | " + " | ".join(metrics) + " | targets | how it ran |",
             "|---" * (len(metrics) + 3) + "|"]
    for precision, row in report["precisions"].items():
        cells = [f"{row['metrics'][m]:.4f}" if m in row["metrics"] else "-" for m in metrics]
        targets = ", ".join(f"{t['metric']} >= {t['minimum']}: {'pass' if t['passed'] else 'MISS'}"
                            + ("" if t.get("informative", True) else " (uninformative: FP32 assignment collapsed)")
                            for t in row["targets"]) or "-"
        lines.append(f"| {precision} | " + " | ".join(cells) + f" | {targets} | {row['how']} |")
    if report.get("assignment_health"):
        lines += ["", f"Assignment health of the FP32 reference: {describe(report['assignment_health'])}."]
    if report["sensitivity"]:
        lines += ["", "## INT8 sensitivity: one layer quantized at a time (worst first)", "",
                  "| layer | nodes | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 2) + "|"]
        for row in report["sensitivity"]:
            cells = [f"{row['metrics'][m]:.4f}" if m in row["metrics"] else "-" for m in metrics]
            lines.append(f"| {row['layer']} | {row['nodes']} | " + " | ".join(cells) + " |")
    lines += ["", f"Result: {'PASSED' if report['passed'] else 'FAILED'}", ""]
    return "\n".join(lines)
