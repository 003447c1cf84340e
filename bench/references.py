"""Reference implementations the library's fast paths are checked and benchmarked against.

They are not part of the library: tests compare the fast paths with them, and the benches print
the ratio of their speeds. ``tests/`` imports this module through pytest's ``pythonpath``
setting (pyproject.toml); the benches import it from their own folder.

* :func:`cam_to_boxes`: boxes of the 8-connected components of ``map > t`` with
  ``scipy.ndimage`` (one labelling of the stack, per-component regions); the library's
  :func:`pneumoloc.localize.boxes.component_boxes` returns the same boxes, scores, order and
  tie-breaking from one OpenCV labelling.
* :func:`otsu_lung_mask`: Otsu thresholding and morphology, no shape prior; the library's
  classical fallback (:func:`pneumoloc.localize.lung_sources.classical_lung_mask`, atlas fused
  with intensities) is measured against it.
* :func:`deletion_insertion_loop`: RISE's causal metric as its authors' code runs it, one image
  and one step at a time, the insertion substrate blurred by OpenCV; the library's
  :func:`pneumoloc.explain.faithfulness.perturbation_curves` batches images and steps.
* :func:`patient_resamples_loop`: the cluster bootstrap's index arrays built one resample and one
  drawn patient at a time; :func:`pneumoloc.evaluate.bootstrap.patient_resamples` builds all of
  them from one gather and must return the same arrays.
* :func:`boxes_by_image_groupby`: each image's boxes sliced from the table group by group;
  :func:`pneumoloc.localize.metrics.boxes_by_image` converts the table once.
* :func:`paired_comparisons_loc`: every pair's common images found by pandas index intersection
  and ``.loc``; :func:`pneumoloc.localize.tables.paired_comparisons` aligns numpy arrays and must
  return the same table (same images, same order, so the same bootstrap sums).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from pneumoloc.localize.arrays import as_maps

__all__ = ["cam_to_boxes", "otsu_lung_mask", "deletion_insertion_loop", "patient_resamples_loop",
           "boxes_by_image_groupby", "paired_comparisons_loc"]


def cam_to_boxes(maps, thresholds, widths: Sequence[float] | None = None,
                 heights: Sequence[float] | None = None, probs: Sequence[float] | None = None,
                 min_cells: int = 1, max_boxes: int = 0) -> list[np.ndarray]:
    """Boxes ``[k, 5]`` (``x, y, w, h, score``) per image from the connected components of
    ``map > t``.

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
    from scipy import ndimage

    m = as_maps(maps).astype(np.float32, copy=False)
    n, side = len(m), m.shape[-1]
    t = np.broadcast_to(np.asarray(thresholds, np.float32), (n,))
    sx = np.ones(n) if widths is None else np.asarray(widths, float) / side
    sy = np.ones(n) if heights is None else np.asarray(heights, float) / side
    p = np.ones(n) if probs is None else np.asarray(probs, float)
    out: list[list] = [[] for _ in range(n)]
    if n == 0:
        return []
    # one labelling of the whole stack: 8-connected within an image, never across images
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = True
    labels, k = ndimage.label(m > t[:, None, None], structure=structure)
    if not k:
        return [np.zeros((0, 5)) for _ in range(n)]
    # labels grow in raster order, so each image holds a contiguous label range
    image_of = np.searchsorted(np.maximum.accumulate(labels.reshape(n, -1).max(1)), np.arange(1, k + 1))
    if k <= 64 * n:  # CAM-like maps: few components, measured within their bounding regions
        objs = ndimage.find_objects(labels)
        inside = [labels[sl] == j + 1 for j, sl in enumerate(objs)]
        sizes = np.array([x.sum() for x in inside])
    else:  # speckle: one pass over all pixels instead of a Python loop over components
        sizes = np.bincount(labels.ravel(), minlength=k + 1)[1:]
    keep = sizes >= min_cells
    if max_boxes:
        order = np.lexsort((-sizes, image_of))
        first = np.searchsorted(image_of[order], image_of[order], side="left")
        rank = np.empty(k, int)
        rank[order] = np.arange(k) - first
        keep &= rank < max_boxes
    kept = np.flatnonzero(keep)
    if k > 64 * n:  # relabel the kept components only, then find their regions
        lut = np.zeros(k + 1, np.int32)
        lut[kept + 1] = np.arange(1, len(kept) + 1)
        labels = lut[labels]
        objs = ndimage.find_objects(labels)
        inside = [labels[sl] == j + 1 for j, sl in enumerate(objs)]
        kept_pos = range(len(kept))
    else:
        kept_pos = kept
    for j in kept_pos:
        sl = objs[j]
        i, (y0, y1), (x0, x1) = sl[0].start, (sl[1].start, sl[1].stop), (sl[2].start, sl[2].stop)
        peak = float(m[sl][inside[j]].max())  # from the component's own cells only
        out[i].append([x0 * sx[i], y0 * sy[i], (x1 - x0) * sx[i], (y1 - y0) * sy[i], peak * p[i]])
    return [np.asarray(r, float).reshape(-1, 5) for r in out]


def otsu_lung_mask(image: np.ndarray) -> np.ndarray:
    """Otsu and morphology, no prior: the baseline the classical lung fallback is measured against.

    Otsu splits dark from bright; the body is taken row by row between the first and last
    bright pixel (the thorax spans each row), and the lungs are its dark part, closed
    vertically across the ribs (which cut the lung fields into strips), opened to drop
    speckle, cut from the image border, kept as the two largest components and hole-filled.
    On the phantom its IoU with the exact masks is only about 0.6 (and as low as 0.16 when
    ribs and lesions split a lung), which the atlas fusion fixes.
    """
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    img = np.asarray(image, np.float64)
    if img.max() == img.min():
        return np.zeros(img.shape, bool)
    tissue = img > threshold_otsu(img)
    cols = np.arange(img.shape[1])
    first = np.where(tissue.any(1), np.argmax(tissue, 1), img.shape[1])
    last = np.where(tissue.any(1), img.shape[1] - 1 - np.argmax(tissue[:, ::-1], 1), -1)
    body = (cols[None] >= first[:, None]) & (cols[None] <= last[:, None])
    side = min(img.shape)
    rib_gap = np.ones((2 * max(1, side // 20) + 1, 1), bool)
    dark = ndimage.binary_closing(body & ~tissue, structure=rib_gap) & body
    r = max(1, side // 64)
    dark = ndimage.binary_opening(dark, structure=np.hypot(*np.mgrid[-r:r + 1, -r:r + 1]) <= r)
    labels, k = ndimage.label(dark)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    sizes = np.bincount(labels.ravel(), minlength=k + 1)
    sizes[0] = 0
    sizes[border] = 0
    keep = np.argsort(sizes)[::-1][:2]
    keep = keep[sizes[keep] > 0]
    return ndimage.binary_fill_holes(np.isin(labels, keep))


def deletion_insertion_loop(prob, images: np.ndarray, orders: np.ndarray, steps: int, deletion_value: float = 0.0,
                            blur_kernel: int = 11, blur_sigma: float = 5.0) -> dict[str, np.ndarray]:
    """Deletion and insertion curves one image and one step at a time (Petsiuk et al. 2018).

    Args:
        prob: ``prob(x)`` -> P(target) of one normalized image ``x`` float32 ``[1, 1, S, S]`` (torch).
        images: normalized images ``[B, S, S]``.
        orders: pixel indices (raster) per image, most relevant first ``[B, S*S]``.
        steps: equal steps; after step k the first ``k * S*S // steps`` pixels are changed.
        deletion_value: what a deleted pixel becomes.

    Returns:
        ``deletion``, ``insertion`` ``[B, steps + 1]`` and their trapezoid AUCs ``deletion_auc``,
        ``insertion_auc`` over the fraction of pixels changed.
    """
    import cv2
    import torch

    b, s = images.shape[0], images.shape[-1]
    n = s * s
    counts = [k * n // steps for k in range(steps + 1)]
    out = {"deletion": np.zeros((b, steps + 1)), "insertion": np.zeros((b, steps + 1))}
    for i in range(b):
        img = np.asarray(images[i], np.float32)
        blur = cv2.GaussianBlur(img, (blur_kernel, blur_kernel), blur_sigma, borderType=cv2.BORDER_REFLECT_101)
        for k, c in enumerate(counts):
            gone, put = img.copy().ravel(), blur.copy().ravel()
            gone[orders[i, :c]] = deletion_value
            put[orders[i, :c]] = img.ravel()[orders[i, :c]]
            for name, flat in (("deletion", gone), ("insertion", put)):
                out[name][i, k] = float(prob(torch.from_numpy(flat.reshape(1, 1, s, s))))
    x = np.asarray(counts, float) / n
    for name in ("deletion", "insertion"):
        out[f"{name}_auc"] = np.trapezoid(out[name], x, axis=1)
    return out


def patient_resamples_loop(groups, n_boot: int = 1000, seed: int = 0) -> list[np.ndarray]:
    """Row indices of ``n_boot`` resamples drawing whole groups with replacement: per resample one
    ``integers(0, G, G)`` draw, then each drawn group's rows (in row order) concatenated."""
    groups = np.asarray(groups)
    uniq, inverse = np.unique(groups, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    counts = np.bincount(inverse, minlength=len(uniq))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_boot):
        drawn = rng.integers(0, len(uniq), len(uniq))
        out.append(np.concatenate([order[starts[g]:starts[g] + counts[g]] for g in drawn]))
    return out


def boxes_by_image_groupby(boxes, image_ids) -> list[np.ndarray]:
    """Row-aligned ``[k, 4]`` arrays of ``x, y, w, h``, each group's columns converted on its own."""
    groups = {k: g[["x", "y", "w", "h"]].to_numpy(float) for k, g in boxes.groupby("image_id")}
    empty = np.zeros((0, 4))
    return [groups.get(str(i), empty) for i in image_ids]


def paired_comparisons_loc(per_image, n_boot: int = 200, seed: int = 0):
    """Mean difference a - b with a paired patient-bootstrap CI for every backbone pair of one
    method and every method pair of one backbone, on the images valid for both (in a's order)."""
    import pandas as pd

    from pneumoloc.evaluate.bootstrap import paired_bootstrap

    if per_image.empty:
        return pd.DataFrame()
    df = per_image[per_image["variant"] == "maps"]
    systems = df[["model", "method"]].drop_duplicates().values.tolist()
    pairs = [(a, b) for i, a in enumerate(systems) for b in systems[i + 1:]
             if (a[0] == b[0]) != (a[1] == b[1])]
    rows = []
    for metric, dm in df.groupby("metric"):
        by = {k: g.set_index("image_id") for k, g in dm.groupby(["model", "method"])}
        for a, b in pairs:
            if tuple(a) not in by or tuple(b) not in by:
                continue
            ga, gb = by[tuple(a)], by[tuple(b)]
            common = ga.index.intersection(gb.index)
            if len(common) < 2:
                continue
            est = paired_bootstrap(np.mean, [ga.loc[common, "value"].to_numpy()], [gb.loc[common, "value"].to_numpy()],
                                   groups=ga.loc[common, "patient_id"].astype(str).to_numpy(), n_boot=n_boot, seed=seed)
            rows.append({"metric": metric, "comparison": "backbone" if a[1] == b[1] else "method",
                         "model_a": a[0], "method_a": a[1], "model_b": b[0], "method_b": b[1], "n": len(common),
                         "diff": est.value, "low": est.low, "high": est.high})
    return pd.DataFrame(rows)
