"""Compare two runtimes' outputs on the same clouds, with tolerances per precision (Polygraphy's Comparator).

FP32 is judged elementwise; FP16 and INT8 by cosine similarity and by the agreement of hard decisions
(SuperToken assignments, top-1 class): a near-tie argmax flips in lower precision and elementwise 1e-5
tolerances are a classic false alarm there (../shared/research/deploy-stack.md, "FP16 pitfalls").
The assignment agreement comes with the reference's SuperToken usage, the flip rate and the agreement
on its near-ties (foundry_edge/assignment_health.py): a collapsed assignment agrees 100 % regardless.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np

from foundry_edge.assignment_health import agreement_report
from foundry_edge.errors import FoundryError


@dataclass(frozen=True)
class Tolerance:
    atol: Optional[float]  # elementwise |a - b| <= atol + rtol * max|ref|; None: not judged elementwise
    rtol: float
    cosine: float          # the lowest per-cloud cosine similarity allowed
    agreement: float       # the lowest share of equal assignments / top-1 classes allowed


TOLERANCES = {
    "fp32": Tolerance(atol=1e-4, rtol=1e-3, cosine=0.9999, agreement=0.99),
    "fp16": Tolerance(atol=None, rtol=0.0, cosine=0.99, agreement=0.9),
    "int8": Tolerance(atol=None, rtol=0.0, cosine=0.95, agreement=0.8),
}
OPTIONAL = ("assignment_margin",)  # a diagnostic: exports from before it, or with --outputs, lack it


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


def compare_outputs(reference: Dict[str, np.ndarray], test: Dict[str, np.ndarray], precision: str,
                    num_supertokens: Optional[int] = None) -> List[OutputCheck]:
    """One check per output both sides have; an output only the reference has fails (an OPTIONAL one is noted).

    `num_supertokens`: the student's s (from its manifest or config); None estimates it from the assignment.
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
        check = compare_one(name, np.asarray(ref), np.asarray(test[name]), tol)
        if name == "assignment" and check.agreement is not None:
            judge_assignment(check, np.asarray(ref), np.asarray(test[name]), reference.get("assignment_margin"),
                             num_supertokens)
        checks.append(check)
    return checks


def judge_assignment(check: OutputCheck, ref: np.ndarray, got: np.ndarray, margin: Optional[np.ndarray],
                     num_supertokens: Optional[int]) -> None:
    """Add the flip rate, near-tie agreement and the reference's health; flag an uninformative agreement."""
    report = agreement_report(ref, got, num_supertokens, margin)
    check.flip_rate, check.low_margin_agreement = report["flip_rate"], report["low_margin_agreement"]
    check.health, check.informative = report["health"], report["informative"]
    if not check.informative:
        check.detail += (f"; UNINFORMATIVE: the reference uses {report['health']['used_mean']:.1f} of "
                         f"{report['health']['num_supertokens']} SuperTokens (collapsed)")


def compare_one(name: str, ref: np.ndarray, got: np.ndarray, tol: Tolerance) -> OutputCheck:
    check = OutputCheck(name, tuple(ref.shape))
    if ref.shape != got.shape:
        check.passed, check.detail = False, f"shape {tuple(got.shape)} != {tuple(ref.shape)}"
        return check
    if np.issubdtype(ref.dtype, np.integer):
        check.agreement = float((ref == got).mean()) if ref.size else 1.0
        check.passed = check.agreement >= tol.agreement
        check.detail = f"agreement >= {tol.agreement}"
        return check
    same_inf = np.isinf(ref) & (ref == got)  # the margin is +inf with one SuperToken: equal infs agree
    ref64, got64 = (np.where(same_inf, 0.0, a.astype(np.float64)) for a in (ref, got))
    if not (np.isfinite(ref64).all() and np.isfinite(got64).all()):
        check.passed, check.detail = False, "non-finite values"
        return check
    diff = np.abs(ref64 - got64)
    scale = float(np.abs(ref64).max()) if ref.size else 0.0
    check.max_abs = float(diff.max()) if ref.size else 0.0
    check.max_rel = check.max_abs / scale if scale > 0 else check.max_abs
    check.cosine = lowest_cosine(ref64, got64)
    failures = []
    if tol.atol is not None and check.max_abs > tol.atol + tol.rtol * scale:
        failures.append(f"max abs {check.max_abs:.2e} > {tol.atol + tol.rtol * scale:.2e}")
    if check.cosine < tol.cosine:
        failures.append(f"cosine {check.cosine:.6f} < {tol.cosine}")
    if name in ("logits", "seg_logits"):
        check.top1 = float((ref.argmax(-1) == got.argmax(-1)).mean())
        if check.top1 < tol.agreement:
            failures.append(f"top-1 agreement {check.top1:.3f} < {tol.agreement}")
    check.passed = not failures
    check.detail = "; ".join(failures) or (f"cosine >= {tol.cosine}" + (f", abs <= {tol.atol}+{tol.rtol}*max|ref|"
                                                                        if tol.atol is not None else ""))
    return check


def lowest_cosine(ref: np.ndarray, got: np.ndarray) -> float:
    """Cosine similarity per cloud (the first axis), flattened; the lowest. Two zero vectors count as 1."""
    a, b = ref.reshape(len(ref), -1), got.reshape(len(got), -1)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = (a * b).sum(axis=1)
    same_zero = (norms == 0) & (np.abs(a).sum(1) == np.abs(b).sum(1))
    cos = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), np.where(same_zero, 1.0, 0.0))
    return float(cos.min()) if cos.size else 1.0


def merge_batches(chunks: Sequence[Dict[str, np.ndarray]]) -> Dict[str, np.ndarray]:
    """Outputs of consecutive batches -> one dict, concatenated on the batch axis."""
    return {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}


def batches(points: np.ndarray, size: int) -> Iterator[np.ndarray]:
    """(M, N, 3) -> consecutive (<= size, N, 3) slices."""
    if size < 1:
        raise FoundryError(f"expected a batch of at least 1 cloud, got {size}: pass --batch 1 or more")
    for start in range(0, len(points), size):
        yield points[start:start + size]


@dataclass
class Clouds:
    """Clouds as a runtime takes them, and what was done to each on the way (`run` says it, `run -o` saves origins)."""

    points: np.ndarray  # (M, N, 3) float32
    names: List[str]
    origins: np.ndarray  # (M, 3) float64: a file's coordinates are points + origin (zeros: not moved)
    read: List[int]      # points read from each file (generated, for synthetic shapes)
    dropped: List[int]   # of those, points with NaN/Inf dropped (drop_invalid)
    seed: int = 0

    def notes(self) -> List[str]:
        """One line per cloud: points read, dropped, recentred, and resampled to N by which rule."""
        lines = []
        for name, read, dropped, origin in zip(self.names, self.read, self.dropped, self.origins):
            steps = [f"{read} points {'generated' if name.startswith('synthetic:') else 'read'}"]
            if dropped:
                steps.append(f"{dropped} with NaN/Inf dropped")
            if origin.any():
                steps.append(f"recentred on origin ({', '.join(f'{v:.10g}' for v in origin)}) in float64")
            steps.append(resampling(read - dropped, self.points.shape[1], self.seed))
            lines.append(f"{name}: {', '.join(steps)}")
        return lines


def resampling(found: int, n: int, seed: int) -> str:
    """What foundry_edge.data.transforms.resample does to a cloud of `found` points, in words."""
    if found > n:
        return f"subsampled to {n} by a random choice without repeats (seed {seed})"
    if found < n:
        return f"padded to {n} by repeating {n - found} randomly drawn points (every point kept once, seed {seed})"
    return f"all {n} used"


def gather_clouds(paths: Sequence[str], num_points: int, samples: int, seed: int = 0, min_points: int = 1,
                  drop_invalid: bool = False) -> Clouds:
    """Files resampled to `num_points` (or `samples` synthetic shapes) -> Clouds, with what was done to each.

    A file with fewer than `min_points` (the model's group size) is refused: resampling would only repeat points.
    NaN/Inf points are refused unless `drop_invalid` drops them; a file far from its origin comes back recentred
    (foundry_edge.data.read_cloud).
    """
    if not num_points:
        raise FoundryError("expected the model to say how many points a cloud has, found a dynamic point axis and "
                           "no manifest: keep <stem>.manifest.json beside the ONNX, or export with --static-points")
    if paths:
        from foundry_edge.data.readers import cloud_from_table, read_table
        from foundry_edge.data.transforms import resample

        clouds, origins, read, dropped = [], [], [], []
        for p in paths:
            cloud, origin, keep = cloud_from_table(read_table(Path(p)), Path(p), min_points=min_points,
                                                   drop_invalid=drop_invalid)
            clouds.append(resample(cloud, num_points, seed))
            origins.append(origin)
            dropped.append(0 if keep is None else int((~keep).sum()))
            read.append(len(cloud) + dropped[-1])
        return Clouds(np.stack(clouds).astype(np.float32), [str(p) for p in paths], np.stack(origins), read, dropped,
                      seed)
    from foundry_edge.data.synthetic import SyntheticShapes

    if samples < 1:
        raise FoundryError(f"expected --samples of at least 1 synthetic cloud, got {samples}: pass a positive count")
    shapes = SyntheticShapes(samples, num_points, seed=seed, split="verify")
    items = list(shapes)
    return Clouds(np.stack([it["points"] for it in items]).astype(np.float32),
                  [f"synthetic:{shapes.classes[it['label']]}" for it in items], np.zeros((len(items), 3)),
                  [num_points] * len(items), [0] * len(items), seed)
