"""How good metric answers are: SpatialVLM's measures plus rank correlation. Pure Python + numpy.

SpatialVLM (Chen et al., 2024, Table 2) reports, over quantitative questions, the share of answers that
state a number at all and the share within [0.5x, 2x] of the truth; we add [0.9x, 1.1x] (finer), the
median relative error, and Spearman's rank correlation, which is what a reward needs: that the
estimate rises and falls with the true distance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["metric_summary", "spearman"]


def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their positions), 1-based."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), float)
    sorted_values = values[order]
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and sorted_values[j + 1] == sorted_values[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation of two equally long sequences (NaN when undefined: fewer than 2
    pairs or a constant sequence)."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    if x.shape != y.shape:
        raise ValueError(f"sequences differ in length: {len(x)} and {len(y)}")
    if len(x) < 2:
        return math.nan
    rx, ry = _ranks(x), _ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt(float((rx * rx).sum() * (ry * ry).sum()))
    return float((rx * ry).sum() / denom) if denom > 0 else math.nan


def metric_summary(truth: Sequence[float], estimates: Sequence[float | None]) -> dict[str, float | int]:
    """The measures over paired true values and estimates (None: the answer stated no number).

    ``within_2x`` and ``within_10pct`` count unanswered questions as misses (as the paper does);
    ``spearman`` and ``median_rel_error`` use the answered ones.
    """
    if len(truth) != len(estimates):
        raise ValueError(f"{len(truth)} true values but {len(estimates)} estimates")
    n = len(truth)
    pairs = [(float(t), float(e)) for t, e in zip(truth, estimates, strict=True)
             if e is not None and math.isfinite(e)]
    answered = len(pairs)
    t = np.array([p[0] for p in pairs])
    e = np.array([p[1] for p in pairs])
    ratio = e / t if answered else np.array([])
    within_2x = int(((ratio >= 0.5) & (ratio <= 2.0)).sum()) if answered else 0
    within_10 = int(((ratio >= 0.9) & (ratio <= 1.1)).sum()) if answered else 0
    return {
        "n": n,
        "share_numeric": answered / n if n else math.nan,
        "within_2x": within_2x / n if n else math.nan,
        "within_10pct": within_10 / n if n else math.nan,
        "median_rel_error": float(np.median(np.abs(ratio - 1.0))) if answered else math.nan,
        "spearman": spearman(t, e) if answered >= 2 else math.nan,
    }
