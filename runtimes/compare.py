"""The one comparator: two dicts of named outputs, judged by a tolerance row per precision (Polygraphy's
Comparator: it knows nothing of backends). Export validation, `verify` and the calibration accuracy report
all measure with it.

FP32 is judged elementwise; FP16 and INT8 by cosine similarity and by the agreement of hard decisions
(SuperToken assignments, top-1 class): a near-tie argmax flips in lower precision and elementwise 1e-5
tolerances are a classic false alarm there (docs/platform-notes.md, "FP16 pitfalls").
The assignment agreement comes with the reference's SuperToken usage, the flip rate and the agreement
on its near-ties (foundry_edge/assignment_health.py): a collapsed assignment agrees 100 % regardless.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Dict, Iterable, Iterator, List, Optional, Sequence

import numpy as np

from foundry_edge.assignment_health import agreement_report
from foundry_edge.contracts.artifacts import PRECISIONS
from foundry_edge.errors import FoundryError

Outputs = Dict[str, np.ndarray]
LOGITS = ("logits", "seg_logits")
OPTIONAL = ("assignment_margin",)  # a diagnostic: exports from before it, or with --outputs, lack it
# Outputs judged by cosine, never elementwise, and why. The margin is top-1 minus top-2 of logits up to 100 x a
# cosine of centred keys: its absolute error is the logits' (it grows with the token count through the centring
# mean: 1e-3 at 4096 tokens in FP32), which relative to a margin near zero says nothing. A flip it explains is
# judged by near_tie_flips.
COSINE_ONLY = {"assignment_margin": "a difference of two logits: its error is theirs, not its own size's"}


@dataclass(frozen=True)
class Tolerance:
    """One row of TOLERANCES. Elementwise: max |a - b| / max |ref| <= max_rel, or max |a - b| <= atol (outputs
    near zero); max_rel None: not judged elementwise. min_cosine: the lowest per-cloud cosine; min_agreement:
    the lowest share of equal integer entries (assignments); min_top1: of equal argmax (None: not judged).
    `accuracy`: the accuracy report's targets (means over a held-out set, so stricter than the worst-cloud
    gates above that `verify` applies to a handful of clouds)."""

    max_rel: Optional[float] = 1e-4
    min_cosine: float = 0.99999
    min_agreement: float = 1.0
    min_top1: Optional[float] = None
    atol: float = 0.0
    accuracy: Dict[str, float] = field(default_factory=dict)


TOLERANCES = {
    # FP32 ONNX Runtime (graph as written) vs PyTorch at export: the graph must be the model.
    "export": Tolerance(),
    "fp32": Tolerance(max_rel=1e-3, atol=1e-4, min_cosine=0.9999, min_agreement=0.99, min_top1=0.99),
    "fp16": Tolerance(max_rel=None, min_cosine=0.99, min_agreement=0.9, min_top1=0.9,
                      accuracy={"assignment_agreement": 0.995}),
    "int8": Tolerance(max_rel=None, min_cosine=0.95, min_agreement=0.8, min_top1=0.8,
                      accuracy={"token_cosine_mean": 0.99, "assignment_agreement": 0.97, "top1_agreement": 0.98}),
}
# Rows by precision (contracts.artifacts.PRECISIONS); "export" is the export check's own row.


def tolerance(precision: str) -> Tolerance:
    """The row for a model's precision, or a one-line error naming the valid ones."""
    if precision not in PRECISIONS:
        raise FoundryError(f"expected --precision in {sorted(PRECISIONS)}, got {precision!r}")
    return TOLERANCES[precision]


# -- measuring -------------------------------------------------------------------------------------------
def output_metrics(ref: np.ndarray, got: np.ndarray, name: str = "") -> dict:
    """One output: {"shape"} on a mismatch, {"agreement"} for integers, {"nonfinite"} on NaN/inf, else
    {"max_abs", "max_rel", "cosine"} (+ "top1" for logits). Equal infinities count as equal (the
    assignment margin is +inf with one SuperToken)."""
    ref, got = np.asarray(ref), np.asarray(got)
    if ref.shape != got.shape:
        return {"shape": f"{list(got.shape)} != reference {list(ref.shape)}"}
    if np.issubdtype(ref.dtype, np.integer):
        return {"agreement": float(np.mean(ref == got)) if ref.size else 1.0}
    same_inf = np.isinf(ref) & (ref == got)
    nonfinite = int(((~np.isfinite(ref) | ~np.isfinite(got)) & ~same_inf).sum())
    if nonfinite:
        return {"nonfinite": nonfinite}
    ref64, got64 = (np.where(same_inf, 0.0, a.astype(np.float64)) for a in (ref, got))
    diff = np.abs(ref64 - got64)
    max_abs = float(diff.max()) if diff.size else 0.0
    scale = float(np.abs(ref64).max()) if ref64.size else 0.0
    metrics = {"max_abs": max_abs, "max_rel": max_abs / scale if scale > 0 else max_abs,
               "cosine": lowest_cosine(ref64, got64)}
    if name in LOGITS:
        metrics["top1"] = float((ref.argmax(-1) == got.argmax(-1)).mean())
    return metrics


def lowest_cosine(ref: np.ndarray, got: np.ndarray) -> float:
    """Cosine similarity per cloud (the first axis), flattened; the lowest. Two zero vectors count as 1."""
    a, b = ref.reshape(len(ref), -1), got.reshape(len(got), -1)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = (a * b).sum(axis=1)
    same_zero = (norms == 0) & (np.abs(a).sum(1) == np.abs(b).sum(1))
    cos = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), np.where(same_zero, 1.0, 0.0))
    return float(cos.min()) if cos.size else 1.0


def assignment_figures(ref: np.ndarray, got: np.ndarray, margin: Optional[np.ndarray],
                       num_supertokens: Optional[int]) -> dict:
    """What an assignment agreement is worth: flip rate, near-tie agreement and the reference's health."""
    report = agreement_report(ref, got, num_supertokens, margin)
    return {k: report[k] for k in ("flip_rate", "low_margin_agreement", "health", "informative")}


def near_tie_flips(ref: np.ndarray, got: np.ndarray, ref_margin: np.ndarray, got_margin: np.ndarray) -> dict:
    """Where two (B, c) assignments differ, and whether only at near-ties: a reference margin (top-1 minus
    top-2 logit) no larger than twice the largest difference of the two runs' own margins, which is how far
    their logits disagree. A bug flips tokens with clear margins. -> {"flips", "at_near_ties", "limit",
    "all_at_near_ties", "clouds" (B,) bool: clouds with a flip}."""
    ref_margin, got_margin = np.asarray(ref_margin, np.float64), np.asarray(got_margin, np.float64)
    finite = np.isfinite(ref_margin) & np.isfinite(got_margin)
    limit = 2.0 * float(np.abs(ref_margin - got_margin)[finite].max()) if finite.any() else 0.0
    flips = np.asarray(ref) != np.asarray(got)
    at_ties = flips & (ref_margin <= limit)
    return {"flips": int(flips.sum()), "at_near_ties": int(at_ties.sum()), "limit": limit,
            "all_at_near_ties": bool(at_ties.sum() == flips.sum()), "clouds": flips.reshape(len(flips), -1).any(1)}


def summary_metrics(ref: Outputs, out: Outputs, labels: Optional[np.ndarray] = None,
                    num_supertokens: Optional[int] = None) -> dict:
    """Means over a held-out set, for the accuracy report: token cosine (mean, min over tokens), centre,
    assignment and top-1 agreement, top-1 accuracy where labels exist; only those the outputs allow."""
    metrics: dict = {}
    if "tokens" in ref:
        a, b = ref["tokens"].astype(np.float64), out["tokens"].astype(np.float64)  # (B, G, D)
        cos = (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)
        metrics.update(token_cosine_mean=float(cos.mean()), token_cosine_min=float(cos.min()))
    if "centers" in ref:  # the same point picked (up to the normalisation's float rounding) = the same group
        same = np.all(np.abs(ref["centers"] - out["centers"]) <= 1e-5, axis=-1)
        metrics["center_agreement"] = float(same.mean())
    if "assignment" in ref:
        report = agreement_report(ref["assignment"], out["assignment"], num_supertokens, ref.get("assignment_margin"))
        metrics.update(assignment_agreement=report["agreement"], assignment_flip_rate=report["flip_rate"])
        if report["low_margin_agreement"] is not None:
            metrics["low_margin_assignment_agreement"] = report["low_margin_agreement"]
    if "logits" in ref:
        top_ref, top_out = ref["logits"].argmax(-1), out["logits"].argmax(-1)
        metrics["top1_agreement"] = float((top_ref == top_out).mean())
        if labels is not None:
            metrics["top1_accuracy"] = float((top_out == labels).mean())
    return metrics


# -- judging ---------------------------------------------------------------------------------------------
def for_output(tol: Tolerance, name: str) -> Tolerance:
    """The row as it applies to output `name` (COSINE_ONLY outputs are not judged elementwise)."""
    return replace(tol, max_rel=None) if name in COSINE_ONLY else tol


def failures(metrics: dict, tol: Tolerance, name: str = "") -> List[str]:
    """What in one output's metrics breaks `tol`, each as a short "measure > limit" (empty: it passes)."""
    tol = for_output(tol, name)
    if "shape" in metrics:
        return [f"shape {metrics['shape']}"]
    if "nonfinite" in metrics:
        return [f"{metrics['nonfinite']} NaN/inf values"]
    if "agreement" in metrics:
        return [] if metrics["agreement"] >= tol.min_agreement else [f"agreement < {tol.min_agreement:g}"]
    found = []
    if tol.max_rel is not None and metrics.get("max_rel") is not None and metrics["max_rel"] > tol.max_rel \
            and metrics["max_abs"] > tol.atol:
        found.append(f"rel > {tol.max_rel:g}" + (f" and abs > {tol.atol:g}" if tol.atol else ""))
    if metrics["cosine"] < tol.min_cosine:
        found.append(f"cos < {tol.min_cosine:g}")
    if tol.min_top1 is not None and metrics.get("top1", 1.0) < tol.min_top1:
        found.append(f"top-1 < {tol.min_top1:g}")
    return found


def criteria(metrics: dict, tol: Tolerance) -> str:
    """The rule a passing output met, in words."""
    if "agreement" in metrics:
        return f"agreement >= {tol.min_agreement}"
    return f"cosine >= {tol.min_cosine}" + (f", rel <= {tol.max_rel:g} or abs <= {tol.atol:g}"
                                        if tol.max_rel is not None else "")


@dataclass
class OutputCheck:
    name: str
    shape: tuple
    max_abs: Optional[float] = None
    max_rel: Optional[float] = None  # max |a - b| / max |ref|
    cosine: Optional[float] = None   # lowest over clouds
    agreement: Optional[float] = None  # integer outputs: share of equal entries
    top1: Optional[float] = None       # logits: share of equal argmax
    flip_rate: Optional[float] = None  # assignment: share of tokens sent to another SuperToken
    low_margin_agreement: Optional[float] = None  # assignment: agreement on the reference's near-ties
    health: Optional[dict] = None      # assignment: the reference's SuperToken usage
    informative: Optional[bool] = None  # assignment: False when the reference collapsed
    passed: bool = True
    detail: str = ""

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def compare_outputs(reference: Outputs, test: Outputs, precision: str,
                    num_supertokens: Optional[int] = None) -> List[OutputCheck]:
    """One check per output both sides have; an output only the reference has fails (an OPTIONAL one is noted).

    `precision`: a row of TOLERANCES. `num_supertokens`: the student's s (from its manifest or config); None
    estimates it from the assignment.
    """
    if precision not in TOLERANCES:
        raise FoundryError(f"expected a precision in {sorted(TOLERANCES)}, got {precision!r}")
    tol = TOLERANCES[precision]
    checks = []
    for name, ref in reference.items():
        if name not in test:
            optional = name in OPTIONAL
            checks.append(OutputCheck(name, tuple(ref.shape), passed=optional,
                                      detail="not in the tested model: not compared" if optional
                                      else "missing from the tested model"))
            continue
        checks.append(check_output(name, np.asarray(ref), np.asarray(test[name]), tol,
                                   reference.get("assignment_margin"), num_supertokens))
    return checks


def check_output(name: str, ref: np.ndarray, got: np.ndarray, tol: Tolerance, margin: Optional[np.ndarray] = None,
                 num_supertokens: Optional[int] = None) -> OutputCheck:
    """One output judged by `tol`; an assignment also gets its flip rate, near-tie agreement and health."""
    metrics = output_metrics(ref, got, name)
    check = OutputCheck(name, tuple(ref.shape), **{k: metrics.get(k) for k in
                                                    ("max_abs", "max_rel", "cosine", "agreement", "top1")})
    found = failures(metrics, tol, name)
    check.passed, check.detail = not found, "; ".join(found) or criteria(metrics, for_output(tol, name))
    if name == "assignment" and "agreement" in metrics:
        figures = assignment_figures(ref, got, margin, num_supertokens)
        check.flip_rate, check.low_margin_agreement = figures["flip_rate"], figures["low_margin_agreement"]
        check.health, check.informative = figures["health"], figures["informative"]
        if not check.informative:
            check.detail += (f"; UNINFORMATIVE: the reference uses {figures['health']['used_mean']:.1f} of "
                             f"{figures['health']['num_supertokens']} SuperTokens (collapsed)")
    return check


# -- running two runtimes on the same clouds --------------------------------------------------------------
@dataclass
class VerifyReport:
    """Both runtimes' outputs on the same clouds, judged output by output at one precision's tolerances."""

    precision: str
    clouds: int
    checks: List[OutputCheck]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def to_dict(self) -> dict:
        return {"precision": self.precision, "clouds": self.clouds, "passed": self.passed,
                "checks": [c.to_dict() for c in self.checks]}


def verify(candidate, reference, clouds: Iterable[np.ndarray], batch: int = 4,
           precision: Optional[str] = None) -> VerifyReport:
    """`candidate` (e.g. an ONNX or a plan) against `reference` (e.g. the preset it came from) on the same
    clouds -> VerifyReport. The runtimes are loaded here if they are not yet, and left to their owner to
    close; `clouds` is anything yielding (N, 3) clouds (a foundry_edge.data.CloudLoader, an (M, N, 3) array);
    `precision` defaults to the candidate's. The verify command is this call with a table around it, so a
    script gets the same verdict as the command line."""
    precision = precision or candidate.precision
    tolerance(precision)
    points = np.stack(list(clouds))
    expected = run_batches(reference.load(), points, batch)
    got = run_batches(candidate.load(), points, batch)
    num_supertokens = reference.num_supertokens or candidate.num_supertokens
    return VerifyReport(precision, len(points), compare_outputs(expected, got, precision, num_supertokens))


def run_batches(runtime, points: np.ndarray, size: int) -> Outputs:
    """(M, N, 3) clouds through `runtime` in batches of `size` -> its outputs, concatenated on the batch axis."""
    return merge_batches([runtime.infer(chunk) for chunk in batches(points, size)])


def merge_batches(chunks: Sequence[Outputs]) -> Outputs:
    """Outputs of consecutive batches -> one dict, concatenated on the batch axis."""
    return {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}


def batches(points: np.ndarray, size: int) -> Iterator[np.ndarray]:
    """(M, N, 3) -> consecutive (<= size, N, 3) slices."""
    if size < 1:
        raise FoundryError(f"expected a batch of at least 1 cloud, got {size}: pass --batch 1 or more")
    for start in range(0, len(points), size):
        yield points[start:start + size]

