"""Exact average precision of pixel scores against a pixel mask, per image, in linear time.

AP is ``sklearn.metrics.average_precision_score``'s definition: AP = sum_n (R_n - R_{n-1}) P_n
over the distinct score thresholds, highest first (tied scores enter together). float16 maps in
[0, 1] take 15,361 distinct values (bit patterns 0x0000..0x3C00 are ordered like the values), so
AP is computed exactly from per-level counts in linear time; other inputs use an exact
sort-based path. :func:`pneumoloc.localize.metrics.localization_auprc` scores maps with it.
"""
from __future__ import annotations

import numpy as np

from .arrays import as_maps

__all__ = ["F16_LEVELS", "float16_codes", "level_counts", "ap_from_levels", "ap_from_sort",
           "average_precision"]

F16_LEVELS = 0x3C00 + 1  # float16 bit patterns of the values 0.0 .. 1.0, in increasing order


def float16_codes(maps) -> np.ndarray | None:
    """Level index 0..15360 (uint16 ``[N, M*M]``) of each value when the maps are exactly
    float16 values in [0, 1] (the stored format), else None (callers then use an exact
    sort-based path). Non-negative float16 bit patterns are ordered like their values."""
    m = as_maps(maps)
    if m.dtype != np.float16:
        m16 = m.astype(np.float16)
        if not np.array_equal(m16, m):
            return None
        m = m16
    codes = np.ascontiguousarray(m).view(np.uint16).reshape(len(m), -1)
    if codes.size and codes.max() > F16_LEVELS - 1:
        codes = np.where(codes == 0x8000, np.uint16(0), codes)  # -0.0 is 0.0
        if codes.max() > F16_LEVELS - 1:
            return None  # negative, > 1, NaN or inf values
    return codes


def level_counts(codes: np.ndarray) -> np.ndarray:
    """Per-image histograms of float16 level codes: int32 ``[N, F16_LEVELS]``, level 0 = 0.0."""
    out = np.zeros((len(codes), F16_LEVELS), np.int32)
    for i in range(len(codes)):  # per-image bincount: no int64 index array over the batch
        out[i] = np.bincount(codes[i], minlength=F16_LEVELS)
    return out


def ap_from_levels(codes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Exact AP per image from counts per float16 level, in linear time.

    Scanning thresholds from the top level down, precision at a level is
    (positives at or above it) / (pixels at or above it), and recall grows by the level's
    positives / all positives, so AP = sum over levels holding positives of
    pos_level * precision_level / P (= sklearn's sum_n (R_n - R_{n-1}) P_n).
    """
    ap = np.zeros(len(codes))
    n_pix = codes.shape[1]
    for i in range(len(codes)):
        positives = codes[i][labels[i]]
        if not positives.size:
            continue  # AP undefined without positives; the caller excludes the image
        hist = np.bincount(codes[i], minlength=F16_LEVELS)
        pos = np.bincount(positives, minlength=F16_LEVELS)
        lv = np.flatnonzero(pos)
        if lv.size:
            # pixels at or above level l = all pixels - pixels strictly below l
            at_or_above = n_pix - np.cumsum(hist)[lv] + hist[lv]
            k = pos[lv]
            tp = k.sum() - np.cumsum(k) + k  # positives at or above each positive level
            ap[i] = float(np.sum(k * (tp / at_or_above))) / k.sum()
    return ap


def ap_from_sort(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Exact AP per row for arbitrary float scores (sort, then credit each positive with the
    precision at the end of its tie group, as sklearn's distinct-threshold definition does)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    s = np.take_along_axis(scores, order, 1)
    y = np.take_along_axis(labels, order, 1).astype(np.float64)
    n, k = s.shape
    tp = np.cumsum(y, axis=1)
    prec = tp / np.arange(1, k + 1)
    end = np.ones((n, k), bool)
    end[:, :-1] = s[:, 1:] != s[:, :-1]
    last = np.where(end, np.arange(k), k)
    last = np.minimum.accumulate(last[:, ::-1], axis=1)[:, ::-1]
    p = tp[:, -1]
    credit = (y * np.take_along_axis(prec, last, 1)).sum(1)
    return np.divide(credit, p, out=np.zeros_like(p), where=p > 0)


def average_precision(labels, scores) -> float:
    """AP of 1-D scores against binary labels, identical to sklearn's ``average_precision_score``."""
    s = np.asarray(scores, np.float64)[None]
    y = np.asarray(labels).astype(bool)[None]
    if not y.any():
        raise ValueError("average precision needs at least one positive label")
    return float(ap_from_sort(s, y)[0])
