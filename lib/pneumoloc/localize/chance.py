"""Chance baselines: what a map that knows nothing about the image would score.

Every localization table shows these references beside the real maps, each for the metrics
where it answers "what would a map that knows nothing score":

* ``uniform_image`` — a map equal to 1 over the whole image: the chance level of the LAR (its
  LAR is the lung-area fraction of the image) and of the box metrics for a map without anatomy.
* ``uniform_lung`` — a map equal to 1 inside the image's lungs and 0 elsewhere: anything it
  scores on box metrics is earned by lung anatomy alone. Its LAR is 1.0 by construction, no
  chance level, so the report leaves LAR out for it (:data:`BASELINE_METRICS_SKIPPED`).
* ``box_prior`` — the mean of the *training* images' box masks (one map for all images,
  min-max normalized like stored maps): where lesions usually are, learned without the image.
  Its LAR only says that training boxes lie in the lungs, so it has no LAR row either.
* ``shuffled`` — each real map scored against the boxes of a positive image of **another
  patient** (a seeded derangement by patient), so the box metrics' chance level for maps with
  the same spatial statistics.

These are plain arrays to pass to :mod:`pneumoloc.localize.metrics`; the report scores them.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from ..registry import Registry
from .arrays import as_maps
from .metrics import box_masks

__all__ = ["BASELINES", "BASELINE_METRICS_SKIPPED", "register_baseline", "uniform_image_maps", "uniform_lung_maps", "box_prior_map",
           "box_prior_maps", "shuffled_partners", "shuffled_box_masks"]

BASELINES: Registry[Callable[..., np.ndarray]] = Registry("chance map")
# Metrics a baseline scores by construction rather than by chance: not reported for it.
BASELINE_METRICS_SKIPPED: dict[str, tuple[str, ...]] = {"uniform_lung": ("lar",), "box_prior": ("lar",)}


def register_baseline(name: str):
    """Decorator for baseline map builders ``fn(lungs, prior) -> float16 [N, M, M]``."""
    return BASELINES.register(name)


@register_baseline("uniform_image")
def uniform_image_maps(lungs: np.ndarray, prior: np.ndarray | None = None) -> np.ndarray:
    """1 everywhere (float16; ``lungs`` only sets the shape): its LAR is the lung-area fraction."""
    return np.ones(as_maps(lungs).shape, np.float16)


@register_baseline("uniform_lung")
def uniform_lung_maps(lungs: np.ndarray, prior: np.ndarray | None = None) -> np.ndarray:
    """1 inside the lungs, 0 outside (float16, the stored map format)."""
    return as_maps(lungs).astype(np.float16)


def box_prior_map(train_boxes: Sequence[np.ndarray], widths: Sequence[float],
                  heights: Sequence[float], size: int) -> np.ndarray:
    """Mean box mask of the training images that have boxes, min-max normalized to [0, 1].

    Raises:
        ValueError: no training image has a box.
    """
    keep = [i for i, b in enumerate(train_boxes) if len(b)]
    if not keep:
        raise ValueError("box prior needs training images with boxes; this split has none")
    masks = box_masks([train_boxes[i] for i in keep], [widths[i] for i in keep],
                      [heights[i] for i in keep], size)
    prior = masks.mean(0, dtype=np.float64)
    lo, hi = prior.min(), prior.max()
    return ((prior - lo) / (hi - lo) if hi > lo else np.zeros_like(prior)).astype(np.float16)


@register_baseline("box_prior")
def box_prior_maps(lungs: np.ndarray, prior: np.ndarray | None = None) -> np.ndarray:
    """The training box prior repeated for every image (``lungs`` only sets N)."""
    if prior is None:
        raise ValueError("baseline 'box_prior' needs prior=box_prior_map(...) from training boxes")
    return np.broadcast_to(np.asarray(prior, np.float16), as_maps(lungs).shape)


def shuffled_partners(has_box: np.ndarray, patient_ids: Sequence, seed: int = 0) -> np.ndarray:
    """For each image with boxes, the index of another image with boxes from a different
    patient (a random derangement by patient); -1 for images without boxes.

    Raises:
        ValueError: fewer than two patients have boxes.
    """
    has_box = np.asarray(has_box, bool)
    pats = np.asarray(patient_ids).astype(str)
    idx = np.flatnonzero(has_box)
    if len(np.unique(pats[idx])) < 2:
        raise ValueError("shuffled-box baseline needs positive images from at least two patients")
    rng = np.random.default_rng(seed)
    out = np.full(len(has_box), -1)
    for _ in range(100):  # a random permutation, repaired where it kept the same patient
        perm = rng.permutation(idx)
        for _ in range(10 * len(idx)):
            same = np.flatnonzero(pats[perm] == pats[idx])
            if not len(same):
                break
            j = same[0]
            k = rng.integers(len(idx))
            if pats[perm[k]] != pats[idx[j]] and pats[perm[j]] != pats[idx[k]]:
                perm[[j, k]] = perm[[k, j]]
        if not (pats[perm] == pats[idx]).any():
            out[idx] = perm
            return out
    raise ValueError("could not pair every positive image with another patient's boxes "
                     "(one patient holds most positives)")


def shuffled_box_masks(masks: np.ndarray, patient_ids: Sequence, seed: int = 0) -> np.ndarray:
    """Box masks where each positive image gets the boxes of another patient's positive image;
    images without boxes keep their empty mask (they stay excluded from box metrics)."""
    masks = as_maps(masks).astype(bool)
    partner = shuffled_partners(masks.reshape(len(masks), -1).any(1), patient_ids, seed)
    out = masks.copy()
    sel = partner >= 0
    out[sel] = masks[partner[sel]]
    return out
