"""The sweep's views: sweep.json (everything), sweep.md and a self-contained sweep.html with the Pareto
plot of each runtime and accuracy, health and latency against the SuperToken count."""

from __future__ import annotations

import html
import math
from pathlib import Path

from foundry_edge.profiling.render import number


def _health(row: dict) -> dict:
    return row.get("health") or {}


def stderr(accuracy: dict) -> float:
    """One binomial standard error of a top-1 % over its clouds: how far chance alone moves it."""
    p = accuracy["top1"] / 100
    return 100 * math.sqrt(p * (1 - p) / accuracy["clouds"])


def _top1(row: dict) -> str:
    accuracy = row.get("accuracy")
    return f"{accuracy['top1']:.1f} ± {stderr(accuracy):.1f}" if accuracy else "-"


def _cost_label(sweep: dict) -> str:
    return "median ms per call" if sweep["settings"]["objective"] == "latency" else "mJ per cloud"


def figures_of(row: dict, runtime: str) -> dict:
    return (row.get("profile") or {}).get(runtime) or {}


def _gflops(row: dict, batch: int) -> str:
    """GFLOPs per cloud, from whichever runtime's measurement has them."""
    flops = next((f["flops"] for f in (row.get("profile") or {}).values() if f.get("flops")), None)
    return number(flops and flops / batch / 1e9, ".4f")


def table(sweep: dict) -> tuple[list[str], list[list[str]]]:
    """The rows as strings: one line per entry, the teacher first; a runtime's figures in its columns."""
    runtimes = sweep["settings"]["runtimes"]
    energy = any(figures_of(row, rt).get("energy_mj_per_cloud") is not None for row in sweep["rows"] for rt in runtimes)
    judged = any(figures_of(row, rt).get("valid") is not None for row in sweep["rows"] for rt in runtimes)
    header = ["entry", "s", "gate", "status", "top-1 % ± SE", "SuperTokens used", "entropy", "largest share", "params",
              "GFLOPs"]
    for runtime in runtimes:
        header += [f"{runtime} ms (p90)"] + [f"{runtime} mJ/cloud"] * energy + [f"{runtime} valid"] * judged
        header.append(f"dominated by ({runtime})")
    lines = []
    for row in sweep["rows"]:
        health = _health(row)
        used = (f"{health['used_mean']:.1f} / {health['num_supertokens']} (min {health['used_min']})"
                + (" COLLAPSED" if health["collapsed"] else "")) if health else "-"
        line = [row["entry"], str(row["num_supertokens"] or "-"), str(row["gate_budget"] or "-"),
                "ok" if row["status"] == "ok" else f"failed at {row['stage']}",
                _top1(row), used, number(health.get("entropy_mean"), ".3f"),
                number(health.get("largest_share_mean") and 100 * health["largest_share_mean"], ".1f") + (" %" if health else ""),
                number(row.get("params") and row["params"] / 1e6, ".2f") + (" M" if row.get("params") else ""),
                _gflops(row, sweep["settings"]["batch"])]
        for runtime in runtimes:
            figures = figures_of(row, runtime)
            valid = {True: "yes", False: "NO", None: "unknown"}[figures.get("valid")] if figures.get("median_ms") else "-"
            dominated = sweep["fronts"][runtime]["dominated"].get(row["entry"])
            on_front = row["entry"] in sweep["fronts"][runtime]["front"]
            timing = f"{figures['median_ms']:.2f} ({figures['p90_ms']:.2f})" if figures.get("median_ms") else "-"
            line += ([timing] + [number(figures.get("energy_mj_per_cloud"))] * energy + [valid] * judged
                     + [", ".join(dominated) if dominated else ("front" if on_front else "-")])
        lines.append(line)
    return header, lines


def front_lines(sweep: dict) -> list[str]:
    """One paragraph per runtime: the front cheapest first, then who dominates whom."""
    rows = {row["entry"]: row for row in sweep["rows"]}
    objective, lines = sweep["settings"]["objective"], []
    for runtime, result in sweep["fronts"].items():
        cost = [(label, (rows[label].get("profile") or {}).get(runtime, {})) for label in result["front"]]
        shown = ", ".join(f"{label} ({number(f.get('median_ms' if objective == 'latency' else 'energy_mj_per_cloud'))} "
                          f"{'ms' if objective == 'latency' else 'mJ'}, {rows[label]['accuracy']['top1']:.1f} %)"
                          for label, f in cost)
        lines.append(f"- {runtime}, {objective} against top-1: on the front, cheapest first: {shown or 'none'}.")
        for label, by in result["dominated"].items():
            lines.append(f"  - {label} is dominated by {', '.join(by)} (as fast or faster and as accurate or more).")
        if result["missing"]:
            lines.append(f"  - Not on the plot (no {objective} or accuracy figure): {', '.join(result['missing'])}.")
    spread = [f["p90_ms"] / f["median_ms"] - 1 for row in sweep["rows"] for f in (row.get("profile") or {}).values()
              if f.get("median_ms")]
    if spread and objective == "latency":
        lines.append(f"- Latency: the p90 of a measurement is up to {100 * max(spread):.0f} % above its median here "
                     "(other work on the machine); gaps smaller than that are not evidence of a faster model.")
    measured = [row["accuracy"] for row in sweep["rows"] if row.get("accuracy")]
    if measured:
        lines.append(f"- Top-1 is measured on {measured[0]['clouds']} held-out clouds: one standard error is "
                     f"{min(map(stderr, measured)):.1f} to {max(map(stderr, measured)):.1f} points here, so a gap under "
                     "two of them is within sampling noise and a point dominated by that little is not shown to be worse.")
    return lines


def settings_text(sweep: dict) -> str:
    s = sweep["settings"]
    gate = f", gate budgets {s['gate_budgets']}" if s["gate_budgets"] else ""
    given = f", given checkpoints {s['checkpoints']}" if s["checkpoints"] else ""
    timing = f"{s['iterations']} iterations" if s["iterations"] else f"{s['duration_s']} s"
    return (f"Teacher `{s['teacher']}`; students `{s['student']}` with the teacher's grouping and width at SuperToken "
            f"counts {s['supertokens']}{gate}{given}, distilled {s['steps']} steps and their classification head "
            f"fine-tuned {s['finetune_steps']} steps (batch {s['batch_size']}, lr {s['lr']}, seed {s['seed']}) on "
            f"{s['data']!r}. Accuracy: {s['accuracy']}. Profiled at {s['points']} points, batch {s['batch']}, "
            f"warm-up {s['warmup_s']} s then {timing}, {s['threads']} thread{'s' * (s['threads'] != 1)}, on "
            f"{', '.join(s['runtimes'])}.")


def to_markdown(sweep: dict) -> str:
    header, lines = table(sweep)
    machine = sweep.get("machine") or {}
    out = ["# SuperToken sweep: " + ("latency" if sweep["settings"]["objective"] == "latency" else "energy")
           + " against accuracy", "",
           f"Created {sweep['created']} in {sweep['duration_s'] / 60:.1f} min on {machine.get('cpu', 'this machine')}. "
           + settings_text(sweep), "",
           "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    out += ["", "## Pareto front", ""] + front_lines(sweep)
    failed = [row for row in sweep["rows"] if row["status"] != "ok"]
    if failed:
        out += ["", "## Failed entries", ""] + [f"- {row['entry']} at {row['stage']}: {row['error']}" for row in failed]
    if sweep.get("profile_report"):
        out += ["", f"The profile behind the figures: `{sweep['profile_report']}` (and its .md and .json)."]
    return "\n".join(out) + "\n"


def plots(sweep: dict) -> list[tuple[str, str]]:
    """[(title, base64 PNG)]: the Pareto plot of each runtime, then accuracy, health and cost against s."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from foundry_edge.profiling import pareto
    from foundry_edge.profiling.render import png
    from foundry_edge.profiling.sweep import cost_of

    objective, runtimes = sweep["settings"]["objective"], sweep["settings"]["runtimes"]
    measured = [row for row in sweep["rows"] if row.get("accuracy")]
    fig, axes = plt.subplots(1, len(runtimes), figsize=(6.8 * len(runtimes), 4.6), squeeze=False)
    for ax, runtime in zip(axes[0], runtimes):
        points = [{"label": row["entry"], "cost": cost_of(row, runtime, objective), "role": row["role"],
                   "accuracy": row["accuracy"]["top1"], "error": stderr(row["accuracy"])} for row in measured]
        pareto.plot(ax, points, f"{_cost_label(sweep)} on {runtime} (lower is better)", "top-1 accuracy (%)")
        ax.set_title(f"Pareto front, {runtime}")
    out = [(f"{objective.capitalize()} against accuracy", png(fig))]
    students = sorted((row for row in measured if row["role"] == "student" and row["num_supertokens"]
                       and row["gate_budget"] is None), key=lambda row: row["num_supertokens"])
    if students:
        fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
        s = [row["num_supertokens"] for row in students]
        axes[0].errorbar(s, [row["accuracy"]["top1"] for row in students], marker="o", capsize=3,
                         yerr=[stderr(row["accuracy"]) for row in students])
        axes[0].set(ylabel="top-1 accuracy (%)", title="Accuracy")
        axes[1].plot(s, [_health(row).get("used_mean") for row in students], marker="o", label="used (mean)")
        axes[1].plot(s, s, ls="--", color="grey", label="available (s)")
        axes[1].set(ylabel="SuperTokens per cloud", title="Assignment health (eval mode)")
        axes[1].legend(fontsize=8)
        for runtime in runtimes:
            axes[2].plot(s, [cost_of(row, runtime, objective) for row in students], marker="o", label=runtime)
        axes[2].set(ylabel=_cost_label(sweep), title="Cost")
        axes[2].legend(fontsize=8)
        for ax in axes:
            ax.set_xscale("log", base=2)
            ax.set_xticks(s, [str(v) for v in s])
            ax.minorticks_off()
            ax.set_xlabel("SuperTokens (s)")
            ax.grid(True, alpha=0.3)
        out.append(("Against the SuperToken count", png(fig)))
    return out


def to_html(sweep: dict) -> str:
    from foundry_edge.profiling.render import CSS, html_table, plots_or_note

    header, lines = table(sweep)
    parts = ["<h1>SuperToken sweep</h1>", f"<p>{html.escape(sweep['created'])}, {sweep['duration_s'] / 60:.1f} min. "
             + html.escape(settings_text(sweep)).replace("`", "") + "</p>"]
    figures = plots_or_note(plots, sweep, parts)
    parts += [f"<h2>{html.escape(title)}</h2><img alt=\"{html.escape(title)}\" src=\"data:image/png;base64,{data}\">"
              for title, data in figures[:1]]
    parts.append("<h2>Pareto front</h2><ul>" + "".join(
        f"<li>{html.escape(line.strip(' -'))}</li>" for line in front_lines(sweep)) + "</ul>")
    parts.append("<h2>Entries</h2>" + html_table(header, lines))
    parts += [f"<h2>{html.escape(title)}</h2><img alt=\"{html.escape(title)}\" src=\"data:image/png;base64,{data}\">"
              for title, data in figures[1:]]
    failed = [row for row in sweep["rows"] if row["status"] != "ok"]
    if failed:
        parts.append("<h2>Failed entries</h2><ul>" + "".join(
            f"<li class=err>{html.escape(row['entry'])} at {html.escape(row['stage'])}: {html.escape(row['error'])}</li>"
            for row in failed) + "</ul>")
    if sweep.get("profile_report"):
        parts.append(f"<p>The profile behind the figures: {html.escape(sweep['profile_report'])}.</p>")
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>foundry-edge sweep</title>"
            f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>\n")


def write_sweep(sweep: dict, out_dir: str | Path) -> dict[str, Path]:
    """sweep.json, sweep.md and sweep.html in `out_dir`, each written atomically."""
    from foundry_edge.fileio import write_json_atomic, write_text_atomic

    out = Path(out_dir)
    return {"json": write_json_atomic(out / "sweep.json", sweep),
            "markdown": write_text_atomic(out / "sweep.md", to_markdown(sweep)),
            "html": write_text_atomic(out / "sweep.html", to_html(sweep))}
