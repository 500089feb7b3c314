"""Is a SuperToken assignment spread out, and how much do two assignments agree where it matters?

An agreement figure means something only if the assignment it compares is spread: a DSO that sends
every token to one SuperToken agrees with itself 100 % in FP32, FP16 and INT8 alike. So every place
that produces or compares assignments reports, per cloud:

- `used`: how many SuperTokens receive at least one token;
- `entropy`: the occupancy entropy H(counts / c) / log(s), 0 = one SuperToken, 1 = uniform;
- `largest_share`: the share of the cloud's tokens in its fullest SuperToken;

and flags the figures as uninformative when a model uses `COLLAPSED_AT` or fewer SuperTokens.
Numpy only: the TensorRT path (no torch) reports it too. Assignment values >= `num_supertokens` are
Foundry-Gate bypass slots; they are counted as `bypass_share`, not as SuperTokens.
"""

from __future__ import annotations

import numpy as np

COLLAPSED_AT = 2  # a mean of this many SuperTokens used or fewer makes agreement uninformative
LOW_MARGIN_QUANTILE = 0.1  # "low margin" tokens: the reference's lowest 10 % top-1 minus top-2 logit


def health_per_cloud(assignment: np.ndarray, num_supertokens: int) -> dict[str, np.ndarray]:
    """(B, c) int assignment -> {"used", "entropy", "largest_share", "bypass_share"}, each (B,)."""
    assignment = np.asarray(assignment).reshape(assignment.shape[0], -1).astype(np.int64)
    s = int(num_supertokens)
    counts = _counts(assignment, s)
    fused = assignment < s
    totals = np.maximum(counts.sum(axis=1, keepdims=True), 1)
    shares = counts / totals
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(shares > 0, shares * np.log(shares), 0.0)
    entropy = -plogp.sum(axis=1) / np.log(s) if s > 1 else np.zeros(len(counts))
    return {"used": (counts > 0).sum(axis=1), "entropy": entropy, "largest_share": shares.max(axis=1),
            "bypass_share": 1.0 - fused.mean(axis=1)}


def _counts(assignment: np.ndarray, s: int) -> np.ndarray:
    """(B, c) -> (B, s) tokens per SuperToken, bypass slots (>= s) left out."""
    return np.stack([np.bincount(row[row < s], minlength=s)[:s] for row in assignment])


def occupancy(assignment: np.ndarray, num_supertokens: int) -> list[float]:
    """(B, c) -> the share of all fused tokens that each of the s SuperTokens received, over every cloud."""
    assignment = np.asarray(assignment).reshape(len(assignment), -1).astype(np.int64)
    counts = _counts(assignment, int(num_supertokens)).sum(axis=0)
    return [float(x) for x in counts / max(int(counts.sum()), 1)]


def assignment_health(assignment: np.ndarray, num_supertokens: int | None) -> dict:
    """(B, c) assignment -> means over clouds plus `used_min` and whether agreement is informative.

    `num_supertokens` None (an ONNX or plan without its manifest/sidecar): s is estimated as the largest
    index + 1, so a gate's bypass slots count as SuperTokens; `num_supertokens_known` says so.
    """
    assignment = np.asarray(assignment)
    known = num_supertokens is not None
    s = int(num_supertokens) if known else int(assignment.max(initial=0)) + 1
    per_cloud = health_per_cloud(assignment, s)
    used_mean = float(per_cloud["used"].mean())
    return {"num_supertokens": s, "num_supertokens_known": known, "clouds": int(len(per_cloud["used"])),
            "used_mean": used_mean, "used_min": int(per_cloud["used"].min()),
            "entropy_mean": float(per_cloud["entropy"].mean()),
            "largest_share_mean": float(per_cloud["largest_share"].mean()),
            "bypass_share_mean": float(per_cloud["bypass_share"].mean()),
            "collapsed": used_mean <= COLLAPSED_AT}


def agreement_report(reference: np.ndarray, other: np.ndarray, num_supertokens: int | None,
                     margin: np.ndarray | None = None) -> dict:
    """Agreement of two (B, c) assignments, with the reference's health beside it.

    `margin` (B, c): the reference's top-1 minus top-2 assignment logit. Tokens in its lowest
    `LOW_MARGIN_QUANTILE` are the near-ties where a lower precision flips first; agreement over them
    alone shows what INT8/FP16 cost where it matters. Without margins, or with s = 1 (every margin
    +inf: there is no second SuperToken to flip to), that figure is None.
    """
    reference, other = np.asarray(reference), np.asarray(other)
    equal = reference == other
    health = assignment_health(reference, num_supertokens)
    report = {"agreement": float(equal.mean()), "flip_rate": float(1.0 - equal.mean()),
              "low_margin_agreement": None, "low_margin_threshold": None, "health": health,
              "informative": not health["collapsed"]}
    if margin is not None:
        margin = np.asarray(margin, dtype=np.float64)
        threshold = float(np.quantile(margin, LOW_MARGIN_QUANTILE, method="lower"))  # a real margin, inf-safe
        if np.isfinite(threshold):
            report["low_margin_agreement"] = float(equal[margin <= threshold].mean())
            report["low_margin_threshold"] = threshold
    return report


def describe(health: dict) -> str:
    """One line for a table or a log: 'SuperTokens used 11.2/16 (min 8), entropy 0.83, largest share 21 %'."""
    text = (f"SuperTokens used {health['used_mean']:.1f}/{health['num_supertokens']} (min {health['used_min']}), "
            f"entropy {health['entropy_mean']:.2f}, largest share {100 * health['largest_share_mean']:.0f} %")
    if health["bypass_share_mean"] > 0:
        text += f", gate bypass {100 * health['bypass_share_mean']:.0f} %"
    if not health.get("num_supertokens_known", True):
        text += " (s estimated: no manifest)"
    if health["collapsed"]:
        text += f": COLLAPSED (<= {COLLAPSED_AT} SuperTokens), assignment agreement is uninformative"
    return text
