"""The teacher against foundry-s16 and foundry-edge16 on PyTorch CUDA: latency, peak memory, large scenes.

    python benchmarks/gpu_student_vs_teacher.py [--out benchmarks/results/gpu]     # any CUDA machine
    python benchmarks/gpu_student_vs_teacher.py --dry-run --out /tmp/gpu-dry      # CPU, tiny sizes

Needs only PyTorch (no TensorRT, no ONNX Runtime). Two parts, each row in its own try so a failure
(out of memory, a graph that cannot be captured) is a row with an `error`, never a crash:

1. Latency at 1024, 16384 and 262144 points, batch 1, in eval mode: eager, and replayed from a CUDA
   graph (torch.cuda.CUDAGraph, static input). Grouping is in the model (exact FPS + kNN) up to 16384
   points; at 262144 the models use scalable grouping (octree candidates, chunked kNN) with G = N/64,
   as the README's large-scene figures do. Timed with CUDA events after a warm-up; the speed-up is the
   ratio of medians measured in this one run. Peak device memory from torch.cuda.max_memory_allocated,
   reset per row.
2. The paper's large-scene claim (a ~300k-point scene on a 6 GB GPU: teacher out of memory, Foundry
   about 4 GB): the process is capped at 6 GiB with torch.cuda.set_per_process_memory_fraction and each
   model runs one scene of growing size (scalable grouping, G = N/64) until it runs out of memory.

Writes report.json and report.md under --out. The whole run takes under 8 minutes on a recent GPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from foundry_edge.models import create_model
from foundry_edge.data.synthetic import synthetic_scene

MODELS = ("pointjepa-vits", "foundry-s16", "foundry-edge16")
POINTS = (1024, 16384, 262144)
SCENE_POINTS = (131072, 196608, 262144, 327680, 393216, 524288, 786432)
CAP_GIB = 6.0
DRY = {"points": (256, 512), "scene_points": (1024, 2048), "overrides": dict(embed_dim=48, depth=2, num_heads=3,
                                                                             tokenizer_widths=(16, 32, 64))}


def build(preset: str, num_points: int, large: bool, device, dry: bool):
    """A preset sized for `num_points`: exact grouping with G = N/16, or scalable with G = N/64."""
    overrides = dict(DRY["overrides"]) if dry else {}
    if preset != "pointjepa-vits" and dry:
        overrides["output_dim"] = overrides["embed_dim"]
    groups = num_points // 64 if large else num_points // 16
    overrides.update(num_points=num_points, num_groups=groups, grouping="scalable" if large else "exact")
    if preset.startswith("foundry"):
        overrides["num_supertokens"] = min(16, groups)
    return create_model(preset, **overrides).to(device).eval()


def clouds(num_points: int, device) -> torch.Tensor:
    """(1, N, 3) a synthetic indoor scene: uneven density, objects and outliers."""
    return torch.from_numpy(synthetic_scene(num_points, seed=0))[None].to(device)


def time_eager(model, points, iterations: int, device) -> list[float]:
    """Per-iteration milliseconds, CUDA events on a GPU, perf_counter on the CPU."""
    times = []
    with torch.inference_mode():
        for _ in range(2):
            model(points)
        for _ in range(iterations):
            times.append(_timed(lambda: model(points), device))
    return times


def time_cuda_graph(model, points, iterations: int) -> list[float]:
    """Capture one forward in a CUDA graph (static input and outputs), then time its replays."""
    static = points.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.inference_mode():
        with torch.cuda.stream(stream):
            for _ in range(3):  # warm up on a side stream, as torch's CUDA graph notes ask
                model(static)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            model(static)
        graph.replay()
        return [_timed(graph.replay, torch.device("cuda")) for _ in range(iterations)]


def _timed(fn, device) -> float:
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    began = time.perf_counter()
    fn()
    return (time.perf_counter() - began) * 1e3


def latency_rows(device, dry: bool, iterations: int) -> list[dict]:
    rows = []
    for n in (DRY["points"] if dry else POINTS):
        large = n > 16384
        for preset in MODELS:
            for mode in ("eager", "cuda-graph"):
                if mode == "cuda-graph" and device.type != "cuda":
                    continue
                rows.append(_measure(preset, n, large, mode, device, dry, iterations))
    return rows


def _measure(preset, n, large, mode, device, dry, iterations) -> dict:
    row = {"model": preset, "points": n, "grouping": "scalable, G = N/64" if large else "exact, G = N/16",
           "mode": mode}
    try:
        _reset_peak(device)
        model = build(preset, n, large, device, dry)
        points = clouds(n, device)
        times = time_eager(model, points, iterations, device) if mode == "eager" else \
            time_cuda_graph(model, points, iterations)
        row.update(median_ms=statistics.median(times), min_ms=min(times), iterations=len(times),
                   cv=statistics.pstdev(times) / statistics.mean(times), peak_mib=_peak_mib(device))
    except Exception as exc:  # a benchmark row records any failure (OOM, capture) and the run goes on
        row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    finally:
        _release(device)
    return row


def scene_rows(device, dry: bool) -> list[dict]:
    """Each model on growing scenes under the 6 GiB cap, until the first out-of-memory."""
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, CAP_GIB * (1 << 30) / total), device)
    rows = []
    for preset in MODELS:
        for n in (DRY["scene_points"] if dry else SCENE_POINTS):
            row = _measure(preset, n, True, "eager", device, dry, iterations=1 if dry else 3)
            row["cap_gib"] = CAP_GIB if device.type == "cuda" else None
            rows.append(row)
            if "error" in row:
                break
    return rows


def _reset_peak(device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / (1 << 20) if device.type == "cuda" else None


def _release(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def speedups(rows: list[dict]) -> list[dict]:
    """Teacher median / student median, per point count and mode, from this run's rows."""
    by = {(r["model"], r["points"], r["mode"]): r for r in rows if "median_ms" in r}
    out = []
    for (model, n, mode), r in by.items():
        teacher = by.get(("pointjepa-vits", n, mode))
        if model != "pointjepa-vits" and teacher:
            out.append({"student": model, "points": n, "mode": mode, "speedup": teacher["median_ms"] / r["median_ms"]})
    return out


def markdown(report: dict) -> str:
    lines = [f"# PyTorch {report['torch']} on {report['device']}", "",
             "| model | points | grouping | mode | median ms | min ms | CV | peak MiB | error |",
             "|---|---:|---|---|---:|---:|---:|---:|---|"]
    fmt = lambda v, f: "-" if v is None else format(v, f)
    for r in report["latency"]:
        lines.append(f"| {r['model']} | {r['points']} | {r['grouping']} | {r['mode']} | {fmt(r.get('median_ms'), '.2f')} | "
                     f"{fmt(r.get('min_ms'), '.2f')} | {fmt(r.get('cv'), '.2f')} | {fmt(r.get('peak_mib'), '.0f')} | "
                     f"{r.get('error', '')} |")
    lines += ["", "| student | points | mode | speed-up over the teacher |", "|---|---:|---|---:|"]
    lines += [f"| {s['student']} | {s['points']} | {s['mode']} | {s['speedup']:.2f}x |" for s in report["speedups"]]
    lines += ["", f"Large scenes under a {CAP_GIB:g} GiB cap (scalable grouping, G = N/64):", "",
              "| model | points | median ms | peak MiB | result |", "|---|---:|---:|---:|---|"]
    for r in report["scenes"]:
        lines.append(f"| {r['model']} | {r['points']} | {fmt(r.get('median_ms'), '.1f')} | {fmt(r.get('peak_mib'), '.0f')} | "
                     f"{r.get('error', 'ok')} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu"))
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--dry-run", action="store_true", help="On the CPU at tiny sizes: checks the script, times nothing real.")
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA device: run on a GPU machine, or pass --dry-run to check the script on the CPU")
    device = torch.device("cpu" if args.dry_run else "cuda")
    started = time.perf_counter()
    latency = latency_rows(device, args.dry_run, 2 if args.dry_run else args.iterations)
    report = {"torch": torch.__version__, "dry_run": args.dry_run, "host": platform.node(),
              "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (dry run)",
              "latency": latency, "speedups": speedups(latency), "scenes": scene_rows(device, args.dry_run)}
    report["seconds"] = round(time.perf_counter() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "report.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
