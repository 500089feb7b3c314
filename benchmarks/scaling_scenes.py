"""Scaling benchmark: teacher vs students from 2^10 to 2^18 points on ONNX Runtime CPU.

Every model is exported once with host grouping (inputs `neighbourhoods` (B, G, K, 3) and `centers`
(B, G, 3), G dynamic); every (model, size) is then measured in a fresh worker process that imports no
torch, so its peak RSS is the runtime's own. All models see the same scalable host grouping
(foundry_edge.data.grouping.scalable) of the same synthetic scene, G = N / points_per_group groups of K = 32.
Rows: grouping time, ORT latency (median of --iters after a warm-up), peak RSS, FLOPs (torch's
FlopCounterMode on the meta device), the config's memory estimate. A worker that fails or runs out of
time or memory becomes a row with an `error` field. Growth exponents are log-log least-squares slopes.

    python benchmarks/scaling_scenes.py --out benchmarks/results            # all sizes (long)
    python benchmarks/scaling_scenes.py --sizes 10,12 --models foundry-edge16 --out /tmp/scaling
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MODELS = ("pointjepa-vits", "foundry-s16", "foundry-gate16", "foundry-edge16")
LARGE = 1 << 16  # the scene range: fixed costs no longer dominate


def scene_overrides(num_points: int, points_per_group: int, group_size: int) -> dict:
    return dict(num_points=num_points, num_groups=max(16, num_points // points_per_group), group_size=group_size,
                grouping="scalable")


# -- parent: export, spawn workers, summarise ---------------------------------------------------
def export_host_grouping(preset: str, path: Path, group_size: int) -> None:
    """ONNX of forward_grouped with a dynamic batch and group count (torch.onnx dynamo, opset 18)."""
    import torch
    from foundry_edge.fileio import atomic_path
    from foundry_edge.models import create_model

    model = create_model(preset, **scene_overrides(4096, 64, group_size))

    class Grouped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, neighbourhoods, centers):
            return self.model.forward_grouped(neighbourhoods, centers)["tokens"]

    example = (torch.randn(2, 64, group_size, 3) * 0.05, torch.randn(2, 64, 3))
    dims = {0: "batch", 1: "groups"}
    with atomic_path(path) as tmp:
        torch.onnx.export(Grouped().eval(), example, str(tmp), dynamo=True, external_data=False, opset_version=18,
                          input_names=["neighbourhoods", "centers"], output_names=["tokens"],
                          dynamic_shapes=(dims, dims))


def model_flops(preset: str, overrides: dict) -> int:
    """FLOPs of forward_grouped at this size, counted on the meta device (nothing is computed)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from foundry_edge.models import get_config
    from foundry_edge.models.model import PointModel

    config = get_config(preset, **overrides)
    with torch.device("meta"):
        model = PointModel(config).eval()
        neighbourhoods = torch.empty(1, config.num_groups, config.group_size, 3)
        centers = torch.empty(1, config.num_groups, 3)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.forward_grouped(neighbourhoods, centers)
    return int(counter.get_total_flops())


def run_worker(args, preset: str, onnx_path: Path, log2: int) -> dict:
    from foundry_edge.models import get_config
    from foundry_edge.models.memory import estimate_peak_bytes

    overrides = scene_overrides(1 << log2, args.points_per_group, args.group_size)
    row = dict(model=preset, num_points=1 << log2, num_groups=overrides["num_groups"], group_size=args.group_size,
               flops=model_flops(preset, overrides),
               estimate_bytes=estimate_peak_bytes(get_config(preset, **overrides), grouping="host"))
    cmd = [sys.executable, __file__, "--worker", str(onnx_path), "--points", str(1 << log2),
           "--groups", str(overrides["num_groups"]), "--group-size", str(args.group_size), "--iters", str(args.iters)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
        if done.returncode != 0:
            row["error"] = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        else:
            row.update(json.loads(done.stdout.strip().splitlines()[-1]))
    except subprocess.TimeoutExpired:
        row["error"] = f"timed out after {args.timeout} s"
    return row


def growth_exponent(rows: list, model: str, key: str, min_points: int = 0) -> float | None:
    """Slope of log(key) against log(num_points) over N >= min_points: 1 is linear, 2 quadratic."""
    pts = [(r["num_points"], r[key]) for r in rows
           if r["model"] == model and r.get(key) and r["num_points"] >= min_points]
    if len(pts) < 2:
        return None
    x, y = np.log(np.array(pts, dtype=float)).T
    return float(np.polyfit(x, y, 1)[0])


def summarise(rows: list, out: Path) -> None:
    from foundry_edge.fileio import write_json_atomic, write_text_atomic

    models = sorted({r["model"] for r in rows}, key=lambda m: MODELS.index(m) if m in MODELS else 99)
    summary = {m: {"latency_exponent": growth_exponent(rows, m, "total_s"),
                   "network_exponent": growth_exponent(rows, m, "ort_s"),
                   "memory_exponent": growth_exponent(rows, m, "peak_rss_bytes"),
                   "latency_exponent_large": growth_exponent(rows, m, "total_s", LARGE),
                   "network_exponent_large": growth_exponent(rows, m, "ort_s", LARGE),
                   "memory_exponent_large": growth_exponent(rows, m, "peak_rss_bytes", LARGE)} for m in models}
    write_json_atomic(out / "scaling.json", {"rows": rows, "exponents": summary})
    lines = ["| model | N | G | grouping s | network s | total s | peak RSS MiB | estimate MiB | GFLOPs |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['num_points']} | {r['num_groups']} | error: {r['error']} ||||||")
            continue
        lines.append(f"| {r['model']} | {r['num_points']} | {r['num_groups']} | {r['grouping_s']:.3f} | {r['ort_s']:.3f} "
                     f"| {r['total_s']:.3f} | {r['peak_rss_bytes'] / 2**20:.0f} | {r['estimate_bytes'] / 2**20:.0f} "
                     f"| {r['flops'] / 1e9:.1f} |")
    lines += ["", f"Growth exponents, all sizes / N >= {LARGE}:", "",
              "| model | latency (grouping + network) | network | peak memory |", "|---|---|---|---|"]
    fmt = lambda e, key: " / ".join("-" if e[k] is None else f"{e[k]:.2f}" for k in (key, key + "_large"))  # noqa: E731
    for m, e in summary.items():
        lines.append(f"| {m} | {fmt(e, 'latency_exponent')} | {fmt(e, 'network_exponent')} | "
                     f"{fmt(e, 'memory_exponent')} |")
    write_text_atomic(out / "scaling.md", "\n".join(lines) + "\n")
    plot(rows, models, out / "scaling.png")


def plot(rows: list, models: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from foundry_edge.fileio import atomic_path

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for m in models:
        ok = [r for r in rows if r["model"] == m and "error" not in r]
        n = [r["num_points"] for r in ok]
        axes[0].loglog(n, [r["total_s"] for r in ok], "o-", label=m, base=2)
        axes[1].loglog(n, [r["peak_rss_bytes"] / 2**30 for r in ok], "o-", label=m, base=2)
    axes[0].set(xlabel="points N", ylabel="latency s (grouping + ORT)", title="latency")
    axes[1].axhline(4, color="grey", ls="--", lw=1)
    axes[1].set(xlabel="points N", ylabel="peak RSS GiB", title="peak memory (4 GiB budget dashed)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)


# -- worker: one model at one size, in a process without torch ----------------------------------
def worker(args) -> None:
    import onnxruntime as ort

    from foundry_edge.data.grouping import scalable as scene_grouping
    from foundry_edge.data.transforms import normalize
    from foundry_edge.data.synthetic import synthetic_scene

    def peak() -> int:
        """VmHWM of this process (ru_maxrss would keep the parent's peak across fork + exec)."""
        with open("/proc/self/status") as fh:
            line = next(line for line in fh if line.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024

    points = synthetic_scene(args.points, seed=0)
    scene_grouping.group_scene(points[:4096], 16, args.group_size)  # warm-up: imports, thread pools
    start = time.perf_counter()
    neighbourhoods, centers = scene_grouping.group_scene(normalize(points), args.groups, args.group_size)
    grouping_s = time.perf_counter() - start
    after_grouping = peak()
    session = ort.InferenceSession(args.worker, providers=["CPUExecutionProvider"])
    after_session = peak()
    feed = {"neighbourhoods": neighbourhoods[None], "centers": centers[None]}
    session.run(None, feed)  # warm-up
    times = []
    for _ in range(args.iters):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    ort_s = float(np.median(times))
    print(json.dumps(dict(grouping_s=grouping_s, ort_s=ort_s, total_s=grouping_s + ort_s, peak_rss_bytes=peak(),
                          peak_after_grouping=after_grouping, peak_after_session=after_session,
                          threads=os.cpu_count(), onnxruntime=ort.__version__)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--points", type=int)
    parser.add_argument("--groups", type=int)
    parser.add_argument("--sizes", default="10,12,14,16,17,18", help="log2 of the point counts")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--points-per-group", type=int, default=64)
    parser.add_argument("--group-size", type=int, default=32)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--timeout", type=int, default=600, help="seconds per worker")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--summarise", action="store_true", help="only rewrite the table and plot from scaling.json")
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.summarise:
        return summarise(json.loads((args.out / "scaling.json").read_text())["rows"], args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for preset in args.models.split(","):
        onnx_path = args.out / f"{preset}.host.onnx"
        if not onnx_path.exists():
            print(f"export {preset} -> {onnx_path}", flush=True)
            export_host_grouping(preset, onnx_path, args.group_size)
        for log2 in (int(s) for s in args.sizes.split(",")):
            row = run_worker(args, preset, onnx_path, log2)
            print(json.dumps(row), flush=True)
            rows.append(row)
            summarise(rows, args.out)


if __name__ == "__main__":
    main()
