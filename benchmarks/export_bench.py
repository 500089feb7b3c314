"""Export time and ONNX size per preset at full size: what `foundry-edge export PRESET` costs.

For each preset (default: all), the export steps timed one by one on the default options (graph
grouping, dynamic batch and points, opset 18, onnxsim): torch2onnx, simplify_onnx, validate_onnx
(ONNX Runtime parity at two shapes and the TensorRT parser check where tensorrt(_rtx) imports).
One flat row per preset; a failure becomes an `error` field. Writes export_bench.json and .md.

    python benchmarks/export_bench.py --out benchmarks/results [--presets foundry-edge16 ...]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
import warnings
from pathlib import Path


def bench_preset(preset: str, grouping: str) -> dict:
    """One preset -> a flat row of timings, node counts and check results."""
    import onnx
    import torch

    from foundry_edge.export import ExportOptions, onnx_config_for
    from foundry_edge.export.simplify import simplify_onnx
    from foundry_edge.export.torch2onnx import torch2onnx
    from foundry_edge.export.validate import validate_onnx
    from foundry_edge.models import create_model
    from foundry_edge.models.model import count_parameters

    torch.manual_seed(0)
    model = create_model(preset)
    config = onnx_config_for(model.config, ExportOptions(model=preset, grouping=grouping).resolved())
    row = {"preset": preset, "kind": model.config.kind, "params_m": round(count_parameters(model) / 1e6, 2),
           "grouping": grouping, "num_points": config.num_points, "groups": model.config.num_groups,
           "opset": config.opset}
    start = time.perf_counter()
    raw = torch2onnx(model, config)
    row["export_s"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    simplified, row["simplifier"] = simplify_onnx(raw)
    row["simplify_s"] = round(time.perf_counter() - start, 1)
    row.update(nodes_exported=len(raw.graph.node), nodes=len(simplified.graph.node),
               topk=sum(n.op_type == "TopK" for n in simplified.graph.node), mb=round(simplified.ByteSize() / 1e6, 1))
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "model.onnx"
        onnx.save(simplified, path)
        start = time.perf_counter()
        checks = validate_onnx(path, model, config)
        row["check_s"] = round(time.perf_counter() - start, 1)
    row["passed"] = all(c.passed for c in checks)
    row["trt_parser"] = next(c.detail.split(":")[0] if c.passed else "FAILED"
                             for c in checks if c.name == "tensorrt parser")
    worst = [c.metrics["outputs"]["tokens"]["max_rel"] for c in checks if c.name.startswith("onnxruntime")]
    row["tokens_max_rel"] = float(f"{max(worst):.1e}") if worst else None
    return row


def to_markdown(rows: list, machine: str) -> str:
    columns = ["preset", "kind", "params_m", "nodes_exported", "nodes", "topk", "mb", "export_s", "simplify_s",
               "check_s", "tokens_max_rel", "passed", "trt_parser"]
    lines = [f"Export at full size, graph grouping, dynamic batch and points, opset 18 ({machine}).", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [row.get("error", "") if c == "passed" and "error" in row else row.get(c, "") for c in columns]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    from foundry_edge.fileio import write_json_atomic, write_text_atomic
    from foundry_edge.models import list_presets

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--presets", nargs="*", default=list_presets())
    parser.add_argument("--grouping", default="graph", choices=("graph", "host"))
    args = parser.parse_args()
    import onnx
    import torch

    machine = f"{platform.machine()}, {platform.python_version()}, torch {torch.__version__}, onnx {onnx.__version__}"
    rows = []
    for preset in args.presets:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                rows.append(bench_preset(preset, args.grouping))
            except Exception as exc:  # a benchmark row records the failure and goes on
                rows.append({"preset": preset, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"})
        print(json.dumps(rows[-1]), flush=True)
    out = Path(args.out)
    write_json_atomic(out / "export_bench.json", {"machine": machine, "rows": rows})
    write_text_atomic(out / "export_bench.md", to_markdown(rows, machine))
    print(to_markdown(rows, machine))


if __name__ == "__main__":
    main()
