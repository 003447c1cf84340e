"""Localization metrics of saliency maps, vectorized over a batch of maps.

Conventions (used by every function here and by notebook 04):

* **Maps** are ``[N, M, M]`` arrays (numpy or torch) of non-negative *energy*, in the squashed
  input frame (docs/design.md: images squashed, not cropped, to S x S, then resized to M). Stored maps
  are min-max normalized per image to [0, 1] by the heatmap engine, and **no further
  normalization** is applied: the energy of a pixel is its stored value, so min-max has already
  removed the map's constant offset (a map's minimum pixel has zero energy).
* **Boxes** are ground-truth rectangles in original pixels, rasterized into the M x M frame by
  :func:`box_masks`; an image with several boxes is scored against their **union**.
* **Exclusions are counted, never NaN.** Each per-image metric returns :class:`Scores`: values,
  a ``valid`` flag and the count of excluded images per reason. Reasons: ``nonfinite_map`` (a map
  holding NaN or +-inf, e.g. a CAM divided by a zero gradient norm: it has no meaningful energy,
  so it is treated as an all-zero map and counted apart, a sign of a broken explainer rather
  than a dead one), ``zero_map`` (a map whose energy is 0 everywhere: it has no peak and no
  energy share), ``no_box`` (box metrics are defined on images with at least one box only),
  ``no_lung`` (empty lung mask), ``no_lung_energy``. In the detection metrics a non-finite map,
  like an all-zero one, makes no detection (:func:`finite_maps`).
* **Peak** of a map = its maximum; when several cells tie, the pointing game scores the share
  of them inside the boxes (ties broken at random, in expectation).
* **Thresholded map** = pixels with ``map > t`` (``t`` per image; see :mod:`pneumoloc.localize.thresholds`).

Per-image AUPRC ("localization utility", Arun et al. 2020; the WILDCAT study) is the average
precision of the map's pixel values as scores against the box mask as labels, exactly
``sklearn.metrics.average_precision_score`` (computed by :mod:`pneumoloc.localize.auprc`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from .arrays import as_maps
from .auprc import ap_from_levels, ap_from_sort, average_precision, float16_codes

__all__ = ["Scores", "ratio_scores", "finite_maps", "boxes_by_image", "box_masks", "peak_indices",
           "lung_attention_ratio", "pointing_game", "energy_in_boxes", "lung_normalized_energy", "iou_dice",
           "localization_auprc", "pointwise_detection_map"]


@dataclass(frozen=True)
class Scores:
    """Per-image values of one metric with explicit exclusions.

    Attributes:
        values: float64 ``[N]``; 0.0 where ``valid`` is False (never NaN).
        valid: bool ``[N]``; True where the metric is defined for the image.
        excluded: number of excluded images per reason (``zero_map``, ``no_box``, ...).
    """

    values: np.ndarray
    valid: np.ndarray
    excluded: dict[str, int] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.valid.sum())

    def mean(self) -> float:
        """Mean over valid images; ``ValueError`` when none is valid (so it is never NaN)."""
        if not self.valid.any():
            raise ValueError(f"no image is valid for this metric (excluded: {self.excluded})")
        return float(self.values[self.valid].mean())


def ratio_scores(num: np.ndarray, den: np.ndarray, reasons: dict[str, np.ndarray]) -> Scores:
    """:class:`Scores` of ``num / den`` on the images no exclusion mask flags; each excluded
    image is counted under its first reason (in dict order)."""
    valid = np.ones(len(num), bool)
    excluded = {}
    for name, bad in reasons.items():
        excluded[name] = int((bad & valid).sum())  # each image counted under its first reason
        valid &= ~bad
    values = np.zeros(len(num), np.float64)
    np.divide(num, den, out=values, where=valid)
    return Scores(values, valid, excluded)


def finite_maps(maps) -> tuple[np.ndarray, np.ndarray]:
    """``(maps, finite)``: the ``[N, ...]`` maps with every map holding a NaN or +-inf replaced
    by zeros (same dtype), and the bool ``[N]`` flag of the maps that were finite."""
    m = as_maps(maps)
    finite = np.isfinite(m.reshape(len(m), -1)).all(1)
    if finite.all():
        return m, finite
    return np.where(finite[:, None, None], m, m.dtype.type(0)), finite


def _flat32(maps) -> tuple[np.ndarray, np.ndarray]:
    """Float32 ``[N, P]`` maps with non-finite maps zeroed, and the finite flag per map."""
    m, finite = finite_maps(maps)
    return m.reshape(len(m), -1).astype(np.float32, copy=False), finite


def _flatmask(masks, n: int) -> np.ndarray:
    b = as_maps(masks).astype(bool, copy=False)
    if len(b) != n:
        raise ValueError(f"{len(b)} masks for {n} maps: masks and maps must be row-aligned")
    return b.reshape(n, -1)


def _weights(masks, n: int) -> np.ndarray:
    """Masks as float32 0/1 ``[n, P]`` (a float32 mask is used as given, so callers scoring
    several metrics convert once)."""
    w = as_maps(masks)
    if len(w) != n:
        raise ValueError(f"{len(w)} masks for {n} maps: masks and maps must be row-aligned")
    return np.ascontiguousarray(w.reshape(n, -1), dtype=np.float32)  # broadcast views -> real rows


def _row_counts(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Per-row number of True cells of bool ``[n, P]`` ``a`` (and ``b``), as int64.

    Bit-packed (8 cells a byte) and popcounted, which reads an eighth of the memory of
    ``(a & b).sum(1)`` and avoids its cast of every bool to int64.
    """
    if not hasattr(np, "bitwise_count"):  # numpy < 2.0
        return (a if b is None else a & b).sum(1)
    packed = np.packbits(a, axis=1)
    if b is not None:
        packed &= np.packbits(b, axis=1)
    return np.bitwise_count(packed).sum(1, dtype=np.int64)


def _row_dot(m: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per-row sum of ``m * w`` as float64 (a batched BLAS dot: no product array)."""
    return (m[:, None, :] @ w[:, :, None])[:, 0, 0].astype(np.float64)


def boxes_by_image(boxes: pd.DataFrame, image_ids: Sequence[str]) -> list[np.ndarray]:
    """Row-aligned ``[k, 4]`` arrays of ``x, y, w, h`` (original pixels); ``k = 0`` for no box."""
    xywh = boxes[["x", "y", "w", "h"]].to_numpy(float)  # converted once, then sliced per image
    groups = {k: xywh[rows] for k, rows in boxes.groupby("image_id").indices.items()}
    empty = np.zeros((0, 4))
    return [groups.get(str(i), empty) for i in image_ids]


def _axis_cells(lo: float, hi: float, size: int) -> np.ndarray:
    centres = np.arange(size) + 0.5
    cells = (centres >= lo) & (centres < hi)
    if not cells.any():  # a box thinner than one cell still marks the cell holding its centre
        cells[int(np.clip((lo + hi) / 2, 0, size - 1))] = True
    return cells


def box_masks(boxes: Sequence[np.ndarray], widths: Sequence[float], heights: Sequence[float],
              size: int) -> np.ndarray:
    """Rasterize each image's boxes (union) into the squashed ``size x size`` frame.

    A box ``x, y, w, h`` in original pixels maps to ``[x, x + w) * size / width`` horizontally
    and ``[y, y + h) * size / height`` vertically; a cell belongs to the box when its centre
    lies inside. Images with no box get an empty mask.

    Returns:
        bool ``[N, size, size]``.
    """
    if not len(boxes) == len(widths) == len(heights):
        raise ValueError("boxes, widths and heights must be row-aligned (one entry per image)")
    widths, heights = np.asarray(widths, float), np.asarray(heights, float)
    out = np.zeros((len(boxes), size, size), bool)
    for i, b in enumerate(boxes):
        sx, sy = size / float(widths[i]), size / float(heights[i])
        for x, y, w, h in np.asarray(b, float).reshape(-1, 4):
            rows = _axis_cells(y * sy, (y + h) * sy, size)
            cols = _axis_cells(x * sx, (x + w) * sx, size)
            out[i] |= rows[:, None] & cols[None, :]
    return out


def peak_indices(maps) -> np.ndarray:
    """Flat index of each map's first maximum (row-major)."""
    m = as_maps(maps)
    return m.reshape(len(m), -1).argmax(axis=1)


def lung_attention_ratio(maps, lungs) -> Scores:
    """LAR (Shahi & Bagale 2025): share of the map's energy inside the lungs, sum(m*L)/sum(m).

    Energy = the stored min-max-normalized map (see module docstring). Excludes ``zero_map``
    and ``no_lung``.
    """
    m, finite = _flat32(maps)
    lung = _weights(lungs, len(m))
    total = m.sum(1).astype(np.float64)
    return ratio_scores(_row_dot(m, lung), total, {"nonfinite_map": ~finite, "zero_map": total <= 0,
                                                   "no_lung": lung.max(1) <= 0})


def pointing_game(maps, boxes, tolerance: float = 0.0) -> Scores:
    """Pointing game: 1 when the map's peak lies inside the box union, else 0.

    When several cells share the maximum (a plateau, e.g. a flat map), the score is the share
    of them inside the boxes: the pointing game with ties broken uniformly at random, in
    expectation. So a uniform map scores the box share of its support (a fair chance level),
    and a unique peak scores exactly 0 or 1.

    Args:
        tolerance: cells within this Euclidean distance (map cells, centre to centre) of a
            box cell also count as inside.
    """
    from scipy import ndimage

    m, finite = _flat32(maps)
    box = _flatmask(boxes, len(m))
    maxima = m.max(1)
    top = m == maxima[:, None]
    if tolerance > 0:
        side = as_maps(maps).shape[-1]
        box = box.copy()
        for i in np.flatnonzero(box.any(1)):
            far = ndimage.distance_transform_edt(~box[i].reshape(side, side))
            box[i] = (far <= tolerance).ravel()
    hit = _row_counts(top, box) / _row_counts(top)
    return ratio_scores(hit, np.ones(len(m)), {"nonfinite_map": ~finite, "zero_map": maxima <= 0,
                                               "no_box": ~box.any(1)})


def energy_in_boxes(maps, boxes) -> Scores:
    """Share of the map's energy inside the box union, sum(m*B)/sum(m); a constant map scores
    the box-area fraction."""
    m, finite = _flat32(maps)
    box = _weights(boxes, len(m))
    total = m.sum(1).astype(np.float64)
    return ratio_scores(_row_dot(m, box), total, {"nonfinite_map": ~finite, "zero_map": total <= 0,
                                                  "no_box": box.max(1) <= 0})


def lung_normalized_energy(maps, boxes, lungs) -> Scores:
    """Share of the map's *within-lung* energy inside the boxes: sum(m*B*L)/sum(m*L).

    A map that merely stays inside the lungs (uniform over them) earns only the box share of
    the lung area, so this metric separates "looks at the lungs" from "looks at the lesion".
    """
    m, finite = _flat32(maps)
    box = _weights(boxes, len(m))
    lung = _weights(lungs, len(m))
    den = _row_dot(m, lung)
    num = _row_dot(m, lung * box)
    return ratio_scores(num, den, {"nonfinite_map": ~finite, "zero_map": m.max(1) <= 0,
                                   "no_box": box.max(1) <= 0, "no_lung_energy": den <= 0})


def iou_dice(maps, boxes, thresholds) -> tuple[Scores, Scores]:
    """IoU and Dice of the thresholded map (``map > t``, ``t`` scalar or per image) vs the box
    union. An empty thresholded map scores 0 on both."""
    m, finite = _flat32(maps)
    box = _flatmask(boxes, len(m))
    t = np.broadcast_to(np.asarray(thresholds, np.float32), (len(m),))
    pred = m > t[:, None]
    inter = _row_counts(pred, box).astype(float)
    p, g = _row_counts(pred).astype(float), _row_counts(box).astype(float)
    reasons = {"nonfinite_map": ~finite, "zero_map": m.max(1) <= 0, "no_box": g == 0}
    return ratio_scores(inter, p + g - inter, reasons), ratio_scores(2 * inter, p + g, reasons)


def localization_auprc(maps, boxes, method: str = "auto", chunk: int = 128) -> Scores:
    """Per-image AUPRC of the map (scores) against the box union (labels).

    Args:
        method: ``"histogram"`` (exact for float16 maps in [0, 1], linear time), ``"sort"``
            (exact for any floats), or ``"auto"`` (histogram when exact, else sort).
        chunk: images per vectorized block (bounds memory).
    """
    m, finite = finite_maps(maps)
    box = _flatmask(boxes, len(m))
    codes = float16_codes(m) if method in ("auto", "histogram") else None
    if method == "histogram" and codes is None:
        raise ValueError("method='histogram' needs float16-representable maps in [0, 1]; use 'sort'")
    if method not in ("auto", "histogram", "sort"):
        raise ValueError(f"unknown method {method!r}; known: auto, histogram, sort")
    ap = np.zeros(len(m))
    for a in range(0, len(m), chunk):
        sl = slice(a, a + chunk)
        if codes is not None:
            ap[sl] = ap_from_levels(codes[sl], box[sl])
        else:
            ap[sl] = ap_from_sort(m[sl].reshape(len(box[sl]), -1).astype(np.float64), box[sl])
    maxima = codes.max(1) if codes is not None else m.reshape(len(m), -1).max(1)  # uint16 max is fast
    return ratio_scores(ap, np.ones(len(m)), {"nonfinite_map": ~finite, "zero_map": maxima <= 0,
                                              "no_box": ~box.any(1)})


def pointwise_detection_map(maps, boxes, probs, tolerance: float = 0.0) -> float:
    """Pointwise detection AP (the WILDCAT study): one detection per image at the map's peak,
    with the classifier's probability as confidence; a true positive when the peak hits the
    image's box union (within ``tolerance`` cells; a tied plateau when more than half of it
    does), a false positive otherwise (every detection
    on an image without boxes is one). Recall is over the images with boxes, so a positive
    image whose map is all zero or not finite (no detection) counts as missed.
    """
    m = finite_maps(maps)[0]
    box = _flatmask(boxes, len(m))
    probs = np.asarray(probs, np.float64)
    detects = m.reshape(len(m), -1).max(1) > 0
    hit = pointing_game(m, box.reshape(m.shape), tolerance)
    tp = hit.valid & (hit.values > 0.5)  # a tied plateau counts when mostly inside
    n_pos = int(box.any(1).sum())
    if n_pos == 0:
        raise ValueError("pointwise detection mAP needs at least one image with a box")
    if not tp.any():
        return 0.0
    # AP over detections with recall denominator n_pos = sklearn AP on the hits, rescaled
    return average_precision(tp[detects], probs[detects]) * tp.sum() / n_pos
