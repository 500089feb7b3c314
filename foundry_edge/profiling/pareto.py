"""The accuracy/cost trade-off as a Pareto front: which configurations no other one beats on both.

A point is dominated when another costs no more (latency or energy) and scores no less (accuracy), and
is strictly better on one of the two. The front is what is left; its points sorted by cost.
"""

from __future__ import annotations


def dominated_by(points: list[dict], cost: str = "cost", score: str = "accuracy") -> dict[str, list[str]]:
    """{label: [labels of the points that dominate it]}; an empty list means it is on the front.
    Points without a cost or a score are left out."""
    usable = [p for p in points if p.get(cost) is not None and p.get(score) is not None]
    return {p["label"]: [q["label"] for q in usable if q is not p and q[cost] <= p[cost] and q[score] >= p[score]
                         and (q[cost] < p[cost] or q[score] > p[score])]
            for p in usable}


def front(points: list[dict], cost: str = "cost", score: str = "accuracy") -> list[dict]:
    """The non-dominated points, cheapest first."""
    beaten = dominated_by(points, cost, score)
    return sorted((p for p in points if beaten.get(p["label"]) == []), key=lambda p: p[cost])


def plot(ax, points: list[dict], xlabel: str, ylabel: str = "accuracy (%)", cost: str = "cost",
         score: str = "accuracy") -> None:
    """Draw the points (front filled, dominated hollow, a teacher as a square, the score's standard error
    as a bar where a point has "error"), the front as a step line and each point's label, on an axis."""
    usable = [p for p in points if p.get(cost) is not None and p.get(score) is not None]
    beaten = dominated_by(usable, cost, score)
    best = front(usable, cost, score)
    if best:
        xs, ys = [p[cost] for p in best], [p[score] for p in best]
        ax.step(xs, ys, where="post", color="#2a6f97", lw=1.2, alpha=0.7, label="Pareto front")
    for p in usable:
        on_front = not beaten[p["label"]]
        if p.get("error"):  # the score's standard error
            ax.errorbar([p[cost]], [p[score]], yerr=[p["error"]], fmt="none", ecolor="#aaa", capsize=3, zorder=2)
        marker = "s" if p.get("role") == "teacher" else "o"
        ax.scatter([p[cost]], [p[score]], marker=marker, s=60, zorder=3,
                   facecolors="#2a6f97" if on_front else "white", edgecolors="#2a6f97" if on_front else "#888")
        ax.annotate(p["label"], (p[cost], p[score]), textcoords="offset points", xytext=(6, 4), fontsize=8,
                    color="#222" if on_front else "#777")
    if usable:
        low = min(p[score] - (p.get("error") or 0) for p in usable)
        high = max(p[score] + (p.get("error") or 0) for p in usable)
        span = high - low
        ax.set_ylim(low - max(1.0, 0.15 * span), high + max(1.0, 0.15 * span))
        left, right = min(p[cost] for p in usable), max(p[cost] for p in usable)
        pad = max(0.1 * (right - left), 0.05 * right)
        ax.set_xlim(max(0.0, left - pad), right + 2 * pad)  # room for the labels on the right
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.grid(True, alpha=0.3)
    if best:
        ax.legend(fontsize=7, loc="lower right")
