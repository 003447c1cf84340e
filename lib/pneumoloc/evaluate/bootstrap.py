"""Bootstrap confidence intervals resampled by patient.

Images of one patient are correlated, so every interval in pneumoloc resamples
*patients* with replacement (a cluster bootstrap) and takes all images of each
drawn patient. ``paired_bootstrap`` applies the same resamples to two systems
scored on the same images, so the interval is on their difference.

Intervals are percentile intervals (Efron & Tibshirani 1993, ch. 13). A resample
on which the statistic is undefined (e.g. ROC-AUC with one class) is dropped and
counted; the count is returned so a table can say so.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

__all__ = ["Estimate", "percentile_interval", "patient_resamples", "bootstrap_ci", "paired_bootstrap"]


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a percentile confidence interval."""

    value: float
    low: float
    high: float
    n_boot: int  # resamples on which the statistic was defined
    dropped: int = 0  # resamples on which it was not (NaN or error)

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}value": self.value, f"{prefix}low": self.low, f"{prefix}high": self.high}


def patient_resamples(groups: Sequence, n_boot: int = 1000, seed: int = 0) -> list[np.ndarray]:
    """Index arrays of bootstrap resamples that draw whole groups (patients) with replacement.

    Args:
        groups: one group label per row (e.g. ``patient_id``).
        n_boot: number of resamples.
        seed: seed of the generator; the same seed gives the same resamples.

    Returns:
        ``n_boot`` integer arrays of row indices.
    """
    groups = np.asarray(groups)
    if groups.size == 0:
        raise ValueError("patient_resamples: groups is empty; a bootstrap needs at least one row")
    uniq, inverse = np.unique(groups, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    counts = np.bincount(inverse, minlength=len(uniq))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    # one draw of n_boot x G patients is the same stream as n_boot draws of G (the generator
    # keeps its own 32-bit buffer); each resample lists its drawn patients' rows in draw order
    drawn = np.random.default_rng(seed).integers(0, len(uniq), (n_boot, len(uniq)))
    lengths = counts[drawn].ravel()
    first = np.cumsum(lengths) - lengths  # where each drawn patient's rows begin in the flat output
    pos = np.repeat(starts[drawn].ravel() - first, lengths) + np.arange(lengths.sum())
    return np.split(order[pos], np.cumsum(counts[drawn].sum(axis=1))[:-1]) if n_boot else []


def percentile_interval(values, level: float = 0.95, axis: int | None = None):
    """Bounds ``(low, high)`` of the central ``level`` percentile interval of resampled values
    (numpy's linear quantiles); ``axis=0`` gives pointwise bands of stacked curves."""
    alpha = (1 - level) / 2
    low, high = np.quantile(np.asarray(values, dtype=float), [alpha, 1 - alpha], axis=axis)
    return low, high


def _interval(point: float, stats: list[float], dropped: int, level: float) -> Estimate:
    arr = np.asarray(stats, dtype=float)
    if arr.size == 0:
        return Estimate(point, float("nan"), float("nan"), 0, dropped)
    low, high = percentile_interval(arr, level)
    return Estimate(float(point), float(low), float(high), int(arr.size), dropped)


def _safe(stat: Callable[..., float], *args) -> float:
    try:
        v = float(stat(*args))
    except ValueError:
        return float("nan")
    return v


def bootstrap_ci(stat: Callable[..., float], *arrays: np.ndarray, groups: Sequence,
                 n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> Estimate:
    """Point estimate of ``stat(*arrays)`` with a patient-resampled percentile CI.

    Args:
        stat: function of row-aligned arrays returning a float (may raise ValueError
            or return NaN on degenerate resamples; those are dropped and counted).
        arrays: row-aligned arrays (first axis = images).
        groups: patient id per row.
    """
    arrays = tuple(np.asarray(a) for a in arrays)
    point = _safe(stat, *arrays)
    stats, dropped = [], 0
    for idx in patient_resamples(groups, n_boot, seed):
        v = _safe(stat, *(a[idx] for a in arrays))
        if np.isfinite(v):
            stats.append(v)
        else:
            dropped += 1
    return _interval(point, stats, dropped, level)


def paired_bootstrap(stat: Callable[..., float], arrays_a: Sequence[np.ndarray],
                     arrays_b: Sequence[np.ndarray], groups: Sequence, n_boot: int = 1000,
                     level: float = 0.95, seed: int = 0) -> Estimate:
    """CI of ``stat(*arrays_a) - stat(*arrays_b)`` using the same patient resamples for both.

    Both systems must be scored on the same rows (same images, same order).
    """
    a = tuple(np.asarray(x) for x in arrays_a)
    b = tuple(np.asarray(x) for x in arrays_b)
    point = _safe(stat, *a) - _safe(stat, *b)
    stats, dropped = [], 0
    for idx in patient_resamples(groups, n_boot, seed):
        v = _safe(stat, *(x[idx] for x in a)) - _safe(stat, *(x[idx] for x in b))
        if np.isfinite(v):
            stats.append(v)
        else:
            dropped += 1
    return _interval(point, stats, dropped, level)
