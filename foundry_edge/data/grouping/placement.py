"""`--grouping auto`: where grouping runs (in the graph or on the host) for a runtime and a point count,
chosen from the end-to-end times benchmarks/grouping_placement.py measured and committed beside this file
(placement.json). A runtime nobody measured keeps grouping in the graph, and the reason says so."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

from foundry_edge.errors import FoundryError

MEASURED = Path(__file__).with_name("placement.json")
PLACEMENTS_OR_AUTO = ("graph", "host", "auto")


def choose_placement(runtime: str, points: int, table: dict | None = None) -> tuple[str, str]:
    """(placement, reason): the placement whose end-to-end time, summed over the models and batches measured on
    `runtime` at the measured point count nearest `points` (on a log scale), is lower."""
    table = measured() if table is None else table
    rows = [r for r in table["rows"] if r["runtime"] == runtime]
    if not rows:
        return "graph", (f"no measurement of {runtime} yet ({table.get('source', MEASURED.name)}): graph keeps "
                         "grouping inside the model")
    if table.get("host_grouping") == "compiled" and importlib.util.find_spec("numba") is None:
        return "graph", (f"graph for {runtime}: the host times in {table.get('source', MEASURED.name)} are of the "
                         "compiled host grouping, and numba is not installed here (pip install 'foundry-edge[fast]')")
    nearest = min({r["points"] for r in rows}, key=lambda p: abs(math.log(p / points)))
    at = [r for r in rows if r["points"] == nearest]
    graph, host = sum(r["graph_ms"] for r in at), sum(r["host_ms"] for r in at)
    chosen = "host" if host < graph else "graph"
    runs = ", ".join(sorted({f"{r['model']} B{r['batch']}" for r in at}))
    return chosen, (f"{chosen} for {runtime} at {points} points: measured at {nearest}, graph {graph:.1f} ms vs host "
                    f"{host:.1f} ms end to end ({runs}; {table.get('source', MEASURED.name)})")


def measured() -> dict:
    try:
        return json.loads(MEASURED.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FoundryError(f"--grouping auto needs the measurements in {MEASURED} ({exc}): reinstall foundry-edge "
                           "or pass --grouping graph|host") from None
