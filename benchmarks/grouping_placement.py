"""Measure where grouping should run, for `--grouping auto`: each model profiled end to end with the CLI
(`foundry-edge profile --grouping graph` and `--grouping host`, the host's preprocessing inside the timed
call), at each point count and batch; writes the table `--grouping auto` reads
(foundry_edge/data/grouping/placement.json) and a readable copy (benchmarks/results/grouping_placement.md).

    python benchmarks/grouping_placement.py [--points 1024,4096] [--batches 1,8] [--duration 3]

Run it on a quiet machine (load below 1); it takes about 10 minutes on 2 cores at the defaults.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "foundry_edge" / "data" / "grouping" / "placement.json"
READABLE = ROOT / "benchmarks" / "results" / "grouping_placement.md"


def profile(grouping: str, args, out: Path) -> dict:
    """One CLI profile run -> its report.json."""
    command = [sys.executable, "-m", "foundry_edge", "profile", "--teacher", args.teacher, "--runtime", args.runtime,
               "--points", args.points, "--batches", args.batches, "--duration", str(args.duration),
               "--grouping", grouping, "-o", str(out)]
    for student in args.students.split(","):
        command += ["--student", student]
    subprocess.run(command, check=True)
    return json.loads((out / "report.json").read_text())


def rows_of(graph: dict, host: dict, runtime: str) -> list[dict]:
    times = {}
    for grouping, report in (("graph", graph), ("host", host)):
        for m in report["measurements"]:
            if m.get("status") == "ok" and m["runtime"] == runtime:
                times.setdefault((m["model"], m["points"], m["batch"]), {})[grouping] = m["latency_ms"]["median"]
    return [{"runtime": runtime, "model": model, "points": points, "batch": batch,
             "graph_ms": round(t["graph"], 3), "host_ms": round(t["host"], 3)}
            for (model, points, batch), t in sorted(times.items()) if len(t) == 2]


def readable(table: dict) -> str:
    lines = [f"# Where grouping runs: graph or host ({table['runtime_note']})", "",
             f"Measured {table['measured']} by `{table['source']}` on {table['machine']} (load {table['load']}); "
             "median end-to-end ms of `runtime.infer(points)` (the host's grouping inside the call). "
             "`--grouping auto` picks, per runtime, the placement with the lower sum at the nearest measured point "
             "count.", "", "| model | N | B | graph ms | host ms | faster |", "|---|---:|---:|---:|---:|---|"]
    lines += [f"| {r['model']} | {r['points']} | {r['batch']} | {r['graph_ms']:.2f} | {r['host_ms']:.2f} | "
              f"{'host' if r['host_ms'] < r['graph_ms'] else 'graph'} |" for r in table["rows"]]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", default="foundry-edge16")
    parser.add_argument("--teacher", default="pointjepa-vits")
    parser.add_argument("--runtime", default="ort-cpu")
    parser.add_argument("--points", default="1024,4096")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--reports", type=Path, help="also keep both profiles' report.md/.json in this folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        graph = profile("graph", args, Path(tmp) / "graph")
        host = profile("host", args, Path(tmp) / "host")
        for grouping in ("graph", "host") if args.reports else ():
            (args.reports / grouping).mkdir(parents=True, exist_ok=True)
            for name in ("report.md", "report.json"):
                (args.reports / grouping / name).write_bytes((Path(tmp) / grouping / name).read_bytes())
    machine = graph["machine"]
    table = {"source": "benchmarks/grouping_placement.py", "measured": dt.date.today().isoformat(),
             "machine": f"{machine.get('cpu', 'unknown CPU')}, {graph['settings']['threads']} threads",
             "load": "/".join(f"{v:.1f}" for v in os.getloadavg()),
             "runtime_note": f"{args.runtime}, exact grouping",
             "host_grouping": "compiled" if importlib.util.find_spec("numba") else "numpy",  # auto checks it
             "rows": rows_of(graph, host, args.runtime)}
    TABLE.write_text(json.dumps(table, indent=1) + "\n")
    READABLE.write_text(readable(table))
    print(readable(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
