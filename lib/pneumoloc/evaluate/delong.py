"""DeLong's test for two correlated ROC-AUCs, in the fast form of Sun & Xu (2014).

DeLong, DeLong & Clarke-Pearson (1988) estimate the covariance of k ROC-AUCs computed
on the same images from their *structural components*: for each positive image i,
``V10_i = mean_j psi(X_i, Y_j)`` and for each negative image j,
``V01_j = mean_i psi(X_i, Y_j)``, with ``psi(x, y) = 1 if x > y, 1/2 if x == y, else 0``.
Then ``S = S10 / m + S01 / n`` (eq. 4 of DeLong 1988), where ``S10``/``S01`` are the
sample covariances (ddof 1) of the components over the m positives / n negatives.

The naive computation costs O(m n); Sun & Xu (2014, IEEE SPL 21:1389) show that the
components follow from mid-ranks: with ``Tz`` the mid-ranks of all scores, ``Tx``
those within the positives and ``Ty`` within the negatives,
``V10 = (Tz_pos - Tx) / n`` and ``V01 = 1 - (Tz_neg - Ty) / m`` — O(N log N).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DeLongResult", "structural_components", "auc_covariance", "delong_test", "delong_ci"]


@dataclass(frozen=True)
class DeLongResult:
    """Outcome of DeLong's test of ``auc_a - auc_b`` (two-sided)."""

    auc_a: float
    auc_b: float
    diff: float  # auc_a - auc_b
    var: float  # variance of the difference
    z: float
    p_value: float


def _check(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).ravel()
    scores = np.atleast_2d(np.asarray(scores, dtype=float))
    if scores.shape[1] != y.size:
        raise ValueError(f"scores have {scores.shape[1]} columns but y has {y.size} labels")
    if not np.isin(y, [0, 1]).all():
        raise ValueError("y must hold 0/1 labels")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or inf")
    m, n = int((y == 1).sum()), int((y == 0).sum())
    if m == 0 or n == 0:
        raise ValueError(f"DeLong needs both classes; got {m} positives and {n} negatives")
    return y.astype(bool), scores


def structural_components(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUCs and DeLong's structural components via mid-ranks (Sun & Xu 2014, Alg. 2).

    Args:
        y: 0/1 labels, shape ``[N]``.
        scores: shape ``[k, N]`` (or ``[N]``); higher = more likely positive.

    Returns:
        ``aucs [k]``, ``v10 [k, m]`` (positives), ``v01 [k, n]`` (negatives).
    """
    from scipy.stats import rankdata

    pos, scores = _check(y, scores)
    x, yy = scores[:, pos], scores[:, ~pos]
    m, n = x.shape[1], yy.shape[1]
    tx = rankdata(x, axis=1)  # mid-ranks ("average") handle ties as psi = 1/2
    ty = rankdata(yy, axis=1)
    tz = rankdata(np.concatenate([x, yy], axis=1), axis=1)
    aucs = (tz[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    return aucs, v10, v01


def auc_covariance(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs ``[k]`` and their DeLong covariance matrix ``[k, k]`` (DeLong 1988, eq. 4)."""
    aucs, v10, v01 = structural_components(y, scores)
    m, n = v10.shape[1], v01.shape[1]
    if m < 2 or n < 2:
        raise ValueError(f"DeLong's variance needs >= 2 positives and >= 2 negatives; got {m} and {n}")
    s10 = np.atleast_2d(np.cov(v10, ddof=1))
    s01 = np.atleast_2d(np.cov(v01, ddof=1))
    return aucs, s10 / m + s01 / n


def delong_test(y: np.ndarray, score_a: np.ndarray, score_b: np.ndarray) -> DeLongResult:
    """Two-sided test of equal ROC-AUC for two scores on the same images.

    ``z = (A_a - A_b) / sqrt(L S L^T)`` with ``L = [1, -1]`` (DeLong 1988, eq. 5);
    when the variance is 0 (identical rankings) the result is ``z = 0, p = 1``.
    """
    from scipy.stats import norm

    aucs, cov = auc_covariance(y, np.vstack([np.ravel(score_a), np.ravel(score_b)]))
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    if var <= 1e-15:
        z, p = 0.0, 1.0
    else:
        z = diff / np.sqrt(var)
        p = float(2 * norm.sf(abs(z)))
    return DeLongResult(float(aucs[0]), float(aucs[1]), diff, max(var, 0.0), float(z), p)


def delong_ci(y: np.ndarray, score: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """ROC-AUC with DeLong's normal-approximation interval, clipped to [0, 1]."""
    from scipy.stats import norm

    aucs, cov = auc_covariance(y, np.ravel(score))
    half = norm.ppf(0.5 + level / 2) * np.sqrt(cov[0, 0])
    a = float(aucs[0])
    return a, max(0.0, a - half), min(1.0, a + half)
