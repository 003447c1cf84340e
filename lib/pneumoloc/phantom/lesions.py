"""Pneumonia for the phantom: consolidations drawn inside the lungs at real RSNA box positions.

Number, positions and sizes come from the RSNA Pneumonia stage-2 boxes shipped in
``torchxrayvision`` (``data/kaggle_stage_2_train_labels.csv.zip``), mapped from RSNA's
lung field to the image's lungs; each lesion is a textured, soft-edged opacity cut to
the exact lung mask, and its box is the tight box of its visible support, so the
phantom's boxes are exact ground truth for localization metrics.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage as ndi

from ..data.xrv_assets import load_rsna_labels

__all__ = ["rsna_boxes", "draw_opacities"]

# The lung field in RSNA's 1024-px frame, taken as the 5th/95th percentiles of the box
# extents in the table (x 122..912, y 136..899): boxes are mapped relative to it.
_RSNA_LUNGS = (120.0, 130.0, 910.0, 900.0)


@lru_cache(maxsize=1)
def rsna_boxes() -> tuple[np.ndarray, np.ndarray]:
    """The real RSNA stage-2 boxes (x, y, w, h in 1024 px) and offsets grouping them by patient."""
    df = load_rsna_labels().dropna(subset=["x"])
    df = df.sort_values(["patientId", "x", "y"], kind="stable")
    _, starts = np.unique(df["patientId"].to_numpy(), return_index=True)
    return df[["x", "y", "width", "height"]].to_numpy(float), np.append(starts, len(df))


def _opacity(rng: np.random.Generator, weight: np.ndarray, centre: tuple[float, float],
             radii: tuple[float, float]) -> tuple[np.ndarray, int]:
    """One consolidation's opacity (0..1) on the frame, already cut to the lungs.

    A soft-edged ellipse whose border is perturbed by smooth noise, with patchy texture
    (air bronchograms, partial filling), multiplied by ``weight`` (0 outside the lungs,
    fading at their border like the drawn lung darkness, so no bright rim appears).
    Returns it and its support size before the cut.
    """
    size = weight.shape[0]
    (cx, cy), (rx, ry) = centre, (max(radii[0], 1.5), max(radii[1], 1.5))
    x0, x1 = int(max(cx - 1.4 * rx, 0)), int(min(cx + 1.4 * rx + 1, size))
    y0, y1 = int(max(cy - 1.4 * ry, 0)), int(min(cy + 1.4 * ry + 1, size))
    shape = (max(y1 - y0, 1), max(x1 - x0, 1))
    yy, xx = np.mgrid[y0:y0 + shape[0], x0:x0 + shape[1]].astype(np.float32)
    edge = ndi.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), 0.25 * min(rx, ry))
    patch = ndi.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), 0.015 * size + 0.5)
    edge /= edge.std() + 1e-6
    patch /= patch.std() + 1e-6
    r = np.hypot((xx - cx) / rx, (yy - cy) / ry) + 0.15 * edge
    t = np.clip((1.0 - r) / 0.55, 0, 1)
    alpha = t * t * (3 - 2 * t) * np.clip(0.8 + 0.25 * patch, 0.35, 1.0)
    frame = np.zeros(weight.shape, dtype=np.float32)
    frame[y0:y1, x0:x1] = alpha[:y1 - y0, :x1 - x0]
    full = int((frame >= 0.05).sum())
    frame *= weight
    frame[frame < 0.05] = 0  # below this a lesion is invisible: keep the support exact
    return frame, full


def draw_opacities(rng: np.random.Generator, lungs: np.ndarray, max_opacities: int,
                   conspicuity: float) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """Add 1..``max_opacities`` consolidations inside ``lungs``; return the added intensity and boxes.

    Boxes of one random RSNA patient give the number, positions and sizes (so bilateral
    pairs stay pairs); each is mapped from RSNA's lung field to this image's lung
    bounding box. An opacity whose in-lung part is under 35% of its extent (or tiny) is
    redrawn from a random RSNA box; the 30th try is centred on a lung pixel. Each box is
    the tight bounding box of the opacity's visible in-lung support.
    """
    table, starts = rsna_boxes()
    g = int(rng.integers(len(starts) - 1))
    group = table[starts[g]:starts[g + 1]][:max_opacities]
    ys, xs = np.nonzero(lungs)
    lx0, ly0, lw, lh = xs.min(), ys.min(), np.ptp(xs) + 1, np.ptp(ys) + 1
    rx0, ry0, rx1, ry1 = _RSNA_LUNGS
    min_px = max(6, int(0.002 * lungs.size))
    weight = ndi.gaussian_filter(lungs.astype(np.float32), 0.006 * lungs.shape[0] + 0.3) * lungs
    total = np.zeros(lungs.shape, dtype=np.float32)
    boxes = []
    for box in group:
        for attempt in range(30):
            x, y, w, h = box if attempt == 0 else table[int(rng.integers(len(table)))]
            centre = (lx0 + (x + w / 2 - rx0) / (rx1 - rx0) * lw, ly0 + (y + h / 2 - ry0) / (ry1 - ry0) * lh)
            if attempt == 29:
                k = int(rng.integers(len(ys)))
                centre = (float(xs[k]), float(ys[k]))
            radii = (w / (rx1 - rx0) * lw / 2, h / (ry1 - ry0) * lh / 2)
            alpha, full = _opacity(rng, weight, centre, radii)
            inside = int((alpha > 0).sum())
            if inside >= min_px and inside >= 0.35 * full or (attempt == 29 and inside):
                break
        amp = 0.35 * rng.uniform(0.8, 1.2)  # ~ soft tissue minus aerated lung: consolidation
        total += conspicuity * amp * alpha
        oy, ox = np.nonzero(alpha)
        boxes.append((int(ox.min()), int(oy.min()), int(np.ptp(ox) + 1), int(np.ptp(oy) + 1)))
    return total, boxes
