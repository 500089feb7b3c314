"""The evaluation report: report.json, report.md and its PNG pictures, every file written atomically."""

from __future__ import annotations

from pathlib import Path

from foundry_edge.errors import require
from foundry_edge.fileio import atomic_path, write_json_atomic, write_text_atomic


def cosine_summary(cosine) -> dict:
    import numpy as np

    p5, p50, p95 = np.percentile(cosine, [5, 50, 95])
    return {"mean": float(cosine.mean()), "p5": float(p5), "median": float(p50), "p95": float(p95),
            "tokens": int(cosine.size)}


def save_figure(fig, path: Path) -> Path:
    """A matplotlib figure to PNG through a temporary file, so a failed save leaves nothing."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return path


def plot_agreement(agreement: dict, class_names, title: str, out_dir: Path, stem: str) -> list[str]:
    """Two pictures: the cosine histogram and teacher/student pooled tokens in one PCA plane."""
    require("matplotlib", "report")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from foundry_edge.training.evaluate import pca_2d

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.hist(agreement["cosine"], bins=50, range=(-1, 1), color="tab:blue")
    ax.set(xlabel="cosine(student token, teacher token)", ylabel="tokens", title=title)
    cosine_png = save_figure(fig, out_dir / f"{stem}-cosine.png")
    plt.close(fig)

    teacher_xy, student_xy = pca_2d(agreement["teacher_pooled"], agreement["student_pooled"])
    fig, axes = plt.subplots(1, 2, figsize=(9, 4), sharex=True, sharey=True)
    labels = agreement["labels"]
    for ax, xy, name in zip(axes, (teacher_xy, student_xy), ("teacher", "student")):
        for c in sorted(set(labels.tolist())):
            keep = labels == c
            label = class_names[c] if class_names and c < len(class_names) else str(c)
            ax.scatter(xy[keep, 0], xy[keep, 1], s=6, label=label, color=plt.cm.tab20(c % 20))
        ax.set(title=f"{name} (teacher's PCA plane)", xlabel="PC 1", ylabel="PC 2")
    axes[1].legend(fontsize=6, markerscale=2, loc="best")
    embed_png = save_figure(fig, out_dir / f"{stem}-embedding.png")
    plt.close(fig)
    return [cosine_png.name, embed_png.name]


def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def render_markdown(report: dict) -> str:
    """The report as Markdown: one table of models, one section per teacher/student comparison."""
    lines = ["# foundry-edge evaluation", "", f"Data: `{report['data']}` split `{report['split']}`.", "",
             "| model | kind | params (M) | clouds | acc % | class acc % | mIoU_C % | mIoU_I % | few-shot NC % | few-shot LP % |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in report["models"]:
        cls, seg, fs = row.get("classification", {}), row.get("segmentation", {}), row.get("few_shot", {})
        nc, lp = fs.get("nearest_centroid", {}), fs.get("linear_probe", {})
        shot = (lambda r: f"{r['mean']:.1f} ± {r['std']:.1f}" if r else "-")
        lines.append(f"| {row['spec']} ({row['name']}) | {row['kind']} | {row['params'] / 1e6:.2f} | {row['clouds']} | "
                     f"{_fmt(cls.get('overall'))} | {_fmt(cls.get('class_mean'))} | {_fmt(seg.get('class_miou'))} | "
                     f"{_fmt(seg.get('instance_miou'))} | {shot(nc)} | {shot(lp)} |")
    if any("few_shot" in r for r in report["models"]):
        fs = next(r["few_shot"] for r in report["models"] if "few_shot" in r)
        lines += ["", f"Few-shot: {fs['way']}-way {fs['shot']}-shot, {fs['query']} queries per class, "
                      f"{fs['episodes']} episodes, on frozen mean+max pooled tokens; NC nearest centroid, "
                      "LP linear probe (logistic regression)."]
    students = [r for r in report["models"] if r.get("assignment_health")]
    if students:
        from foundry_edge.assignment_health import describe

        lines += ["", "## Assignment health (eval mode, hard argmax)", ""]
        lines += [f"- {r['spec']}: {describe(r['assignment_health'])}" for r in students]
    for comp in report.get("token_agreement", []):
        c = comp["cosine"]
        lines += ["", f"## {comp['student']} against {comp['teacher']}", "",
                  f"Per-token cosine similarity to the teacher's normalised tokens over {c['tokens']} tokens: "
                  f"mean {c['mean']:.3f}, 5th percentile {c['p5']:.3f}, median {c['median']:.3f}, "
                  f"95th percentile {c['p95']:.3f}.", ""]
        lines += [f"![{name}]({name})" for name in comp["pictures"]]
    return "\n".join(lines) + "\n"


def write_report(report: dict, out_dir) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    json_path = write_json_atomic(out_dir / "report.json", report)
    md_path = write_text_atomic(out_dir / "report.md", render_markdown(report))
    return json_path, md_path
