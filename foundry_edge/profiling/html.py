"""report.html: one self-contained file (inline CSS, plots as base64 PNG from matplotlib's Agg
backend, no scripts, no links to fetch) that opens offline on a Jetson."""

from __future__ import annotations

import base64
import html
import io
from collections import defaultdict

from foundry_edge.profiling.report import _f, _mib, device_bytes

CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px}
th{background:#f2f2f2}td.n{text-align:right}.err{color:#a00}img{max-width:100%}code{background:#f5f5f5}"""


def ok_rows(report: dict) -> list[dict]:
    return [r for r in report["measurements"] if r.get("status") == "ok"]


def series(rows: list[dict], value) -> dict:
    """{(model, runtime, batch): ([points...], [value...])} sorted by points, for line plots."""
    lines = defaultdict(list)
    for r in rows:
        lines[r["model"], r["runtime"], r["batch"]].append((r["points"], value(r)))
    return {key: tuple(zip(*sorted(pairs))) for key, pairs in lines.items()}


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _line_plot(rows, value, ylabel, title):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for (model, runtime, batch), (xs, ys) in series(rows, value).items():
        ax.plot(xs, ys, marker="o", label=f"{model} {runtime} B{batch}")
    ax.set(xscale="log", yscale="log", xlabel="points per cloud", ylabel=ylabel, title=title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def _speedup_plot(comparisons):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    groups = sorted({c["points"] for c in comparisons})
    keys = sorted({(c["student"], c["runtime"], c["batch"]) for c in comparisons})
    width = 0.8 / max(len(keys), 1)
    for i, key in enumerate(keys):
        found = {c["points"]: c for c in comparisons if (c["student"], c["runtime"], c["batch"]) == key}
        xs = [g + (i - (len(keys) - 1) / 2) * width for g in range(len(groups)) if groups[g] in found]
        bars = ax.bar(xs, [found[p]["speedup"] for p in groups if p in found], width, label=f"{key[0]} {key[1]} B{key[2]}")
        ratios = [found[p]["flops_ratio"] for p in groups if p in found]
        if all(ratios):
            ax.scatter(xs, ratios, marker="_", s=300, color="black")
    ax.set_xticks(range(len(groups)), [str(g) for g in groups])
    ax.set(xlabel="points per cloud", ylabel="speed-up over the teacher (x)",
           title="Speed-up (bars) and FLOPs ratio (dashes)")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.legend(fontsize=7)
    return fig


def _distribution_plot(rows):
    import matplotlib.pyplot as plt

    points = sorted({r["points"] for r in rows})
    fig, axes = plt.subplots(1, len(points), figsize=(4 * len(points) + 1, 4.2), squeeze=False)
    for ax, n in zip(axes[0], points):
        chosen = [r for r in rows if r["points"] == n]
        ax.boxplot([r["samples_ms"] for r in chosen], showfliers=True)
        ax.set_xticks(range(1, len(chosen) + 1), [f"{r['model']}\n{r['runtime']} B{r['batch']}" for r in chosen],
                      rotation=60, fontsize=7)
        ax.set(yscale="log", ylabel="ms per iteration", title=f"{n} points")
        ax.grid(True, axis="y", alpha=0.3)
    return fig


def plots(report: dict) -> list[tuple[str, str]]:
    """[(title, base64 PNG)]: latency and memory vs points, speed-up per point count, latency distribution."""
    import matplotlib

    matplotlib.use("Agg")
    rows = ok_rows(report)
    if not rows:
        return []
    out = [("Latency vs points", _png(_line_plot(rows, lambda r: r["latency_ms"]["median"], "median ms per batch",
                                                 "Latency (median, host in -> host out)"))),
           ("Memory vs points", _png(_line_plot(rows, lambda r: (r["memory"].get("peak_rss_bytes") or 0) / 2**20,
                                                "peak process RSS (MiB)", "Peak memory of the measuring process")))]
    if report["comparisons"]:
        out.append(("Speed-up per point count", _png(_speedup_plot(report["comparisons"]))))
    out.append(("Latency distribution", _png(_distribution_plot(rows))))
    return out


def _table(header: list[str], rows: list[list], numeric_from: int = 0) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td{' class=n' if i >= numeric_from else ''}>{html.escape(str(v))}</td>"
                                    for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def to_html(report: dict) -> str:
    s, m = report["settings"], report["machine"]
    parts = [f"<h1>foundry-edge profile</h1><p>{html.escape(report['created'])}, {html.escape(m['cpu'])}, "
             f"{s['threads']} threads, matmul peak {_f(m['matmul_peak'].get('gflops'), '.1f')} GFLOP/s. "
             f"Timed: {html.escape(s['timed'])}.</p>"]
    measured = ok_rows(report)
    parts.append("<h2>Latency and memory</h2>" + _table(
        ["model", "runtime", "points", "batch", "median ms", "mean", "p90", "p95", "p99", "std", "min", "clouds/s",
         "peak RSS MiB", "device MiB", "model MiB", "GFLOP/s", "% peak"],
        [[r["model"], r["runtime"], r["points"], r["batch"]] +
         [f"{r['latency_ms'][k]:.2f}" for k in ("median", "mean", "p90", "p95", "p99", "std", "min")] +
         [f"{r['throughput_cps']:.1f}", _mib(r["memory"].get("peak_rss_bytes")),
          _mib(device_bytes(r["memory"])), _mib(r["memory"].get("model_bytes")),
          _f(r["achieved_gflops"], ".1f"), _f(r["percent_of_peak"], ".0f")] for r in measured], 2))
    if report["comparisons"]:
        parts.append("<h2>Student vs teacher</h2>" + _table(
            ["student", "runtime", "points", "batch", "speed-up", "FLOPs ratio", "peak RSS ratio", "model size ratio"],
            [[c["student"], c["runtime"], c["points"], c["batch"], f"{c['speedup']:.2f}x", _f(c["flops_ratio"]),
              _f(c["peak_rss_ratio"]), _f(c["model_bytes_ratio"])] for c in report["comparisons"]], 2))
    failed = [r for r in report["measurements"] if r.get("status") != "ok"]
    if failed:
        items = [f"{r['model']} {r['runtime']} N={r['points']} B={r['batch']}: [{r['error_kind']}] {r['error']}"
                 for r in failed]
        parts.append("<h2>Not measured</h2><ul>" + "".join(f"<li class=err>{html.escape(i)}</li>" for i in items)
                     + "</ul>")
    try:
        figures = plots(report)
    except ImportError:
        figures = []
        parts.append("<p>Plots need matplotlib: pip install 'foundry-edge[report]'.</p>")
    parts += [f"<h2>{html.escape(title)}</h2><img alt=\"{html.escape(title)}\" src=\"data:image/png;base64,{data}\">"
              for title, data in figures]
    for row in report["operators"]:
        title = f"Where the time goes: {row['model']}, ONNX Runtime CPU, N={row['points']} B={row['batch']}"
        parts.append(f"<h2>{html.escape(title)}</h2>" + (_table(
            ["operator", "ms / run", "%", "nodes"],
            [[op["op_type"], f"{op['ms_per_run']:.2f}", f"{op['percent']:.1f}", op["nodes"]] for op in row["operators"]],
            1) if row.get("status") == "ok" else f"<p class=err>{html.escape(str(row.get('error')))}</p>"))
    if report["notes"]:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in report["notes"]) + "</ul>")
    parts.append("<h2>Machine</h2>" + _table(["fact", "value"], [[key, value] for key, value in m.items()]))
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>foundry-edge profile</title>"
            f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>\n")
