"""report.html: one self-contained file (inline CSS, plots as base64 PNG from matplotlib's Agg backend, no
scripts, nothing to fetch) that opens offline on a Jetson.

The plots follow what was measured: latency and memory against the point count when several were
measured (a panel per batch), against the batch when one point count and several batches were, else bars
per model; speed-up beside the FLOPs ratio as paired bars from zero; time by stage as stacked bars (the
total alone where a row has no stage timings); energy per cloud where telemetry measured it; accuracy
against latency with its Pareto front when accuracy figures are given; the latency distribution.
"""

from __future__ import annotations

import html
from collections import defaultdict

from foundry_edge.profiling.render import (
    CSS, SPEEDUP_HEADER, STAGE_HEADER, accuracy_points, board_text, clocks_text, device_bytes, html_table, measured_telemetry, mib, number, png,
    plots_or_note, stage_names, stage_speedup_table, stage_table, validity,
)

STAGE_COLOURS = {"grouping": "#4c78a8", "tokenizer": "#72b7b2", "assignment": "#f58518", "positions": "#eeca3b",
                 "encoder": "#54a24b", "upsampling": "#e45756", "head": "#b279a2", "other": "#bab0ac",
                 "total": "#9d9d9d"}


def ok_rows(report: dict) -> list[dict]:
    return [r for r in report["measurements"] if r.get("status") == "ok"]


def _name(r: dict) -> str:
    return f"{r['model']} · {r['runtime']}"


def _scale_y(ax, values: list[float]) -> None:
    """Log only where the values span more than 30x; otherwise linear from zero, so bars compare."""
    positive = [v for v in values if v and v > 0]
    if positive and max(positive) / min(positive) > 30:
        ax.set_yscale("log")
    else:
        ax.set_ylim(0, max(positive or [1]) * 1.15)


def _ticks(ax, values: list[int]) -> None:
    """An x axis with a tick at each measured value (log 2 when they span more than 4x)."""
    if len(values) > 1 and max(values) / min(values) > 4:
        ax.set_xscale("log", base=2)
    ax.set_xticks(values, [str(v) for v in values])
    ax.minorticks_off()


def metric_plot(report: dict, value, ylabel: str, title: str):
    """`value(row)` against the point count (a panel per batch), the batch, or as bars per model."""
    import matplotlib.pyplot as plt

    rows = ok_rows(report)
    points, batches = sorted({r["points"] for r in rows}), sorted({r["batch"] for r in rows})
    if len(points) > 1:
        fig, axes = plt.subplots(1, len(batches), figsize=(5.2 * len(batches) + 1.5, 4), squeeze=False)
        for ax, batch in zip(axes[0], batches):
            _lines(ax, [r for r in rows if r["batch"] == batch], "points", value)
            ax.set(xlabel="points per cloud", ylabel=ylabel, title=f"{title}, batch {batch}")
            _ticks(ax, points)
    elif len(batches) > 1:
        fig, ax = plt.subplots(figsize=(7, 4))
        _lines(ax, rows, "batch", value)
        ax.set(xlabel="batch (clouds per call)", ylabel=ylabel, title=f"{title}, {points[0]} points")
        _ticks(ax, batches)
    else:
        fig, ax = plt.subplots(figsize=(7, 0.5 * len(rows) + 1.4))
        names, values = [_name(r) for r in rows], [value(r) for r in rows]
        bars = ax.barh(names, values, color="#4c78a8")
        ax.bar_label(bars, [f"{v:.3g}" for v in values], padding=3, fontsize=8)
        ax.invert_yaxis()
        ax.set(xlabel=ylabel, title=f"{title}, {points[0]} points, batch {batches[0]}")
        ax.set_xlim(0, max(values or [1]) * 1.2)
        ax.grid(True, axis="x", alpha=0.3)
        return fig
    for ax in fig.axes:
        ax.grid(True, which="major", alpha=0.3)
        _scale_y(ax, [value(r) for r in rows])
    fig.axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig


def _lines(ax, rows: list[dict], x: str, value) -> None:
    series = defaultdict(list)
    for r in rows:
        series[_name(r)].append((r[x], value(r)))
    for name, pairs in series.items():
        xs, ys = zip(*sorted(pairs))
        ax.plot(xs, ys, marker="o", label=name)


def speedup_plot(comparisons: list[dict]):
    """Measured speed-up beside the FLOPs ratio (what the FLOPs alone would predict), from zero."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(comparisons) + 2), 4.2))
    xs = range(len(comparisons))
    speedups = [c["speedup"] for c in comparisons]
    ratios = [c["flops_ratio"] or 0.0 for c in comparisons]
    measured = ax.bar([x - 0.2 for x in xs], speedups, 0.4, color="#4c78a8", label="measured speed-up")
    ideal = ax.bar([x + 0.2 for x in xs], ratios, 0.4, color="#c6dbef", hatch="//", edgecolor="#4c78a8",
                   label="FLOPs ratio (teacher / student)")
    ax.bar_label(measured, [f"{v:.2f}x" for v in speedups], padding=2, fontsize=8)
    ax.bar_label(ideal, [f"{v:.2f}x" if v else "n/a" for v in ratios], padding=2, fontsize=8)
    ax.set_xticks(list(xs), [f"{c['student']}\n{c['runtime']} N={c['points']} B={c['batch']}" for c in comparisons],
                  fontsize=8)
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_ylim(0, max(speedups + ratios + [1.0]) * 1.2)
    ax.set(ylabel="x faster than the teacher", title="Speed-up over the teacher, and what the FLOPs predict")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig


def stage_plot(rows: list[dict]):
    """One stacked bar per measurement: median ms by stage, or the median latency alone without stages."""
    import matplotlib.pyplot as plt

    names = stage_names(rows)
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.6))
    labels = [f"{_name(r)} N={r['points']} B={r['batch']}" for r in rows]
    left = [0.0] * len(rows)
    for stage in [name for name in names if name != "engine_wall"] + ["total"]:  # wall time spans the layers
        widths = [(r["stages_ms"] or {}).get(stage, 0.0) if r.get("stages_ms") else
                  (r["latency_ms"]["median"] if stage == "total" else 0.0) for r in rows]
        if any(widths):
            ax.barh(labels, widths, left=left, color=STAGE_COLOURS.get(stage, None),
                    label=stage if stage != "total" else "total (no stage timings)")
            left = [a + b for a, b in zip(left, widths)]
    ax.invert_yaxis()
    ax.set(xlabel="ms per call", title="Where the time goes, by stage")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig


def energy_plot(rows: list[dict]):
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["telemetry"]["energy_mj_per_cloud"] is not None]
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(rows) + 1.6))
    labels = [f"{_name(r)} N={r['points']} B={r['batch']}" for r in rows]
    values = [r["telemetry"]["energy_mj_per_cloud"] for r in rows]
    colours = ["#4c78a8" if r["telemetry"]["valid"] is not False else "#e45756" for r in rows]
    bars = ax.barh(labels, values, color=colours)
    ax.bar_label(bars, [f"{v:.3g}" for v in values], padding=3, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(values) * 1.2)
    ax.set(xlabel="mJ per cloud (steady window)", title="Energy per cloud (red: invalid measurement)")
    ax.grid(True, axis="x", alpha=0.3)
    return fig


def accuracy_plot(report: dict):
    import matplotlib.pyplot as plt

    from foundry_edge.profiling import pareto

    by_runtime = accuracy_points(report)
    fig, axes = plt.subplots(1, len(by_runtime), figsize=(6.5 * len(by_runtime), 4.4), squeeze=False)
    for ax, (runtime, points) in zip(axes[0], by_runtime.items()):
        pareto.plot(ax, points, "median ms per call (lower is better)")
        ax.set_title(f"Accuracy vs latency, {runtime}")
    return fig


def distribution_plot(rows: list[dict]):
    import matplotlib.pyplot as plt

    points = sorted({r["points"] for r in rows})
    fig, axes = plt.subplots(1, len(points), figsize=(max(4.5, 1.1 * len(rows) / len(points) + 2) * len(points), 4.4),
                             squeeze=False)
    for ax, n in zip(axes[0], points):
        chosen = [r for r in rows if r["points"] == n]
        ax.boxplot([r["samples_ms"] for r in chosen], showfliers=True)
        ax.set_xticks(range(1, len(chosen) + 1), [f"{r['model']}\n{r['runtime']} B{r['batch']}" for r in chosen],
                      rotation=30, ha="right", fontsize=7)
        ax.set(ylabel="ms per call", title=f"Latency distribution, {n} points")
        ax.grid(True, axis="y", alpha=0.3)
        _scale_y(ax, [v for r in chosen for v in r["samples_ms"]])
    return fig


def plots(report: dict) -> list[tuple[str, str, str]]:
    """[(title, caption, base64 PNG)] for the plots this report's data supports."""
    import matplotlib

    matplotlib.use("Agg")
    rows = ok_rows(report)
    if not rows:
        return []
    out = [("Latency", "Median per call, host in -> host out.",
            metric_plot(report, lambda r: r["latency_ms"]["median"], "median ms per call", "Latency")),
           ("Memory", "Peak resident memory of the measuring process (fresh per measurement).",
            metric_plot(report, lambda r: (r["memory"].get("peak_rss_bytes") or 0) / 2**20, "peak RSS (MiB)",
                        "Peak memory"))]
    if report["comparisons"]:
        out.append(("Speed-up", "Bars from zero; a FLOPs ratio above the speed-up is time the FLOPs do not explain "
                                "(memory traffic, grouping, framework overhead).", speedup_plot(report["comparisons"])))
    out.append(("Time by stage", "Stage timings come from extra runs: torch with timers at stage boundaries, "
                                 "TensorRT with its per-layer profiler and synchronized copies; other runtimes show "
                                 "their total.", stage_plot(rows)))
    energy = [r for r in measured_telemetry(report) if r["telemetry"]["energy_mj_per_cloud"] is not None]
    if energy:
        out.append(("Energy", "Energy over the steady window divided by the clouds processed.", energy_plot(energy)))
    if accuracy_points(report):
        out.append(("Accuracy vs latency", "Filled: on the Pareto front; hollow: another model is at least as fast "
                                           "and as accurate.", accuracy_plot(report)))
    out.append(("Latency distribution", "Every timed call.", distribution_plot(rows)))
    return [(title, caption, png(fig)) for title, caption, fig in out]


# -- tables -----------------------------------------------------------------------------------------
def _gib(value) -> str:
    return "-" if value is None else f"{value / 2**30:.1f} GiB"


def _loads(values) -> str:
    return "-" if not values else " / ".join(f"{v:.2f}" for v in values)


def machine_rows(m: dict) -> list[list[str]]:
    """The machine section as [fact, readable value]: no Python dicts or lists on the page."""
    peak = m["matmul_peak"]
    rows = [["Host", m.get("hostname") or "-"], ["OS", m.get("os") or "-"],
            ["CPU", f"{m.get('cpu')} ({m.get('physical_cores') or '?'} physical / {m.get('logical_cores')} logical "
                    f"cores, {m.get('usable_cores')} usable; {m.get('threads_used')} threads used)"],
            ["RAM", _gib(m.get("ram_bytes"))],
            ["GPUs", "; ".join(f"{g['name']} ({_gib(g.get('memory_bytes'))}, driver {g.get('driver') or '?'})"
                               for g in m.get("gpus") or []) or "none"],
            ["Load average 1/5/15 min", f"start {_loads(m.get('load_average_start'))}, end {_loads(m.get('load_average'))}"],
            ["fp32 matmul peak", f"{number(peak.get('gflops'), '.1f')} GFLOP/s (numpy {number(peak.get('numpy'), '.1f')}, "
                                 f"torch {number(peak.get('torch'), '.1f')}; {peak.get('size')}^3)"
                                 + (f"; not measured: {peak['error']}" if peak.get("error") else "")],
            ["Python", m.get("python_executable") or "-"],
            ["Versions", ", ".join(f"{k} {v}" for k, v in (m.get("versions") or {}).items())]]
    telemetry = m.get("telemetry") or {}
    board = telemetry.get("jetson")
    if board:
        rows += [["Jetson", board_text(board)], ["Clocks", clocks_text(board.get("clocks_mhz") or {})],
                 ["Rails", ", ".join(f"{k} {v:.2f} W" for k, v in (board.get("rails_w") or {}).items()) or "not readable"],
                 ["Total power from", board.get("total_rail") or "-"],
                 ["Temperatures", ", ".join(f"{k} {v:.1f} C" for k, v in (board.get("temps_c") or {}).items()) or "-"],
                 ["Over-current events since boot", ", ".join(f"{k} {v}" for k, v in (board.get("oc_events") or {}).items())
                  or "-"]]
    rows += [[f"Telemetry: {name}", state] for name, state in (telemetry.get("sources") or {}).items()]
    return rows


def to_html(report: dict) -> str:
    s, m = report["settings"], report["machine"]
    parts = [f"<h1>foundry-edge profile</h1><p>{html.escape(report['created'])}, {html.escape(m['cpu'])}, "
             f"{s['threads']} threads, matmul peak {number(m['matmul_peak'].get('gflops'), '.1f')} GFLOP/s. "
             f"Timed: {html.escape(s['timed'])}.</p>"]
    measured = ok_rows(report)
    parts.append("<h2>Latency and memory</h2>" + html_table(
        ["model", "runtime", "points", "batch", "median ms", "mean", "p90", "p95", "p99", "std", "min", "clouds/s",
         "peak RSS MiB", "device MiB", "model MiB", "GFLOP/s", "% peak"],
        [[r["model"], r["runtime"], r["points"], r["batch"]] +
         [f"{r['latency_ms'][k]:.2f}" for k in ("median", "mean", "p90", "p95", "p99", "std", "min")] +
         [f"{r['throughput_cps']:.1f}", mib(r["memory"].get("peak_rss_bytes")),
          mib(device_bytes(r["memory"])), mib(r["memory"].get("model_bytes")),
          number(r["achieved_gflops"], ".1f"), number(r["percent_of_peak"], ".0f")] for r in measured]))
    with_telemetry = measured_telemetry(report)
    told = [r for r in with_telemetry if r["telemetry"]["valid"] is not None or r["telemetry"]["energy_mj_per_call"]]
    if with_telemetry and not told:
        reasons = sorted({why for r in with_telemetry for why in r["telemetry"]["invalid_reasons"]})
        parts.append("<h2>Energy and validity</h2><p>Not measured: " + html.escape("; ".join(reasons)) + ".</p>")
    elif with_telemetry:
        parts.append("<h2>Energy and validity</h2><p>Energy over the steady window (the timed calls after warm-up); "
                     "a measurement is invalid when a watched clock fell by more than 10 % or anything throttled.</p>"
                     + html_table(["model", "runtime", "points", "batch", "mean W", "mJ per call", "mJ per cloud",
                               "source", "valid"],
                              [[r["model"], r["runtime"], r["points"], r["batch"], number(r["telemetry"]["power_w"]),
                                number(r["telemetry"]["energy_mj_per_call"]), number(r["telemetry"]["energy_mj_per_cloud"]),
                                r["telemetry"]["energy_source"] or "-", validity(r)] for r in with_telemetry]))
    if report["comparisons"]:
        parts.append("<h2>Student vs teacher</h2>" + html_table(
            ["student", "runtime", "points", "batch", "speed-up", "FLOPs ratio", "peak RSS ratio", "model size ratio"],
            [[c["student"], c["runtime"], c["points"], c["batch"], f"{c['speedup']:.2f}x", number(c["flops_ratio"]),
              number(c["peak_rss_ratio"]), number(c["model_bytes_ratio"])] for c in report["comparisons"]]))
    failed = [r for r in report["measurements"] if r.get("status") != "ok"]
    if failed:
        items = [f"{r['model']} {r['runtime']} N={r['points']} B={r['batch']}: [{r['error_kind']}] {r['error']}"
                 for r in failed]
        parts.append("<h2>Not measured</h2><ul>" + "".join(f"<li class=err>{html.escape(i)}</li>" for i in items)
                     + "</ul>")
    figures = plots_or_note(plots, report, parts)
    parts += [f"<figure><h2>{html.escape(title)}</h2><img alt=\"{html.escape(title)}\" "
              f"src=\"data:image/png;base64,{data}\"><figcaption>{html.escape(caption)}</figcaption></figure>"
              for title, caption, data in figures]
    staged = stage_table(report["operators"])
    if staged:
        parts.append("<h2>Time by stage (ONNX Runtime CPU)</h2>" + html_table(STAGE_HEADER, staged))
        if report.get("stage_comparisons"):
            parts.append(html_table(SPEEDUP_HEADER, stage_speedup_table(report["stage_comparisons"])))
    for row in report["operators"]:
        title = f"Where the time goes: {row['model']}, ONNX Runtime CPU, N={row['points']} B={row['batch']}"
        parts.append(f"<h2>{html.escape(title)}</h2>" + (html_table(
            ["operator", "ms / run", "%", "nodes"],
            [[op["op_type"], f"{op['ms_per_run']:.2f}", f"{op['percent']:.1f}", op["nodes"]] for op in row["operators"]])
            if row.get("status") == "ok" else f"<p class=err>{html.escape(str(row.get('error')))}</p>"))
    if report["notes"]:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in report["notes"]) + "</ul>")
    parts.append("<h2>Machine</h2>" + html_table(["fact", "value"], machine_rows(m), cls="facts"))
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>foundry-edge profile</title>"
            f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>\n")
