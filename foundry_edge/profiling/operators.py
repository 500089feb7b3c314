"""Where the time goes: ONNX Runtime's own profiler (SessionOptions.enable_profiling), summed by
operator type, so a missed target names its FPS loop, its attention MatMuls or its TopK."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path


def profile_operators(onnx_path: str, clouds, threads: int, runs: int = 10) -> list[dict]:
    """(B, N, 3) clouds through `runs` timed runs of an ONNX model on the CPU provider ->
    [{"op_type", "ms_per_run", "percent", "nodes"}], slowest first; the first (warm-up) run is dropped."""
    from foundry_edge.runtimes.ort import make_session

    session = make_session(onnx_path, threads=threads, profiling=True)
    feed = {session.get_inputs()[0].name: clouds}
    for _ in range(runs + 1):
        session.run(None, feed)
    trace = Path(session.end_profiling())
    try:
        events = json.loads(trace.read_text(encoding="utf-8"))
    finally:
        trace.unlink(missing_ok=True)
    return summarize_trace(events, runs)


def summarize_trace(events: list[dict], runs: int) -> list[dict]:
    """Chrome-trace node events -> per operator type mean ms per run and share of the node time.

    Node events are named "<node>_kernel_time" with args.op_name; the first run's events (warm-up)
    are skipped by counting each node's calls.
    """
    seen: dict[str, int] = defaultdict(int)
    total_us: dict[str, float] = defaultdict(float)
    nodes: dict[str, set] = defaultdict(set)
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        name, op_type = event["name"], event.get("args", {}).get("op_name", "?")
        seen[name] += 1
        if seen[name] == 1:  # the warm-up run
            continue
        total_us[op_type] += event.get("dur", 0)
        nodes[op_type].add(name)
    grand = sum(total_us.values()) or 1.0
    rows = [{"op_type": op, "ms_per_run": us / runs / 1e3, "percent": 100 * us / grand, "nodes": len(nodes[op])}
            for op, us in total_us.items()]
    return sorted(rows, key=lambda row: row["ms_per_run"], reverse=True)
