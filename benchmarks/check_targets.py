"""Check the issue's CPU targets against a profile report, and write the README's table and figure.

    python benchmarks/check_targets.py runs/cpu_student_vs_teacher/n*/report.json --out benchmarks/results

Targets (ONNX Runtime CPU, same run): foundry-s16 vs the teacher at 1024/4096/16384 points reaches
>= 90% of the FLOPs ratio as speed-up; foundry-edge16 is >= 5x faster than the teacher at 1024 points;
each student in ONNX Runtime is >= 1.5x faster than in PyTorch eager; at batch 8 and 1024 points
foundry-s16 reaches >= 75% and foundry-edge16 >= 60% of the machine's fp32 matmul peak. A missed
target is listed with the operators that take its time (from the report's ONNX Runtime profile).
Writes cpu_targets.md (the tables), cpu_latency.png and cpu_speedup.png (the report's own plots).
"""

from __future__ import annotations

import argparse
import base64
import json
from pathlib import Path

TEACHER, S16, EDGE = "pointjepa-vits", "foundry-s16", "foundry-edge16"


def find(report: dict, model: str, runtime: str, points: int, batch: int) -> dict | None:
    return next((m for m in report["measurements"] if (m["model"], m["runtime"], m["points"], m["batch"])
                 == (model, runtime, points, batch) and m["status"] == "ok"), None)


def comparison(report: dict, student: str, points: int, batch: int) -> dict | None:
    return next((c for c in report["comparisons"] if (c["student"], c["runtime"], c["points"], c["batch"])
                 == (student, "ort-cpu", points, batch)), None)


def top_operators(report: dict, model: str, points: int, batch: int, n: int = 3) -> str:
    row = next((r for r in report["operators"] if (r["model"], r["points"], r["batch"]) == (model, points, batch)
                and r.get("status") == "ok"), None)
    if row is None:
        return "no operator profile"
    top = ", ".join(f"{op['op_type']} {op['percent']:.0f}%" for op in row["operators"][:n])
    return f"{top}; unrolled FPS ~{fps_share(report, row):.0f}%"


def fps_share(report: dict, row: dict) -> float:
    """% of the time in operator types with at least one node per group centre: the unrolled FPS loop
    (13 nodes per centre: GatherElements, Sub, Mul, Add, Min, ArgMax), plus the kNN's TopK."""
    groups = next(m["num_groups"] for m in report["models"] if (m["model"], m["points"]) == (row["model"], row["points"]))
    return sum(op["percent"] for op in row["operators"] if op["nodes"] >= groups - 1 or op["op_type"] == "TopK")


def checks(report: dict) -> list[dict]:
    """One row per (target, case): measured value, needed value, met, and where the time goes."""
    rows = []
    for points in (1024, 4096, 16384):
        for batch in (1, 8):
            c = comparison(report, S16, points, batch)
            value = c and c["flops_ratio"] and c["speedup"] / c["flops_ratio"]
            rows.append(dict(target="s16 speed-up >= 90% of FLOPs ratio", case=f"N={points} B={batch}",
                             value=value, need=0.9, unit="share", model=S16, points=points, batch=batch))
    for batch in (1, 8):
        c = comparison(report, EDGE, 1024, batch)
        rows.append(dict(target="edge16 >= 5x faster than teacher", case=f"N=1024 B={batch}",
                         value=c and c["speedup"], need=5.0, unit="x", model=EDGE, points=1024, batch=batch))
    for model in (S16, EDGE):
        for batch in (1, 8):
            ort, eager = find(report, model, "ort-cpu", 1024, batch), find(report, model, "torch", 1024, batch)
            value = ort and eager and eager["latency_ms"]["median"] / ort["latency_ms"]["median"]
            rows.append(dict(target=f"{model} ORT >= 1.5x eager", case=f"N=1024 B={batch}", value=value, need=1.5,
                             unit="x", model=model, points=1024, batch=batch))
    for model, need in ((S16, 75.0), (EDGE, 60.0)):
        m = find(report, model, "ort-cpu", 1024, 8)
        rows.append(dict(target=f"{model} % of matmul peak", case="N=1024 B=8", value=m and m["percent_of_peak"],
                         need=need, unit="%", model=model, points=1024, batch=8))
    for row in rows:
        row["met"] = row["value"] is not None and row["value"] >= row["need"]
        row["time_goes"] = "" if row["met"] else top_operators(report, row["model"], row["points"], row["batch"])
    return rows


def latency_table(report: dict) -> list[str]:
    points = sorted({m["points"] for m in report["measurements"]})
    header = "| model | runtime | " + " | ".join(f"{n} B1 | {n} B8" for n in points) + " |"
    lines = [header, "|---|---|" + "---:|" * (2 * len(points))]
    for model in (TEACHER, S16, EDGE):
        for runtime in ("ort-cpu", "torch"):
            cells = []
            for n in points:
                for batch in (1, 8):
                    m = find(report, model, runtime, n, batch)
                    cells.append(f"{m['latency_ms']['median']:.1f}" if m else "-")
            lines.append(f"| {model} | {runtime} | " + " | ".join(cells) + " |")
    return lines


def show(value, unit: str) -> str:
    """A share of the FLOPs ratio (0.9 -> 90%), a factor (1.5x) or a percentage already in % (75%)."""
    if value is None:
        return "not measured"
    return {"share": f"{100 * value:.0f}%", "x": f"{value:.2f}x", "%": f"{value:.0f}%"}[unit]


def markdown(report: dict, rows: list[dict]) -> str:
    peak = report["machine"]["matmul_peak"].get("gflops")
    load = report["machine"].get("load_average")
    lines = [f"Median ms per batch, {report['machine']['cpu']}, {report['settings']['threads']} threads, "
             f"fp32 matmul peak {peak:.0f} GFLOP/s, {report['created']}"
             + (f", load average {load[1]:.1f} at the end" if load else "") + ":", ""] + latency_table(report)
    lines += ["", "| target | case | measured | needed | met | where the time goes (ORT, top operators) |",
              "|---|---|---:|---:|---|---|"]
    for r in rows:
        lines.append(f"| {r['target']} | {r['case']} | {show(r['value'], r['unit'])} | {show(r['need'], r['unit'])} | "
                     f"{'yes' if r['met'] else 'NO'} | {r['time_goes']} |")
    return "\n".join(lines) + "\n"


def merge(reports: list[dict]) -> dict:
    """Several runs (e.g. one per point count) as one report: rows concatenated, machine of the first."""
    merged = dict(reports[0])
    for key in ("models", "measurements", "comparisons", "operators", "notes"):
        merged[key] = [row for report in reports for row in report[key]]
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", type=Path, nargs="+", help="report.json files (one per point count is fine)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    from foundry_edge.fileio import write_bytes_atomic, write_text_atomic
    from foundry_edge.profiling.html import plots

    report = merge([json.loads(path.read_text(encoding="utf-8")) for path in args.reports])
    rows = checks(report)
    text = markdown(report, rows)
    write_text_atomic(args.out / "cpu_targets.md", text)
    figures = dict(plots(report))
    for title, name in (("Latency vs points", "cpu_latency.png"), ("Speed-up per point count", "cpu_speedup.png")):
        if title in figures:
            write_bytes_atomic(args.out / name, base64.b64decode(figures[title]))
    print(text)
    print(f"{sum(r['met'] for r in rows)} of {len(rows)} targets met")


if __name__ == "__main__":
    main()
