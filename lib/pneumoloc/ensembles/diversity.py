"""How different are the members? Errors, decisions and maps compared pairwise.

An ensemble helps only where its members err on different images (Kuncheva &
Whitaker 2003). Classification diversity here:

* error correlation — Pearson correlation (the phi coefficient) of the 0/1 error
  indicators of two members on the same images;
* pairwise disagreement — the share of images on which two members' decisions differ.

Map diversity (on the same images, same map size):

* map agreement — per image, the Spearman rank correlation of two members' maps
  over pixels (a constant map has no ranking: NaN, counted by the caller);
* per-pixel spread — the standard deviation over members of each pixel of the
  per-image normalized maps (where the ensemble map is uncertain).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

__all__ = [
    "errors", "error_correlation", "disagreement", "ErrorDiversity", "error_diversity", "map_rank_correlation",
    "map_agreement_matrix", "pixel_spread", "per_image_agreement", "contrast_cases",
]


def errors(y: np.ndarray, probs: np.ndarray, threshold: float | Sequence[float] = 0.5) -> np.ndarray:
    """0/1 error indicators ``[n, M]`` of members' decisions ``prob >= threshold``."""
    probs = np.atleast_2d(np.asarray(probs, dtype=float).T).T
    t = np.broadcast_to(np.asarray(threshold, dtype=float), (probs.shape[1],))
    return ((probs >= t).astype(int) != np.asarray(y).astype(int)[:, None]).astype(float)


def _frame(mat: np.ndarray, names: Sequence[str] | None) -> pd.DataFrame:
    names = list(names) if names is not None else [str(i) for i in range(mat.shape[0])]
    return pd.DataFrame(mat, index=names, columns=names)


def error_correlation(err: np.ndarray, names: Sequence[str] | None = None) -> pd.DataFrame:
    """Pearson correlation of error indicators ``[n, M]``; NaN where a member never (or
    always) errs, since its errors do not vary."""
    err = np.asarray(err, dtype=float)
    c = err - err.mean(axis=0)
    sd = np.sqrt((c**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        mat = (c.T @ c) / np.outer(sd, sd)
    return _frame(mat, names)


def disagreement(decisions: np.ndarray, names: Sequence[str] | None = None) -> pd.DataFrame:
    """Share of images where two members' 0/1 decisions ``[n, M]`` differ."""
    d = np.asarray(decisions, dtype=float)
    mat = (d.T @ (1 - d) + (1 - d).T @ d) / d.shape[0]
    return _frame(mat, names)


@dataclass(frozen=True)
class ErrorDiversity:
    """Members' errors at one threshold on the same images, and how they overlap."""

    errors: np.ndarray  # [n, M] 0/1 error indicators
    correlation: pd.DataFrame  # member x member error correlation (phi)
    disagreement: pd.DataFrame  # member x member share of images with differing decisions

    @property
    def errors_per_member(self) -> dict[str, int]:
        """Number of images each member gets wrong."""
        return {m: int(e) for m, e in zip(self.correlation.index, self.errors.sum(axis=0))}


def error_diversity(y: np.ndarray, probs: np.ndarray, names: Sequence[str] | None = None,
                    threshold: float = 0.5) -> ErrorDiversity:
    """:func:`errors`, :func:`error_correlation` and :func:`disagreement` of the members'
    decisions ``prob >= threshold`` (``probs`` is ``[n, M]``)."""
    err = errors(y, probs, threshold)
    decisions = (np.asarray(probs, dtype=float) >= threshold).astype(int)
    return ErrorDiversity(err, error_correlation(err, names), disagreement(decisions, names))


def _row_ranks(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(x.reshape(x.shape[0], -1), axis=1)  # mid-ranks for ties (Spearman)


def map_rank_correlation(maps_a: np.ndarray, maps_b: np.ndarray) -> np.ndarray:
    """Per-image Spearman correlation over pixels of two map stacks ``[N, H, W]`` -> ``[N]``.

    Spearman = Pearson correlation of mid-ranks; NaN for an image where either map is
    constant.
    """
    a, b = np.asarray(maps_a, dtype=np.float64), np.asarray(maps_b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"map stacks differ in shape: {a.shape} vs {b.shape}")
    ra, rb = _row_ranks(a), _row_ranks(b)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    den = np.sqrt((ra**2).sum(axis=1) * (rb**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (ra * rb).sum(axis=1) / np.where(den > 0, den, 1), np.nan)


def map_agreement_matrix(maps: np.ndarray, names: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean (over images, NaN skipped) per-image Spearman correlation for each pair of
    members; ``maps`` is ``[M, N, H, W]``. The diagonal is 1."""
    maps = np.asarray(maps)
    m = maps.shape[0]
    mat = np.eye(m)
    for i in range(m):
        for j in range(i + 1, m):
            r = map_rank_correlation(maps[i], maps[j])
            mat[i, j] = mat[j, i] = np.nanmean(r) if np.isfinite(r).any() else np.nan
    return _frame(mat, names)


def pixel_spread(maps: np.ndarray) -> np.ndarray:
    """Per-pixel standard deviation over members (ddof 0) of ``[M, N, H, W]`` -> ``[N, H, W]``."""
    maps = np.asarray(maps)
    if maps.ndim != 4:
        raise ValueError(f"maps must be [members, images, H, W], got shape {maps.shape}")
    return maps.astype(np.float64).std(axis=0).astype(np.float32)  # float64: no drift on float16 input


def per_image_agreement(maps: np.ndarray) -> np.ndarray:
    """Mean over member pairs of :func:`map_rank_correlation`, per image ``[N]`` from ``[M, N, H, W]``;
    NaN where no pair has a ranking (every member's map constant)."""
    m = len(maps)
    pairs = np.array([map_rank_correlation(maps[i], maps[j]) for i in range(m) for j in range(i + 1, m)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: images without a ranking
        return np.nanmean(np.where(np.isfinite(pairs), pairs, np.nan), axis=0)


def contrast_cases(agreement: np.ndarray, has_box: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``(n+1)//2`` images where members agree least and the ``n//2`` where they agree
    most, preferring images with a box; empty when agreement is undefined everywhere."""
    defined = np.isfinite(agreement)
    pool = np.flatnonzero(has_box & defined)
    pool = pool if len(pool) else np.flatnonzero(defined)
    order = pool[np.argsort(agreement[pool])]
    return np.unique(np.r_[order[: (n + 1) // 2], order[len(order) - n // 2:]]).astype(int)
