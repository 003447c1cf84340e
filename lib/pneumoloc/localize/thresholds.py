"""Turning maps into binary masks: per-image thresholds, tuned on validation only.

A thresholded map is ``map > t`` with one ``t`` per image. Rules (registry ``THRESHOLDS``):

* ``"otsu"`` — Otsu's threshold per image (Otsu 1979; the CheXlocalize default) on the map's
  256-level version, as CheXlocalize computes it on uint8 maps.
* ``"frac0.50"`` (any ``frac<f>``) — a fixed fraction of the image's maximum, ``t = f * max``.
* ``tune_fraction`` picks ``f`` on the **validation** split (maximizing mean IoU or Dice over the
  validation images with boxes); the tuned value is then applied unchanged to test. Nothing here
  ever looks at test labels.
* Probability gating (as CheXlocalize does): images whose classifier probability is below a
  gate threshold get an empty mask. ``tune_gate`` picks the gate on validation, scoring an
  image without boxes 1 when its mask is empty and 0 otherwise.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..registry import Registry, UnknownNameError
from .arrays import as_maps
from .metrics import iou_dice

__all__ = ["THRESHOLDS", "register_threshold", "thresholds_for", "otsu_thresholds",
           "fraction_thresholds", "binarize", "gate", "gated_iou", "tune_fraction", "tune_gate", "check_rules"]

THRESHOLDS: Registry[Callable[[np.ndarray], np.ndarray]] = Registry("threshold rule")


def register_threshold(name: str):
    """Decorator: ``@register_threshold("otsu")`` on ``fn(maps [N,M,M]) -> thresholds [N]``."""
    return THRESHOLDS.register(name)


# 256-level value of every float16 bit pattern, so stored maps are quantized by one table lookup
_F16_TO_LEVEL = np.rint(np.clip(np.nan_to_num(np.arange(65536, dtype=np.uint16).view(np.float16)
                                              .astype(np.float32)), 0, 1) * 255).astype(np.uint8)


def _levels256(m: np.ndarray) -> np.ndarray:
    """``round(255 * clip(map, 0, 1))`` as uint8 ``[n, P]``."""
    if m.dtype == np.float16:
        return _F16_TO_LEVEL[np.ascontiguousarray(m).view(np.uint16)]
    return np.rint(np.clip(m.astype(np.float32), 0, 1) * 255).astype(np.uint8)


@register_threshold("otsu")
def otsu_thresholds(maps, chunk: int = 64) -> np.ndarray:
    """Otsu's threshold of each map on its 256-level version ``q = round(255 * map)`` (as
    CheXlocalize does with OpenCV on uint8 maps): the level k maximizing the between-class
    variance w0 * w1 * (mu0 - mu1)^2 of {q <= k} vs {q > k} (Otsu 1979, eq. 18), returned as
    ``t = (k + 0.5) / 255`` so that ``map > t`` is ``q > k`` (up to values exactly halfway
    between two levels). A single-valued map gets the threshold just above its value (empty
    mask)."""
    m = as_maps(maps)
    m = m.reshape(len(m), -1)
    levels = np.arange(256, dtype=np.float64)
    hist = np.zeros((len(m), 256))
    for a in range(0, len(m), chunk):
        for i, q in enumerate(_levels256(m[a:a + chunk]), start=a):
            hist[i] = np.bincount(q, minlength=256)
    w0 = np.cumsum(hist, axis=1)
    s0 = np.cumsum(hist * levels, axis=1)
    w1 = w0[:, -1:] - w0
    mu0 = np.divide(s0, w0, out=np.zeros_like(s0), where=w0 > 0)
    mu1 = np.divide(s0[:, -1:] - s0, w1, out=np.zeros_like(s0), where=w1 > 0)
    between = w0 * w1 * (mu0 - mu1) ** 2
    k = between.argmax(1)
    single = between.max(1) <= 0
    k[single] = hist[single].argmax(1)
    return (k + 0.5) / 255


def fraction_thresholds(maps, fraction: float) -> np.ndarray:
    """``t = fraction * max`` per image."""
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction={fraction} must be in [0, 1)")
    m = as_maps(maps)
    m = m.reshape(len(m), -1)
    if m.dtype == np.float16:  # non-negative float16 bit patterns order like their values
        codes = np.ascontiguousarray(m).view(np.uint16).max(1)
        if codes.max(initial=0) <= 0x7C00:
            return fraction * codes.view(np.float16).astype(np.float64)
    return fraction * m.max(1).astype(np.float64)


for _f in (0.25, 0.5, 0.75):
    register_threshold(f"frac{_f:.2f}")(lambda maps, _f=_f: fraction_thresholds(maps, _f))


def thresholds_for(rule: str, maps) -> np.ndarray:
    """Per-image thresholds by rule name: a registered name or ``frac<f>`` for any ``f``."""
    if rule.startswith("frac") and rule not in THRESHOLDS:
        try:
            return fraction_thresholds(maps, float(rule[4:]))
        except ValueError as err:
            raise UnknownNameError(f"unknown threshold rule {rule!r}: frac<f> needs 0 <= f < 1") from err
    return THRESHOLDS.lookup(rule)(maps)


def check_rules(rules) -> None:
    """Raise :class:`~pneumoloc.registry.UnknownNameError` for the first rule that is neither
    registered nor ``frac<f>`` (the message lists the known ones)."""
    for rule in rules:
        thresholds_for(rule, np.zeros((1, 2, 2)))


def binarize(maps, thresholds) -> np.ndarray:
    """Boolean masks ``map > t`` (``t`` scalar or per image)."""
    m = as_maps(maps).astype(np.float32, copy=False)  # same comparison as metrics.iou_dice
    t = np.broadcast_to(np.asarray(thresholds, np.float32), (len(m),))
    return m > t[:, None, None]


def gate(masks: np.ndarray, probs, threshold: float) -> np.ndarray:
    """Empty the masks of images whose probability is below ``threshold`` (CheXlocalize)."""
    keep = np.asarray(probs, np.float64) >= threshold
    return masks & keep[:, None, None]


def tune_fraction(maps, boxes, grid=np.arange(0.05, 1.0, 0.05), score: str = "iou") -> float:
    """The fraction of the maximum that maximizes mean ``score`` (``iou`` or ``dice``) over
    validation images with boxes. Call on validation maps only."""
    pick = {"iou": 0, "dice": 1}
    if score not in pick:
        raise ValueError(f"score={score!r}; known: {sorted(pick)}")
    m = as_maps(maps)
    means = []
    for f in grid:
        s = iou_dice(m, boxes, fraction_thresholds(m, float(f)))[pick[score]]
        means.append(s.mean() if s.n else -np.inf)
    if not np.isfinite(max(means)):
        raise ValueError("no validation image with a box and a non-zero map: cannot tune")
    return float(grid[int(np.argmax(means))])


def gated_iou(masks: np.ndarray, boxes: np.ndarray, probs, threshold: float) -> np.ndarray:
    """Per-image IoU over *all* images after gating (CheXlocalize): an image with boxes scores
    the IoU of its gated mask with the box union; an image without boxes scores 1 when its gated
    mask is empty and 0 otherwise."""
    n = len(masks)
    g = gate(np.asarray(masks, bool), probs, threshold).reshape(n, -1)
    b = as_maps(boxes).astype(bool).reshape(n, -1)
    has = b.any(1)
    inter, union = (g & b).sum(1), (g | b).sum(1)
    return np.where(has, inter / np.maximum(union, 1), (~g.any(1)).astype(float))


def tune_gate(masks: np.ndarray, boxes: np.ndarray, probs, grid=np.arange(0.0, 1.0, 0.05)) -> float:
    """Probability gate maximizing the mean :func:`gated_iou` over the validation images.
    Call on validation masks only."""
    means = [gated_iou(masks, boxes, probs, float(t)).mean() for t in grid]
    return float(grid[int(np.argmax(means))])
