"""Order statistics for benchmark samples (median, p90, p99) and ratios between them."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation between closest ranks."""
    if not samples:
        raise ValueError("no samples")
    xs = sorted(samples)
    if len(xs) == 1:
        return float(xs[0])
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


def summarize(samples: Sequence[float]) -> dict:
    """n, median, p90, p99, mean, min, max of the samples (same unit as the input)."""
    return {
        "n": len(samples),
        "median": percentile(samples, 50),
        "p90": percentile(samples, 90),
        "p99": percentile(samples, 99),
        "mean": sum(samples) / len(samples),
        "min": float(min(samples)),
        "max": float(max(samples)),
    }


def ratio(a: float, b: float) -> float:
    """a / b, or infinity when the baseline is zero."""
    return a / b if b else math.inf
