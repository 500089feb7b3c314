"""Farthest point sampling as an ONNX graph: which form runs fastest on ONNX Runtime CPU (issue 15).

Each form alone, (B, N, 3) -> (B, G) indices with G = N / 16 (the presets' 1024 -> 64), exported as the
project exports (dynamo, opset 18, dynamic batch and point count, constants folded) and timed on ONNX
Runtime CPU with 2 intra-op threads, interleaved round-robin in one process (median of the rounds, ratio
to the current form). Every form must give the numpy twin's indices (foundry_edge.data.grouping.exact)
in eager torch and in ONNX Runtime on random, duplicated-point and grid-tied clouds, or it is not timed.

    python benchmarks/graph_fps_forms.py [--points 1024,4096,16384] [--batches 1,8] [--rounds 7]

Writes benchmarks/results/graph_fps_forms.md. About 40 minutes on 2 cores at the defaults, mostly the exports
of the unrolled forms at 16384 points (1024 steps: 3 to 6 minutes each).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import io
import logging
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from foundry_edge.data.grouping import exact
from foundry_edge.models.grouping import farthest_point_sample, fps_step
from foundry_edge.models.scalable_grouping import fps_loop

OUT = Path(__file__).resolve().parent / "results" / "graph_fps_forms.md"
BLOCKED_MAX_BYTES = 256 << 20  # the blocked form's B*N*N*4 distance table, at most


def start_index(points: torch.Tensor) -> torch.Tensor:
    """(B, N, 3) -> (B, 1) the point farthest from the centroid (every form starts here)."""
    offset = points - points.mean(dim=1, keepdim=True)
    return (offset * offset).sum(-1).argmax(dim=1, keepdim=True)


def fps_packed(points, num_samples):
    """b1. A (3, B, N) table, GatherElements of the chosen point's 3 coordinates (argmax (B, 1) expanded to
    (3, B, 1) against a constant shape), one ReduceSum over the 3: Expand, GatherElements, Sub, Mul,
    ReduceSum, Min, ArgMax = 7 nodes per step."""
    planes = points.permute(2, 0, 1).contiguous()  # (3, B, N)
    farthest, min_dist, chosen = start_index(points), torch.full_like(planes[0], float("inf")), []
    for _ in range(num_samples):
        chosen.append(farthest)
        d = planes - planes.gather(2, farthest.expand(3, -1, -1))
        min_dist = torch.minimum(min_dist, (d * d).sum(0))
        farthest = min_dist.argmax(dim=1, keepdim=True)
    return torch.cat(chosen, dim=1)


def fps_packed_flat(points, num_samples):
    """b2. The (3, B, N) table, one Gather at argmax + b*N from its (3, B*N, 1) view: Add, Reshape, Gather,
    Sub, Mul, ReduceSum, Min, ArgMax = 8 nodes per step (and a Cast ONNX Runtime removes)."""
    batch, n = points.shape[:2]
    planes = points.permute(2, 0, 1).contiguous()  # (3, B, N)
    table, offsets = planes.reshape(3, -1, 1), torch.arange(batch, device=points.device) * n
    farthest, min_dist, chosen = start_index(points).squeeze(1), torch.full_like(planes[0], float("inf")), []
    for _ in range(num_samples):
        chosen.append(farthest)
        d = planes - table.index_select(1, farthest + offsets)
        min_dist = torch.minimum(min_dist, (d * d).sum(0))
        farthest = min_dist.argmax(dim=1)
    return torch.cat(chosen).view(num_samples, batch).t()


def fps_packed_inner(points, num_samples):
    """b3. As b1 on a (B, 3, N) table, min_dist (B, 1, N), the ReduceSum over the middle axis: 7 nodes."""
    planes = points.transpose(1, 2).contiguous()  # (B, 3, N)
    farthest = start_index(points).unsqueeze(1)  # (B, 1, 1)
    min_dist, chosen = torch.full_like(planes[:, :1], float("inf")), []
    for _ in range(num_samples):
        chosen.append(farthest)
        d = planes - planes.gather(2, farthest.expand(-1, 3, -1))
        min_dist = torch.minimum(min_dist, (d * d).sum(1, keepdim=True))
        farthest = min_dist.argmax(dim=2, keepdim=True)
    return torch.cat(chosen, dim=1).squeeze(-1)


def fps_packed_points(points, num_samples):
    """b4. Points kept (B, N, 3), the distance as (B, N, 3) - (B, 1, 3), the ReduceSum over the last axis:
    Expand, GatherElements, Sub, Mul, ReduceSum, Min, ArgMax = 7 nodes per step."""
    farthest = start_index(points).unsqueeze(-1)  # (B, 1, 1)
    min_dist, chosen = torch.full_like(points[..., :1], float("inf")), []  # (B, N, 1)
    for _ in range(num_samples):
        chosen.append(farthest)
        d = points - points.gather(1, farthest.expand(-1, -1, 3))
        min_dist = torch.minimum(min_dist, (d * d).sum(-1, keepdim=True))
        farthest = min_dist.argmax(dim=1, keepdim=True)
    return torch.cat(chosen, dim=1).squeeze(-1)


def fps_packed_split(points, num_samples):
    """b5. As b1, but the squares summed by Split + 2 Add (x, y, z in order) instead of ReduceSum, min_dist
    (1, B, N): Expand, GatherElements, Sub, Mul, Split, Add, Add, Min, ArgMax = 9 nodes per step."""
    planes = points.permute(2, 0, 1).contiguous()  # (3, B, N)
    farthest = start_index(points).unsqueeze(0)  # (1, B, 1)
    min_dist, chosen = torch.full_like(planes[:1], float("inf")), []
    for _ in range(num_samples):
        chosen.append(farthest)
        d = planes - planes.gather(2, farthest.expand(3, -1, -1))
        dx, dy, dz = (d * d).split(1)
        min_dist = torch.minimum(min_dist, dx + dy + dz)
        farthest = min_dist.argmax(dim=2, keepdim=True)
    return torch.cat(chosen, dim=2)[0]


def fps_blocked(points, num_samples):
    """d. All B*N*N squared distances at once (the planes' arithmetic, so bit-identical), then per step a
    Gather of the chosen row: Add, Reshape, Gather, Min, ArgMax = 5 nodes per step (and a removed Cast)."""
    batch, n = points.shape[:2]
    x, y, z = (p.unsqueeze(1) - p.unsqueeze(2) for p in points.unbind(-1))  # (B, N, N): row i is p - p[i]
    rows, offsets = (x * x + y * y + z * z).reshape(-1, n), torch.arange(batch, device=points.device) * n
    farthest, min_dist, chosen = start_index(points).squeeze(1), torch.full_like(points[..., 0], float("inf")), []
    for _ in range(num_samples):
        chosen.append(farthest)
        min_dist = torch.minimum(min_dist, rows.index_select(0, farthest + offsets))
        farthest = min_dist.argmax(dim=1)
    return torch.cat(chosen).view(num_samples, batch).t()


def looped(step, layout=lambda points: points):
    """c. One ONNX Loop (models/scalable_grouping.py's fps_loop) running `step` on `layout(points)`."""

    def fps(points, num_samples):
        min_dist = torch.full_like(points[..., 0], float("inf"))
        return fps_loop(step, layout(points), start_index(points), min_dist, num_samples)

    return fps


def step_points(points, farthest, min_dist):
    """The former Loop body of models/scalable_grouping.py: GatherElements (B, 1, 3), (B, N, 3) distances."""
    picked = torch.gather(points, 1, farthest.view(-1, 1, 1).expand(-1, 1, 3))
    d = points - picked
    min_dist = torch.minimum(min_dist, (d * d).sum(-1))
    return min_dist.argmax(dim=1, keepdim=True), min_dist


def step_packed(planes, farthest, min_dist):
    """A Loop body as b5 on the (3, B, N) table."""
    d = planes - planes.gather(2, farthest.view(1, -1, 1).expand(3, -1, -1))
    dx, dy, dz = (d * d).unbind(0)
    min_dist = torch.minimum(min_dist, dx + dy + dz)
    return min_dist.argmax(dim=1, keepdim=True), min_dist


FORMS = {
    "a. unrolled planes (current)": farthest_point_sample,
    "b1. unrolled packed (3, B, N), GatherElements": fps_packed,
    "b2. unrolled packed (3, B, N), flat Gather": fps_packed_flat,
    "b3. unrolled packed (B, 3, N), GatherElements": fps_packed_inner,
    "b4. unrolled packed (B, N, 3), GatherElements": fps_packed_points,
    "b5. unrolled packed (3, B, N), Split + 2 Add": fps_packed_split,
    "c1. Loop, (B, N, 3) body (former scalable_grouping)": looped(step_points),
    "c2. Loop, packed (3, B, N) body": looped(step_packed, lambda points: points.permute(2, 0, 1).contiguous()),
    "c3. Loop, planes body (scalable_grouping now)": looped(fps_step, lambda points: [p.clone() for p in points.unbind(-1)]),
    "d. blocked, N x N rows": fps_blocked,
}


class FpsModule(torch.nn.Module):
    def __init__(self, fps, num_samples: int):
        super().__init__()
        self.fps, self.num_samples = fps, num_samples

    def forward(self, points):
        return self.fps(points, self.num_samples)


def export(fps, num_samples: int, num_points: int, path: Path) -> None:
    """As export/torch2onnx.py: dynamo, opset 18, dynamic batch (traced at 2) and points, constants folded."""
    import onnx
    from torch.export import Dim

    from foundry_edge.export.torch2onnx import fold_constants

    dims = {0: Dim("batch", min=1, max=16), 1: Dim("num_points", min=num_samples, max=1 << 16)}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        program = torch.onnx.export(FpsModule(fps, num_samples).eval(), (torch.rand(2, num_points, 3),), None,
                                    dynamo=True, external_data=False, opset_version=18, input_names=["points"],
                                    output_names=["indices"], dynamic_shapes=(dims,), optimize=False)
    onnx.save(fold_constants(program.model), str(path))


def clouds(batch: int, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """(B, N, 3) float32 clouds: random; each point 4 times over; a coarse grid (ties everywhere)."""
    rng = np.random.default_rng(seed)
    random = rng.random((batch, n, 3), dtype=np.float32)
    duplicated = np.repeat(rng.random((batch, -(-n // 4), 3), dtype=np.float32), 4, axis=1)[:, :n]
    side = round(n ** (1 / 3)) + 1
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3).astype(np.float32) * 0.5
    tied = np.stack([grid[rng.permutation(len(grid))[:n]] for _ in range(batch)])
    return {"random": random, "duplicated": rng.permuted(duplicated, axis=1), "grid": tied}


def step_nodes(path: Path, num_samples: int) -> str:
    """Nodes per FPS step: the graph's count over G (Loop: the body's nodes)."""
    import onnx

    graph = onnx.load(str(path)).graph
    loops = [n for n in graph.node if n.op_type == "Loop"]
    if loops:
        return f"{len(onnx.helper.get_attribute_value(loops[0].attribute[0]).node)} (Loop body)"
    return f"{len(graph.node) / num_samples:.1f}"


def check(name: str, fps, session, num_samples: int, n: int) -> str:
    """'' when eager torch and ONNX Runtime give the numpy twin's indices on every cloud, else what differed."""
    for kind, cloud in clouds(3, n).items():
        want = exact.farthest_point_sample(cloud, num_samples)
        if not np.array_equal(fps(torch.from_numpy(cloud), num_samples).numpy(), want):
            return f"eager torch differs from the numpy twin on {kind} clouds"
        if not np.array_equal(session.run(None, {"points": cloud})[0], want):
            return f"ONNX Runtime differs from the numpy twin on {kind} clouds"
    return ""


def time_round(session, feed, reps: int) -> float:
    start = time.perf_counter()
    for _ in range(reps):
        session.run(None, feed)
    return (time.perf_counter() - start) / reps


def measure(n: int, batches: list[int], rounds: int, folder: Path, forms: dict) -> list[dict]:
    from foundry_edge.runtimes.ort import make_session

    g = n // 16
    rows, sessions = [], {}
    for name, fps in forms.items():
        path = folder / f"{name.split('.')[0]}-{n}.onnx"
        if fps is fps_blocked and n * n * 4 > BLOCKED_MAX_BYTES:  # too large even at batch 1
            rows.append(dict(form=name, n=n, g=g, error=f"skipped: B*N*N*4 = {n * n * 4 >> 20} MiB at B 1"))
            continue
        start = time.perf_counter()
        export(fps, g, n, path)
        exported = time.perf_counter() - start
        session = make_session(path, threads=2)
        error = check(name, fps, session, g, n)
        print(f"N {n}: {name}: exported in {exported:.0f} s, {step_nodes(path, g)} nodes/step {error or 'identical'}",
              flush=True)
        if error:
            rows.append(dict(form=name, n=n, g=g, error=error))
            continue
        sessions[name] = (session, step_nodes(path, g))
    for batch in batches:
        feed = {"points": clouds(batch, n, seed=1)["random"]}
        live = {name: s for name, s in sessions.items()
                if not (FORMS[name] is fps_blocked and batch * n * n * 4 > BLOCKED_MAX_BYTES)}
        for name in sessions.keys() - live.keys():
            rows.append(dict(form=name, n=n, g=g, batch=batch,
                             error=f"skipped: B*N*N*4 = {batch * n * n * 4 >> 20} MiB"))
        reps = {}
        for name, (session, _) in live.items():  # warm-up, and enough calls for ~50 ms a round
            time_round(session, feed, 2)
            reps[name] = max(1, round(0.05 / time_round(session, feed, 1)))
        times = collections.defaultdict(list)
        for _ in range(rounds):
            for name, (session, _) in live.items():
                times[name].append(time_round(session, feed, reps[name]))
        base = statistics.median(times[next(iter(live))])
        for name, (session, nodes) in live.items():
            ms = statistics.median(times[name]) * 1e3
            rows.append(dict(form=name, n=n, g=g, batch=batch, nodes=nodes, ms=ms, ratio=ms / (base * 1e3),
                             spread=(max(times[name]) - min(times[name])) * 1e3))
            print(f"  B {batch}: {name}: {ms:.2f} ms ({rows[-1]['ratio']:.2f}x current)", flush=True)
    return rows


def write(rows: list[dict], load_before, load_after, summary: str) -> None:
    import onnxruntime

    lines = ["# Farthest point sampling forms on ONNX Runtime CPU (issue 15)", "",
             f"Measured {dt.date.today()} by `benchmarks/graph_fps_forms.py`: ONNX Runtime {onnxruntime.__version__}, "
             f"torch {torch.__version__}, CPUExecutionProvider, 2 intra-op threads, ORT_ENABLE_ALL; "
             f"load {'/'.join(f'{x:.2f}' for x in load_before)} before, "
             f"{'/'.join(f'{x:.2f}' for x in load_after)} after. Each form is FPS alone, (B, N, 3) -> (B, G) "
             "with G = N / 16, exported dynamo opset 18 with dynamic batch and points; forms timed round-robin "
             "in one process, median of the rounds (spread = max - min of the rounds). Every timed form gave "
             "the numpy twin's indices (eager and ONNX Runtime, random / duplicated / grid-tied clouds, B 3).",
             "", "| N | G | B | form | nodes / step | median ms | spread ms | x current |",
             "|---:|---:|---:|---|---|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['n']} | {r['g']} | {r.get('batch', '-')} | {r['form']} | - | {r['error']} | | |")
        else:
            lines.append(f"| {r['n']} | {r['g']} | {r['batch']} | {r['form']} | {r['nodes']} | {r['ms']:.2f} | "
                         f"{r['spread']:.2f} | {r['ratio']:.2f} |")
    OUT.write_text("\n".join(lines + ["", summary, ""]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", default="1024,4096,16384")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--forms", default="", help="comma-separated name prefixes (default: all; the first "
                        "timed is the reference, so keep 'a.')")
    parser.add_argument("--summary", default="", help="the paragraph under the table")
    args = parser.parse_args()
    torch.set_num_threads(2)
    load_before, rows = os.getloadavg(), []
    with tempfile.TemporaryDirectory() as folder:
        for n in map(int, args.points.split(",")):
            forms = {k: v for k, v in FORMS.items() if not args.forms or k.startswith(tuple(args.forms.split(",")))}
            rows += measure(n, [int(b) for b in args.batches.split(",")], args.rounds, Path(folder), forms)
    write(rows, load_before, os.getloadavg(), args.summary)


if __name__ == "__main__":
    main()
