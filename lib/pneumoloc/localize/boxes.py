"""Boxes of the 8-connected components of thresholded maps, one OpenCV labelling per stack.

Each thresholded map (``map > t``) becomes boxes: one per 8-connected component, its bounding
rectangle rescaled from the M x M frame to original pixels (``x * width / M``), scored by the
component's peak map value times the classifier probability (when given), so confident images
rank their boxes first. The results equal those of the scipy reference ``cam_to_boxes`` in
``bench/references.py`` (same boxes, scores, order and tie-breaking); ``bench_localization.py``
prints the ratio of their speeds. How:

* The ``[N, M, M]`` masks are stacked into one ``N (M + 1) x M`` image with an empty row after
  each map, so components never cross maps, and labelled once by
  ``cv2.connectedComponentsWithStats`` (OpenCV ships with grad-cam), which also returns each
  component's bounding box and size in the same pass.
* Ties in size are broken by label order, as in scipy, so labels must grow in raster order of
  the components' first pixels. OpenCV's SAUF algorithm (``CCL_WU``; Wu, Otoo & Suzuki 2009)
  numbers them so: provisional labels are created in raster order (stripe by stripe, in row
  order, when run in parallel), union-find keeps the smaller label as root, and the final pass
  numbers roots in increasing order. OpenCV does not document that order (its block-based
  default, Spaghetti, does not follow it), so ``tests/test_localize_boxes.py`` checks it against
  ``scipy.ndimage.label``; a runtime check (a running maximum over every cell) would cost a
  quarter to a half of the labelling itself.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .arrays import as_maps

__all__ = ["label_stack", "component_boxes"]


def label_stack(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """8-connected components of each mask of a ``[N, H, W]`` stack.

    Returns:
        ``labels`` int32 ``[N, H, W]`` (0 = background; labels grow over maps, and within a map
        in raster order of each component's first pixel, as ``scipy.ndimage.label`` numbers
        them), ``image`` int ``[k]`` (map of each component) and ``stats`` int ``[k, 5]``
        (x0, y0 within the map, width, height, cells).
    """
    import cv2

    n, rows, cols = masks.shape
    tall = np.zeros((n, rows + 1, cols), np.uint8)
    tall[:, :rows] = masks
    _, labels, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(
        tall.reshape(-1, cols), 8, cv2.CV_32S, cv2.CCL_WU)
    stats = stats[1:, :5].astype(np.int64)
    image, stats[:, 1] = np.divmod(stats[:, 1], rows + 1)
    return labels.reshape(n, rows + 1, cols)[:, :rows], image, stats


def component_boxes(maps, thresholds, widths: Sequence[float] | None = None,
                    heights: Sequence[float] | None = None, probs: Sequence[float] | None = None,
                    min_cells: int = 1, max_boxes: int = 0) -> list[np.ndarray]:
    """Boxes ``[k, 5]`` (``x, y, w, h, score``) per image from the 8-connected components of
    ``map > t``, per image in raster order of the components' first pixels.

    Args:
        maps: ``[N, M, M]``.
        thresholds: scalar or per-image thresholds (see :mod:`pneumoloc.localize.thresholds`).
        widths, heights: original image sizes; boxes are returned in original pixels (map
            cells when omitted).
        probs: classifier probabilities; a box's score is its component's peak map value
            times the image's probability (the peak alone when omitted).
        min_cells: components smaller than this many cells are dropped (speckle).
        max_boxes: keep at most this many components per image, the largest first (0 = all).
    """
    m = as_maps(maps)
    if m.dtype != np.float16:  # float16 (stored maps) compares and maxes exactly as float32
        m = m.astype(np.float32, copy=False)  # others are rounded to float32 first
    n, side = len(m), m.shape[-1]
    if n == 0:
        return []
    t = np.broadcast_to(np.asarray(thresholds, np.float32), (n,))
    sx = np.ones(n) if widths is None else np.asarray(widths, float) / side
    sy = np.ones(n) if heights is None else np.asarray(heights, float) / side
    p = np.ones(n) if probs is None else np.asarray(probs, float)
    labels, image, stats = label_stack(m > t[:, None, None])
    sizes = stats[:, 4]
    keep = sizes >= min_cells
    if max_boxes:  # the largest per image; equal sizes in label order (lexsort is stable)
        order = np.lexsort((-sizes, image))
        first = np.searchsorted(image[order], image[order], side="left")
        rank = np.empty(len(sizes), np.int64)
        rank[order] = np.arange(len(sizes)) - first
        keep &= rank < max_boxes
    kept = np.flatnonzero(keep)
    peaks = _peaks(m, labels, image, stats, kept)
    i, (x0, y0, w, h) = image[kept], stats[kept, :4].T
    rows = np.stack([x0 * sx[i], y0 * sy[i], w * sx[i], h * sy[i], peaks * p[i]], 1)
    cuts = np.searchsorted(i, np.arange(1, n))
    return [r.reshape(-1, 5) for r in np.split(rows, cuts)]


def _peaks(m: np.ndarray, labels: np.ndarray, image: np.ndarray, stats: np.ndarray,
           kept: np.ndarray) -> np.ndarray:
    """Maximum map value over each kept component's own cells, as float64."""
    boxed = int((stats[kept, 2] * stats[kept, 3]).sum())
    if boxed > m.size or len(kept) > 8 * len(m):  # large or many: one pass over all cells
        top = np.full(len(stats) + 1, -np.inf, m.dtype)
        np.maximum.at(top, labels.ravel(), m.ravel())
        return top[kept + 1].astype(np.float64)
    out = np.empty(len(kept))
    for r, j in enumerate(kept):  # few components: each within its bounding box
        x0, y0, w, h = stats[j, :4]
        i = image[j]
        crop = (slice(y0, y0 + h), slice(x0, x0 + w))
        out[r] = m[i][crop][labels[i][crop] == j + 1].max()
    return out
