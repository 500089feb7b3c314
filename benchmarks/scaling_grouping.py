"""Grouping of large scenes: time, peak memory and FPS coverage against exact FPS.

For each (N, G): the host scalable grouping (foundry_edge.data.grouping.scalable) and, with --graph, the same
grouping exported to ONNX and run on ONNX Runtime CPU, each timed in a fresh process; coverage = max
over points of the distance to the nearest centre, as a ratio to exact FPS over all N points
(fpsample's vanilla FPS from the same start point). Writes scaling_grouping.json and .md.

    python benchmarks/scaling_grouping.py --out benchmarks/results --graph
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CASES = ((1 << 16, 1024), (1 << 16, 4096), (1 << 18, 4096), (1 << 18, 8192))


def peak_bytes() -> int:
    with open("/proc/self/status") as fh:
        return int(next(line for line in fh if line.startswith("VmHWM:")).split()[1]) * 1024


def host_worker(n: int, g: int) -> dict:
    import fpsample

    from foundry_edge.data.grouping import scalable as sg
    from foundry_edge.data.transforms import normalize
    from foundry_edge.data.synthetic import synthetic_scene

    points = normalize(synthetic_scene(n, seed=0))
    sg.group_scene(points[:4096], 16, 32)  # warm-up: imports, thread pools
    start = time.perf_counter()
    _, centers = sg.group_scene(points, g, 32)
    seconds = time.perf_counter() - start
    peak = peak_bytes()
    first = int(np.argmax(((points - points.mean(axis=0)) ** 2).sum(axis=1)))
    exact = points[np.asarray(fpsample.fps_sampling(points, g, start_idx=first))]
    return dict(host_s=seconds, host_peak_bytes=peak, coverage=sg.coverage(points, centers),
                exact_coverage=sg.coverage(points, exact))


def graph_worker(n: int, g: int, onnx_path: str) -> dict:
    import onnxruntime as ort

    from foundry_edge.data.transforms import normalize
    from foundry_edge.data.synthetic import synthetic_scene

    points = normalize(synthetic_scene(n, seed=0))[None]
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    start = time.perf_counter()
    session.run(None, {"points": points})
    return dict(graph_s=time.perf_counter() - start, graph_peak_bytes=peak_bytes())


def export_graph(g: int, path: Path, knn_chunk: int) -> None:
    import torch

    from foundry_edge.fileio import atomic_path
    from foundry_edge.models.scalable_grouping import ScalableGrouping

    grouping = ScalableGrouping(g, 32, fps_candidates=4, knn_chunk=knn_chunk).eval()
    example = torch.rand(1, 4 * 4 * g, 3)
    with atomic_path(path) as tmp:
        torch.onnx.export(grouping, (example,), str(tmp), dynamo=True, external_data=False, opset_version=18,
                          input_names=["points"], output_names=["neighbourhoods", "centers"],
                          dynamic_shapes=({1: "num_points"},))


def spawn(*args: str) -> dict:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", choices=("host", "graph"), help=argparse.SUPPRESS)
    parser.add_argument("--points", type=int)
    parser.add_argument("--groups", type=int)
    parser.add_argument("--onnx")
    parser.add_argument("--graph", action="store_true", help="also run the exported graph grouping (slow)")
    parser.add_argument("--knn-chunk", type=int, default=512)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    if args.worker:
        result = (host_worker(args.points, args.groups) if args.worker == "host"
                  else graph_worker(args.points, args.groups, args.onnx))
        return print(json.dumps(result))
    from foundry_edge.fileio import write_json_atomic, write_text_atomic

    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for n, g in CASES:
        row = dict(num_points=n, num_groups=g, **spawn("--worker", "host", "--points", str(n), "--groups", str(g)))
        if args.graph:
            path = args.out / f"grouping-{g}.onnx"
            if not path.exists():
                export_graph(g, path, args.knn_chunk)
            row.update(spawn("--worker", "graph", "--points", str(n), "--groups", str(g), "--onnx", str(path)))
        print(json.dumps(row), flush=True)
        rows.append(row)
    write_json_atomic(args.out / "scaling_grouping.json", rows)
    lines = ["| N | G | host s | host peak MiB | graph (ORT) s | graph peak MiB | coverage / exact FPS |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        graph = (f"{r['graph_s']:.2f} | {r['graph_peak_bytes'] / 2**20:.0f}" if "graph_s" in r else "- | -")
        lines.append(f"| {r['num_points']} | {r['num_groups']} | {r.get('host_s', float('nan')):.2f} | "
                     f"{r.get('host_peak_bytes', 0) / 2**20:.0f} | {graph} | "
                     f"{r.get('coverage', float('nan')) / r.get('exact_coverage', float('nan')):.2f} |")
    write_text_atomic(args.out / "scaling_grouping.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
