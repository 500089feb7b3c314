"""The profile report: report.json (schema "foundry-edge/profile", version 2), report.md, report.html.

report.json holds everything; Markdown and HTML are views of it. Top-level keys:
    schema, schema_version, created, duration_s, settings (what is timed, threads, warm-up, iterations,
    telemetry period, accuracy figures given), machine (facts, matmul peak, `telemetry`: power mode,
    jetson_clocks, clocks, rails and which sources exist, at the start), models (per model and point count:
    params, FLOPs per cloud, inputs),
    measurements (one row per model x runtime x points x batch: latency_ms, samples_ms, throughput_cps,
    memory, flops, achieved_gflops, percent_of_peak, `telemetry` (energy per call and per cloud over the
    steady window, clocks, throttling, `valid`), `stages_ms` (torch: median ms by stage), or status
    "error" with `error`),
    comparisons (student vs teacher: speedup, flops_ratio, speedup_over_flops, memory ratios),
    operators (ONNX Runtime time by operator type, where asked), notes (lines a reader must see).
Version 2 replaced machine.jetson and machine.tegrastats with machine.telemetry.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from foundry_edge.profiling.render import (
    SPEEDUP_HEADER, STAGE_HEADER, accuracy_points, board_text, clocks_text, device_bytes, measured_telemetry, mib,
    number, stage_names, stage_speedup_table, stage_table, validity,
)

SCHEMA = "foundry-edge/profile"
SCHEMA_VERSION = 2
TIMED = ("runtime.infer(points): a (B, N, 3) float32 host array in, host arrays out (host in -> host out); "
         "host-device copies and the in-graph grouping (normalisation, FPS, kNN) are inside the timed call")


def build(config, facts: dict, peak: dict, models: dict, measurements: list[dict], operators: list[dict],
          notes: list[str], started: float) -> dict:
    """Assemble the report dict from what the runner measured."""
    peak_gflops = peak.get("matmul", {}).get("gflops") if peak.get("status") == "ok" else None
    if peak_gflops is None:
        notes = notes + [f"matmul peak not measured: {peak.get('error')}"]
    for row in measurements:
        add_efficiency(row, peak_gflops)
    for key, info in models.items():
        problem = info.get("error") or (info.get("export") or {}).get("warning")
        if problem:
            notes = notes + [f"{key[0]} at {key[1]} points: {problem}"]
    if config.grouping == "auto":  # say what auto chose, and from what
        notes = notes + [f"--grouping auto: {config.placement(points)[1]}" for points in config.points]
    # once per model, not per point count (e.g. FLOPs unknown: an export older than its `cost` section)
    notes = notes + list(dict.fromkeys(f"{label}: {info['warning']}" for (label, _), info in models.items()
                                       if info.get("warning")))
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "created": dt.datetime.fromtimestamp(started, dt.timezone.utc).isoformat(timespec="seconds"),
        "duration_s": time.time() - started,
        "settings": settings(config),
        "machine": {**facts, "matmul_peak": {**peak.get("matmul", {}), "status": peak.get("status"),
                                             "error": peak.get("error")}},
        "models": [{"model": label, "points": points, **info} for (label, points), info in models.items()],
        "measurements": measurements,
        "comparisons": comparisons(config, measurements, models),
        "operators": operators,
        "stage_comparisons": stage_comparisons(config, operators),
        "notes": notes,
    }


def settings(config) -> dict:
    return {"timed": TIMED, "threads": config.threads,
            "thread_settings": f"torch.set_num_threads({config.threads}), ONNX Runtime intra_op_num_threads="
                               f"{config.threads}, OMP/MKL/OPENBLAS_NUM_THREADS={config.threads}",
            "warmup_s": config.warmup_s, "iterations": config.iterations, "duration_s": config.duration_s,
            "timeout_s": config.timeout_s, "memory_limit_bytes": config.memory_limit_bytes,
            "runtimes": config.runtimes, "points": config.points, "batches": config.batches,
            "teacher": config.teacher.spec if config.teacher else None,
            "students": [s.spec for s in config.students], "process": "one fresh process per measurement",
            "telemetry_interval_s": config.telemetry_interval_s, "telemetry_root": str(config.telemetry_root),
            "stage_runs": config.stage_runs, "accuracy": dict(config.accuracy), "grouping": config.grouping,
            "placements": {str(p): config.placement(p)[0] for p in config.points}}


def add_efficiency(row: dict, peak_gflops: float | None) -> None:
    """achieved GFLOP/s = FLOPs of the batch / median latency, and its share of the matmul peak.

    The peak is the better of those measured in the row's own worker right before and after it, else
    the run's. A share above 100 % means the peak was measured under other conditions than the row: it is
    not reported (`percent_of_peak_note` says why). A row whose CV exceeds UNSTABLE_CV is `unstable`.
    """
    from foundry_edge.profiling.timing import UNSTABLE_CV

    row["achieved_gflops"] = row["percent_of_peak"] = None
    if row.get("status") != "ok":
        return
    row["unstable"] = row["latency_ms"].get("cv", 0.0) > UNSTABLE_CV
    beside = [v for v in (row.get("matmul_peak") or {}).values() if v]
    peak = max(beside) if beside else peak_gflops
    if row.get("flops"):
        row["achieved_gflops"] = row["flops"] / (row["latency_ms"]["median"] / 1e3) / 1e9
        if peak:
            percent = 100 * row["achieved_gflops"] / peak
            if percent > 100:
                row["percent_of_peak_note"] = (f"{percent:.0f} % of a {peak:.1f} GFLOP/s peak: the peak was not "
                                               "measured under the row's conditions, so no share is reported")
            else:
                row["percent_of_peak"] = percent


def comparisons(config, measurements: list[dict], models: dict) -> list[dict]:
    """Student vs teacher at the same runtime, points and batch: speed-up, FLOPs ratio, memory ratios."""
    if config.teacher is None:
        return []
    teacher = {(m["runtime"], m["points"], m["batch"]): m for m in measurements
               if m["role"] == "teacher" and m.get("status") == "ok"}
    rows = []
    for m in measurements:
        t = teacher.get((m["runtime"], m["points"], m["batch"]))
        if m["role"] != "student" or m.get("status") != "ok" or t is None:
            continue
        if models[m["model"], m["points"]].get("inputs_differ_from_teacher"):
            continue
        speedup = t["latency_ms"]["median"] / m["latency_ms"]["median"]
        flops_ratio = t["flops"] / m["flops"] if t.get("flops") and m.get("flops") else None
        rows.append({
            "student": m["model"], "teacher": t["model"], "runtime": m["runtime"], "points": m["points"],
            "batch": m["batch"], "speedup": speedup, "flops_ratio": flops_ratio,
            "speedup_over_flops": speedup / flops_ratio if flops_ratio else None,
            "peak_rss_ratio": _ratio(m["memory"].get("peak_rss_bytes"), t["memory"].get("peak_rss_bytes")),
            "device_memory_ratio": _ratio(device_bytes(m["memory"]), device_bytes(t["memory"])),
            "model_bytes_ratio": _ratio(m["memory"].get("model_bytes"), t["memory"].get("model_bytes")),
        })
    return rows


def stage_comparisons(config, operators: list[dict]) -> list[dict]:
    """Student vs teacher from the stage profiles: the end-to-end speed-up, the network-only one (what grouping
    hides), and the share of the student's call its grouping (host or in-graph) takes."""
    if config.teacher is None:
        return []
    staged = {(r["model"], r["points"], r["batch"]): r["stages"] for r in operators
              if r.get("status") == "ok" and r.get("stages")}
    rows = []
    for (label, points, batch), s in staged.items():
        t = staged.get((config.teacher.label, points, batch))
        if label == config.teacher.label or t is None:
            continue
        grouping = s["host_preprocessing_ms"] + s["grouping_ms"]
        rows.append({"model": label, "points": points, "batch": batch,
                     "speedup": _ratio(t["end_to_end_ms"], s["end_to_end_ms"]),
                     "network_speedup": _ratio(t["network_ms"], s["network_ms"]),
                     "student_grouping_share": grouping / s["stages_sum_ms"] if s["stages_sum_ms"] else None})
    return rows


def _ratio(a, b):
    return a / b if a and b else None


# -- Markdown --------------------------------------------------------------------------------------
def _loads(values) -> str:
    return "-" if not values else "/".join(f"{v:.1f}" for v in values)


def to_markdown(report: dict) -> str:
    """A report people read: settings, machine, latency and memory table, comparisons, errors, operators."""
    s, m = report["settings"], report["machine"]
    peak = m["matmul_peak"]
    lines = [
        "# foundry-edge profile", "",
        f"Created {report['created']} in {report['duration_s']:.0f} s on {m['cpu']} ({m['usable_cores']} usable cores, "
        f"{number(m['ram_bytes'] and m['ram_bytes'] / 2**30, '.1f')} GiB RAM), {s['threads']} threads. "
        f"GPU: {', '.join(g['name'] for g in m['gpus']) or 'none'}. Load average (1, 5, 15 min) at the start "
        f"{_loads(m.get('load_average_start'))}, at the end {_loads(m.get('load_average'))}: other work on the "
        "machine slows every figure.", "",
        f"- Timed: {s['timed']}.",
        f"- Threads: {s['thread_settings']}.",
        f"- Warm-up {s['warmup_s']} s, then " + (f"{s['iterations']} iterations" if s["iterations"] else
                                                  f"{s['duration_s']} s") + "; " + s["process"] + ".",
        f"- fp32 matmul peak: {number(peak.get('gflops'), '.1f')} GFLOP/s (numpy {number(peak.get('numpy'), '.1f')}, "
        f"torch {number(peak.get('torch'), '.1f')}, {peak.get('size')}^3).",
        f"- Versions: {', '.join(f'{k} {v}' for k, v in m['versions'].items())}.",
    ]
    lines += telemetry_lines(m.get("telemetry"))
    lines += ["", "## Latency and memory", "",
              "| model | runtime | points | batch | median ms | mean | p90 | p90 bound | p95 | p99 | std | CV | min | "
              "clouds/s | peak RSS MiB | device MiB | model MiB | GFLOPs | GFLOP/s | % peak |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["measurements"]:
        if r.get("status") != "ok":
            continue
        lat, mem = r["latency_ms"], r["memory"]
        cv = f"{lat['cv']:.2f}" + (" unstable" if r.get("unstable") else "") if "cv" in lat else "-"
        lines.append(f"| {r['model']} | {r['runtime']} | {r['points']} | {r['batch']} | {lat['median']:.2f} | "
                     f"{lat['mean']:.2f} | {lat['p90']:.2f} | {number(lat.get('p90_upper_bound'), '.2f')} | "
                     f"{lat['p95']:.2f} | {lat['p99']:.2f} | {lat['std']:.2f} | {cv} | "
                     f"{lat['min']:.2f} | {r['throughput_cps']:.1f} | {mib(mem.get('peak_rss_bytes'))} | "
                     f"{mib(device_bytes(mem))} | {mib(mem.get('model_bytes'))} | "
                     f"{number(r['flops'] and r['flops'] / 1e9, '.3f')} | {number(r['achieved_gflops'], '.1f')} | "
                     f"{number(r['percent_of_peak'], '.0f')} |")
    if report["comparisons"]:
        lines += ["", "## Student vs teacher", "",
                  "| student | runtime | points | batch | speed-up | FLOPs ratio | speed-up / FLOPs ratio | "
                  "peak RSS ratio | model size ratio |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for c in report["comparisons"]:
            lines.append(f"| {c['student']} | {c['runtime']} | {c['points']} | {c['batch']} | {c['speedup']:.2f}x | "
                         f"{number(c['flops_ratio'])}x | {number(c['speedup_over_flops'] and 100 * c['speedup_over_flops'], '.0f')}% | "
                         f"{number(c['peak_rss_ratio'])} | {number(c['model_bytes_ratio'])} |")
    lines += energy_markdown(report) + stages_markdown(report) + accuracy_markdown(report)
    errors = [r for r in report["measurements"] if r.get("status") != "ok"]
    if errors:
        lines += ["", "## Not measured", ""]
        lines += [f"- {r['model']} {r['runtime']} N={r['points']} B={r['batch']}: [{r['error_kind']}] {r['error']}"
                  for r in errors]
    lines += ort_stages_markdown(report)
    lines += operators_markdown(report["operators"])
    if report["notes"]:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in report["notes"]]
    return "\n".join(lines) + "\n"


def telemetry_lines(telemetry: dict | None) -> list[str]:
    """The Jetson state a reader needs before trusting a figure, and which telemetry sources there were."""
    if not telemetry:
        return []
    lines = []
    board = telemetry.get("jetson")
    if board:
        lines.append(f"- Jetson: {board_text(board)}; " + clocks_text(board.get("clocks_mhz") or {}) + ".")
    lines.append("- Telemetry: " + "; ".join(f"{name} {state}" for name, state in telemetry["sources"].items()) + ".")
    return lines


def energy_markdown(report: dict) -> list[str]:
    rows = measured_telemetry(report)
    if not rows:
        return []
    lines = ["", "## Energy and validity", "",
             "Energy over the steady window (after warm-up, the timed calls only), from the named rail or counter; "
             "a measurement is invalid when a watched clock fell by more than 10 % or anything throttled.", "",
             "| model | runtime | points | batch | mean W | mJ per call | mJ per cloud | source | valid |",
             "|---|---|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        t = r["telemetry"]
        lines.append(f"| {r['model']} | {r['runtime']} | {r['points']} | {r['batch']} | {number(t['power_w'])} | "
                     f"{number(t['energy_mj_per_call'])} | {number(t['energy_mj_per_cloud'])} | {t['energy_source'] or '-'} | "
                     f"{validity(r)} |")
    unknown = {reason for r in rows if r["telemetry"]["valid"] is None for reason in r["telemetry"]["invalid_reasons"]}
    return lines + [""] + [f"Validity unknown: {reason}." for reason in sorted(unknown)] if unknown else lines


def stages_markdown(report: dict) -> list[str]:
    rows = [r for r in report["measurements"] if r.get("status") == "ok" and r.get("stages_ms")]
    if not rows:
        return []
    names = stage_names(rows)
    lines = ["", "## Time by stage (median ms of extra runs: torch with timers at its modules, TensorRT with its "
             "per-layer profiler and synchronized copies, so read the split rather than the sum)", "",
             "| model | points | batch | " + " | ".join(names) + " |", "|---|---:|---:|" + "---:|" * len(names)]
    lines += [f"| {r['model']} | {r['points']} | {r['batch']} | " +
              " | ".join(number(r["stages_ms"].get(name)) for name in names) + " |" for r in rows]
    return lines


def accuracy_markdown(report: dict) -> list[str]:
    from foundry_edge.profiling.pareto import dominated_by

    by_runtime = accuracy_points(report)
    if not by_runtime:
        return []
    s = report["settings"]
    lines = ["", f"## Accuracy vs latency ({s['points'][0]} points, batch {min(s['batches'])})", "",
             "| runtime | model | median ms | accuracy % | dominated by |", "|---|---|---:|---:|---|"]
    for runtime, points in by_runtime.items():
        beaten = dominated_by(points)
        lines += [f"| {runtime} | {p['label']} | {p['cost']:.2f} | {p['accuracy']:.2f} | "
                  f"{', '.join(beaten[p['label']]) or 'none (on the front)'} |" for p in points]
    return lines


def operators_markdown(operators: list[dict], top: int = 8) -> list[str]:
    lines = []
    for row in operators:
        head = f"### {row['model']}, ONNX Runtime CPU, N={row['points']} B={row['batch']}"
        if row.get("status") != "ok":
            lines += ["", head, "", f"not profiled: {row.get('error')}"]
            continue
        lines += ["", head, "", "| operator | ms / run | % | nodes |", "|---|---:|---:|---:|"]
        lines += [f"| {op['op_type']} | {op['ms_per_run']:.2f} | {op['percent']:.1f} | {op['nodes']} |"
                  for op in row["operators"][:top]]
    return (["", "## Where the time goes (by operator)"] + lines) if lines else []


def ort_stages_markdown(report: dict) -> list[str]:
    """Time by stage (each stage timed on its own; `accounted` = stages / the unsplit call) and the speed-up
    with and without grouping."""
    rows = stage_table(report["operators"])
    if not rows:
        return []
    lines = ["", "## Time by stage (ONNX Runtime CPU)", "",
             "Each stage timed on its own: the host's preprocessing, then the graph cut at its grouping (the nodes "
             "that depend on no weight) into two sessions; `accounted` is their sum over the unsplit call.", "",
             _md_row(STAGE_HEADER), _md_row(["---"] + ["---:"] * (len(STAGE_HEADER) - 1))]
    lines += [_md_row(r) for r in rows]
    speedups = stage_speedup_table(report.get("stage_comparisons", []))
    if speedups:
        lines += ["", _md_row(SPEEDUP_HEADER), _md_row(["---"] + ["---:"] * (len(SPEEDUP_HEADER) - 1))]
        lines += [_md_row(r) for r in speedups]
    return lines


def _md_row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def write_reports(report: dict, out_dir: str | Path) -> dict[str, Path]:
    """report.json, report.md and report.html in `out_dir`, each written atomically."""
    from foundry_edge.fileio import write_json_atomic, write_text_atomic
    from foundry_edge.profiling.html import to_html

    out = Path(out_dir)
    return {"json": write_json_atomic(out / "report.json", report),
            "markdown": write_text_atomic(out / "report.md", to_markdown(report)),
            "html": write_text_atomic(out / "report.html", to_html(report))}
