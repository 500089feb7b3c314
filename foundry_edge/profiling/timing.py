"""Timing like trtexec: warm up for a time, then run a number of iterations or for a duration.

Each iteration is one synchronous call (host in -> host out), timed with `time.perf_counter`; the raw
per-iteration samples are kept so the report can draw their distribution.
"""

from __future__ import annotations

import time
from typing import Callable

PERCENTILES = (90, 95, 99)
UNSTABLE_CV = 0.10  # a row whose coefficient of variation exceeds this is flagged unstable
P90_CONFIDENCE = 0.95  # the confidence of the p90 upper bound (MLPerf loadgen's early-stopping idea)


def time_calls(fn: Callable[[], object], warmup_s: float, iterations: int | None = None,
               duration_s: float | None = None, min_iterations: int = 3,
               on_start: Callable[[], object] | None = None) -> list[float]:
    """Call `fn` for `warmup_s` seconds untimed (at least once), then `iterations` times or for
    `duration_s` seconds (at least `min_iterations` times); return each timed call in milliseconds.
    `on_start` is called between the two (where telemetry marks the start of the steady window)."""
    if (iterations is None) == (duration_s is None):
        raise ValueError("give exactly one of iterations and duration_s")
    start = time.perf_counter()
    fn()
    while time.perf_counter() - start < warmup_s:
        fn()
    if on_start is not None:
        on_start()
    samples: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
        if iterations is not None:
            if len(samples) >= iterations:
                return samples
        elif len(samples) >= min_iterations and time.perf_counter() - start >= duration_s:
            return samples


def summarize(samples_ms: list[float]) -> dict[str, float]:
    """Per-iteration milliseconds -> min, mean, median, p90, p95, p99, std (population), max."""
    import numpy as np

    values = np.asarray(samples_ms, dtype=np.float64)
    out = {"min": values.min(), "mean": values.mean(), "median": np.median(values)}
    out.update({f"p{q}": np.percentile(values, q) for q in PERCENTILES})
    out.update(std=values.std(), max=values.max())
    out = {key: float(value) for key, value in out.items()}
    out["cv"] = out["std"] / out["mean"] if out["mean"] > 0 else 0.0
    out["p90_upper_bound"] = p90_upper_bound(samples_ms)
    return out


def p90_upper_bound(samples_ms: list[float], confidence: float = P90_CONFIDENCE) -> float | None:
    """An upper bound on the true p90 latency that holds with `confidence`, from the order statistics.

    The k-th smallest of n samples exceeds the true p90 when at least k samples fall at or below it;
    the count below the p90 is Binomial(n, 0.9), so the smallest k with P(count < k) >= confidence gives
    the bound (distribution-free, as MLPerf loadgen's early stopping). None when n is too small for it.
    """
    import math

    values = sorted(samples_ms)
    n = len(values)
    cumulative = 0.0
    for k in range(n + 1):  # cumulative = P(count <= k - 1) after adding term k - 1
        if cumulative >= confidence:
            return float(values[k - 1])
        cumulative += math.exp(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
                               + k * math.log(0.9) + (n - k) * math.log(0.1))
    return None
