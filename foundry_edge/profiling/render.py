"""What the profile's Markdown (report.py) and HTML pages (html.py, sweep_report.py) share: number
formatting, readings of report rows, HTML tables and inline PNG figures. Imports no other view, so the
views import it and never each other's private helpers.
"""

from __future__ import annotations

import base64
import html
import io
import re


def number(value, fmt: str = ".2f", none: str = "-") -> str:
    """`value` formatted, or `none` where it was not measured."""
    return none if value is None else format(value, fmt)


def mib(value) -> str:
    """Bytes as MiB with one decimal, "-" where unknown."""
    return "-" if value is None else f"{value / 2**20:.1f}"


def device_bytes(memory: dict):
    """Device memory of a measurement: the cudaMemGetInfo delta, else what the runtime says it holds."""
    return memory.get("device_used_bytes") or memory.get("runtime_device_bytes")


def measured_telemetry(report: dict) -> list[dict]:
    """The measurements that ran and sampled telemetry."""
    return [r for r in report["measurements"] if r.get("status") == "ok" and r.get("telemetry")]


def validity(row: dict) -> str:
    """"yes", "NO (why)" or "unknown (why)" for a measurement's telemetry."""
    t = row["telemetry"]
    if t["valid"] is None:
        return "unknown"
    return "yes" if t["valid"] else "NO: " + "; ".join(t["invalid_reasons"])


def board_text(board: dict) -> str:
    """"NVIDIA Jetson Orin Nano Developer Kit, L4T 36.4.3; power mode 25W (id 1); jetson_clocks off"."""
    mode = board.get("power_mode") or {}
    locked = {True: "on", False: "off"}.get((board.get("jetson_clocks") or {}).get("locked"), "unknown")
    return (f"{board.get('model', 'unknown board')}, L4T {board.get('l4t', '?')}; power mode "
            f"{mode.get('name') or 'unknown'} (id {mode.get('id', '?')}); jetson_clocks {locked}")


def clocks_text(clocks: dict) -> str:
    """{"gpu": {"cur", "min", "max"}, ...} -> "GPU 918 MHz (306..918), EMC ..."."""
    parts = []
    for name, info in clocks.items():
        if info.get("cur") is None:
            parts.append(f"{name.upper()} not readable")
            continue
        span = f" ({info['min']:.0f}..{info['max']:.0f})" if info.get("min") is not None and info.get("max") else ""
        parts.append(f"{name.upper()} {info['cur']:.0f} MHz{span}")
    return ", ".join(parts)


# TensorRT's stages after its grouping (runtimes/trt_layers.py), then the copies back and the engine's wall time.
TRT_STAGES = ("network", "mixed", "unattributed", "copies_out", "engine_wall")


def stage_names(rows: list[dict]) -> list[str]:
    """The stages any row has, in the order a forward pass runs them, "other" last."""
    from foundry_edge.profiling.stages import STAGES

    seen = {name for r in rows for name in (r.get("stages_ms") or {})}
    known = ["host_preprocessing", "copies_in"] + [name for name, _ in STAGES] + list(TRT_STAGES)
    known = list(dict.fromkeys(known))
    order = known + sorted(seen - set(known) - {"other"})
    return [name for name in order if name in seen] + (["other"] if "other" in seen else [])


def accuracy_points(report: dict) -> dict[str, list[dict]]:
    """{runtime: [{"label", "cost" (median ms), "accuracy", "role"}]} at the first point count and the
    smallest batch, for the models with an accuracy figure."""
    accuracy = report["settings"].get("accuracy") or {}
    rows = [r for r in report["measurements"] if r.get("status") == "ok" and r["model"] in accuracy]
    if not rows:
        return {}
    points, batch = report["settings"]["points"][0], min(report["settings"]["batches"])
    out: dict[str, list[dict]] = {}
    for r in rows:
        if r["points"] == points and r["batch"] == batch:
            out.setdefault(r["runtime"], []).append({"label": r["model"], "cost": r["latency_ms"]["median"],
                                                     "accuracy": accuracy[r["model"]], "role": r["role"]})
    return out


# -- HTML ------------------------------------------------------------------------------------------
CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px;vertical-align:top}
th{background:#f2f2f2;text-align:left}td.n{text-align:right}.err{color:#a00}img{max-width:100%;display:block;margin:.4em 0}
code{background:#f5f5f5}table.facts td:first-child{white-space:nowrap;font-weight:600}figure{margin:1em 0}
figcaption{color:#555;font-size:13px}"""


def png(fig) -> str:
    """A matplotlib figure as base64 PNG for an inline <img> (the figure is closed)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


NUMBER = re.compile(r"-?[\d.]+(e[-+]?\d+)?x?|-")


def html_table(header: list[str], rows: list[list], cls: str = "") -> str:
    """An HTML table; numbers (and "-" for none) right-aligned."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td{' class=n' if NUMBER.fullmatch(str(v)) else ''}>{html.escape(str(v))}</td>"
                                    for v in row) + "</tr>" for row in rows)
    return f"<table{f' class={cls}' if cls else ''}><tr>{head}</tr>{body}</table>"


def plots_or_note(make_plots, report: dict, parts: list) -> list:
    """`make_plots(report)`, or no plots and a line in `parts` saying matplotlib is missing."""
    try:
        return make_plots(report)
    except ImportError:
        parts.append("<p>Plots need matplotlib: pip install 'foundry-edge[report]'.</p>")
        return []


# -- time by stage (ONNX Runtime CPU, --operators) -----------------------------------------------------------------
STAGE_HEADER = ["model", "N", "B", "host prep ms", "grouping ms", "network ms", "copies ms", "stages ms",
                "end-to-end ms", "accounted"]
SPEEDUP_HEADER = ["student", "N", "B", "end-to-end speed-up", "without grouping (network only)", "grouping share"]


def stage_table(operators: list[dict]) -> list[list]:
    """One row per profiled model: what each stage takes per call, and the share of the whole call they explain."""
    rows = []
    for row in operators:
        s = row.get("stages") if row.get("status") == "ok" else None
        if s:
            times = [number(s[key]) for key in ("host_preprocessing_ms", "grouping_ms", "network_ms", "copies_ms",
                                                 "stages_sum_ms", "end_to_end_ms")]
            rows.append([row["model"], row["points"], row["batch"], *times, number(s["accounted"], ".0%")])
    return rows


def stage_speedup_table(comparisons: list[dict]) -> list[list]:
    return [[c["model"], c["points"], c["batch"], number(c["speedup"], ".2f") + "x",
             number(c["network_speedup"], ".2f") + "x", number(c["student_grouping_share"], ".0%")]
            for c in comparisons]
