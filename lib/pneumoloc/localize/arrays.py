"""The array form every localization function takes: a stack of maps ``[N, M, M]``.

A leaf module (numpy only), so the metrics, AUPRC, boxes, thresholds and chance maps can all
accept numpy or torch maps, one map or a stack, without importing each other.
"""
from __future__ import annotations

import numpy as np

__all__ = ["as_maps"]


def as_maps(maps, dtype=None) -> np.ndarray:
    """``[N, M, M]`` numpy view of maps given as numpy/torch, ``[M, M]`` becomes ``[1, M, M]``."""
    if hasattr(maps, "detach"):
        maps = maps.detach().cpu().numpy()
    maps = np.asarray(maps, dtype=dtype)
    if maps.ndim == 2:
        maps = maps[None]
    if maps.ndim != 3:
        raise ValueError(f"maps must have shape [N, M, M]; got {maps.shape}")
    return maps
