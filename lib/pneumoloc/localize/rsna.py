"""The RSNA Pneumonia Detection Challenge metric on boxes (predicted boxes come from
:func:`pneumoloc.localize.boxes.component_boxes`).

``rsna_map`` is the challenge metric (Kaggle RSNA Pneumonia Detection 2018, evaluation page):
for each image and each IoU threshold t in 0.40, 0.45, ..., 0.75, predictions are taken in
decreasing score and each is matched to the unmatched ground-truth box of highest IoU when that
IoU exceeds t; precision(t) = TP / (TP + FP + FN). The image's score is the mean over t and the
metric is the mean over images. An image with no ground truth and no prediction is skipped
(excluded from the mean, and counted); with no ground truth, any prediction scores 0.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["RSNA_IOU_THRESHOLDS", "box_iou", "image_precision", "rsna_map"]

RSNA_IOU_THRESHOLDS = np.round(np.arange(0.40, 0.751, 0.05), 2)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix ``[len(a), len(b)]`` of boxes given as ``x, y, w, h`` (continuous area)."""
    a = np.asarray(a, float).reshape(-1, 4)
    b = np.asarray(b, float).reshape(-1, 4)
    ax1, ay1 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx1, by1 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax1[:, None], bx1[None]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(ay1[:, None], by1[None]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def image_precision(gt: np.ndarray, pred: np.ndarray,
                    thresholds: Sequence[float] = RSNA_IOU_THRESHOLDS) -> float | None:
    """The challenge score of one image, or None when it has neither truth nor prediction.

    Args:
        gt: ``[g, 4]`` ground-truth boxes ``x, y, w, h``.
        pred: ``[p, 5]`` predicted boxes with a score column (or ``[p, 4]``, already sorted).
    """
    gt = np.asarray(gt, float).reshape(-1, 4)
    pred = np.asarray(pred, float)
    pred = pred.reshape(-1, pred.shape[-1] if pred.size else 4)
    if len(gt) == 0 and len(pred) == 0:
        return None
    if len(gt) == 0 or len(pred) == 0:
        return 0.0
    if pred.shape[1] == 5:
        pred = pred[np.argsort(-pred[:, 4], kind="stable")]
    iou = box_iou(pred[:, :4], gt).tolist()  # plain floats: these loops are tiny
    scores = []
    for t in thresholds:
        free = set(range(len(gt)))
        tp = 0
        for row in iou:  # predictions in decreasing score
            best = max(free, key=row.__getitem__, default=None)
            if best is not None and row[best] > t:
                free.discard(best)
                tp += 1
        fp, fn = len(pred) - tp, len(gt) - tp
        scores.append(tp / (tp + fp + fn))
    return sum(scores) / len(scores)


def rsna_map(gts: Sequence[np.ndarray], preds: Sequence[np.ndarray],
             thresholds: Sequence[float] = RSNA_IOU_THRESHOLDS) -> tuple[float, int]:
    """The RSNA challenge metric over images: ``(mean score, number of skipped images)``.

    Raises:
        ValueError: every image was skipped (no truth and no prediction anywhere).
    """
    if len(gts) != len(preds):
        raise ValueError(f"{len(gts)} ground-truth entries vs {len(preds)} prediction entries")
    per = [image_precision(g, p, thresholds) for g, p in zip(gts, preds)]
    kept = [s for s in per if s is not None]
    if not kept:
        raise ValueError("every image has neither ground truth nor prediction: metric undefined")
    return float(np.mean(kept)), len(per) - len(kept)
