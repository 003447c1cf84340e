"""Drawing a chest radiograph: real lung masks, ribs, clavicles, mediastinum, heart, diaphragm.

The phantom (:mod:`pneumoloc.phantom.writer`) needs images that look enough like a PA chest
X-ray for localization research to be meaningful: class-activation maps should have
to find lesions among structures that a real radiograph also has. The lung fields
come from the 517 real v7labs lung masks shipped in ``torchxrayvision``
(``data/semantic_masks_v7labs_lungs.zip``); everything else is drawn analytically
relative to the lung bounding box, so it stays anatomically consistent for any mask.

Intensities are in [0, 1] before exposure, bright = dense (bone, soft tissue),
dark = air (lungs), as in a standard radiograph.

A patient's anatomy is sampled (:func:`sample_anatomy`) and drawn (:func:`render_anatomy`)
once; every image of that patient is a copy shifted and scaled a little
(:func:`jitter_frame`), so images of one patient share lungs and ribs. Pneumonia adds
consolidations at real RSNA box positions (:func:`draw_opacities`).

This module draws the body around the lungs; the lung shapes come from
:mod:`pneumoloc.data.xrv_assets` and the lesions from :mod:`pneumoloc.phantom.lesions`.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage as ndi


__all__ = ["Anatomy", "sample_anatomy", "place_lungs", "render_anatomy", "jitter_frame", "downsample",
           "smooth_noise"]


@dataclass(frozen=True)
class Anatomy:
    """One patient's body, sampled once and shared by all of that patient's images.

    Lengths are fractions of the image size; the lung mask is a v7labs file name.
    """

    mask_name: str
    lung_width: float  # lung bounding-box width / image width
    aspect: float  # multiplies the mask's own height/width ratio
    top: float  # lung top / image height
    shift_x: float  # lung centre offset from the image centre
    body_width: float  # thorax half-width / lung half-width
    lung_dark: float  # how much darker aerated lung is than soft tissue
    rib_phase: float  # vertical phase of the rib cage (0..1 of a rib period)
    rib_count: float  # ribs visible over the lung height
    rib_curve: float  # downward curvature of posterior ribs
    heart_size: float  # heart half-width / lung half-width
    heart_shift: float  # heart centre to the patient's left, fraction of lung width
    clavicle_tilt: float  # clavicle rise from medial to lateral end, fraction of size
    vessel_seed: int  # seed of the lung vascular texture (fixed per patient)


def sample_anatomy(rng: np.random.Generator, mask_name: str,
                   lung_width: tuple[float, float]) -> Anatomy:
    """Draw a patient's anatomy parameters (ranges chosen to look like adult PA films)."""
    u = rng.uniform
    return Anatomy(
        mask_name=mask_name, lung_width=float(u(*lung_width)), aspect=float(u(1.05, 1.3)),
        top=float(u(0.06, 0.11)), shift_x=float(u(-0.03, 0.03)), body_width=float(u(1.12, 1.25)),
        lung_dark=float(u(0.26, 0.34)), rib_phase=float(u(0, 1)), rib_count=float(u(8.5, 10.5)),
        rib_curve=float(u(0.18, 0.28)), heart_size=float(u(0.42, 0.55)),
        heart_shift=float(u(0.06, 0.12)), clavicle_tilt=float(u(0.01, 0.04)),
        vessel_seed=int(rng.integers(2**31)),
    )


@lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return yy, xx


def smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise rescaled to unit standard deviation (float32)."""
    n = ndi.gaussian_filter(rng.standard_normal((size, size), dtype=np.float32), sigma, mode="wrap")
    return n / (n.std() + 1e-8)


def place_lungs(anat: Anatomy, crop: np.ndarray, size: int) -> np.ndarray:
    """The lung mask ``crop`` (from :func:`load_lung_mask`) resized and placed in a ``size`` frame."""
    from PIL import Image

    w = anat.lung_width * size
    h = w * crop.shape[0] / crop.shape[1] * anat.aspect
    if h > 0.8 * size:  # tall masks: shrink so lungs and diaphragm fit the frame
        w, h = w * 0.8 * size / h, 0.8 * size
    w, h = max(int(round(w)), 4), max(int(round(h)), 4)
    small = np.asarray(Image.fromarray(crop.astype(np.uint8) * 255).resize(
        (w, h), Image.Resampling.BILINEAR)) > 127
    x0 = int(round(size / 2 + anat.shift_x * size - w / 2))
    y0 = int(round(anat.top * size))
    frame = np.zeros((size, size), dtype=bool)
    fy0, fx0 = max(y0, 0), max(x0, 0)
    fy1, fx1 = min(y0 + h, size), min(x0 + w, size)
    frame[fy0:fy1, fx0:fx1] = small[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0]
    return frame


def _soft(d: np.ndarray, width: float) -> np.ndarray:
    """Logistic step: 1 where ``d`` >> 0, 0 where ``d`` << 0, transition ``width`` pixels."""
    return 1.0 / (1.0 + np.exp(-np.clip(d / max(width, 1e-3), -30, 30)))


def _segment_distance(xx, yy, p, q) -> np.ndarray:
    """Distance of every pixel to the segment p-q (clavicles)."""
    px, py = p
    vx, vy = q[0] - px, q[1] - py
    t = np.clip(((xx - px) * vx + (yy - py) * vy) / (vx * vx + vy * vy), 0, 1)
    return np.hypot(xx - px - t * vx, yy - py - t * vy)


def _dome(lungs: np.ndarray, sigma: float) -> np.ndarray:
    """Per column, the row of the diaphragm: the lowest lung pixel, interpolated between lungs."""
    cols = np.nonzero(lungs.any(axis=0))[0]
    bottom = lungs.shape[0] - 1 - np.argmax(lungs[::-1, cols], axis=0)
    dome = np.interp(np.arange(lungs.shape[1]), cols, bottom).astype(np.float32)
    return ndi.gaussian_filter1d(dome, sigma, mode="nearest")


def render_anatomy(anat: Anatomy, coverage: np.ndarray, rib_contrast: float = 1.0) -> np.ndarray:
    """Draw the radiograph (float32 in ~[0, 1], no lesions, no exposure) around the lungs.

    ``coverage`` is the share of each pixel covered by lung (a bool mask, or the exact
    mask area-averaged to a coarser grid: the phantom draws anatomy at half size).
    """
    size = coverage.shape[0]
    yy, xx = _grid(size)
    s = float(size)
    lungs = coverage > 0.5
    ys, xs = np.nonzero(lungs)
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    cx, half_w, lh = (x0 + x1) / 2, (x1 - x0) / 2, float(y1 - y0)
    # lung darkness fades inside the mask only, so no dark seam is left outside it (a
    # lesion there, cut by the exact mask, would show one)
    soft_lung = ndi.gaussian_filter(coverage.astype(np.float32), 0.006 * s + 0.3) * coverage

    # Thorax: thickness through an elliptical cross-section ~ sqrt(1 - d^2); shoulders
    # widen above the apices, the neck narrows (soft edges).
    bw = half_w * anat.body_width
    shoulders = _soft(yy - (y0 - 0.05 * s), 0.02 * s)
    half_body = 0.13 * s + (bw - 0.13 * s) * shoulders + 0.05 * s * (yy - y0) / s
    d = np.abs(xx - cx) / half_body
    body = _soft(1 - d, 0.025)
    img = 0.03 + body * (0.22 + 0.22 * np.sqrt(np.clip(1 - d * d, 0, 1)))

    # Abdomen below the diaphragm domes (dense); mediastinum and heart between the lungs
    # (rows' non-lung pixels between the outermost lung pixels): the brightest soft tissue.
    dome = _dome(lungs, 0.03 * s)[None, :]
    img += 0.16 * body * _soft(yy - dome, 0.008 * s)
    between = np.maximum.accumulate(lungs, axis=1) & np.maximum.accumulate(lungs[:, ::-1], axis=1)[:, ::-1]
    central = between & ~lungs & (yy < dome)
    img += 0.15 * ndi.gaussian_filter(central.astype(np.float32), 0.01 * s + 0.3)
    upper = np.exp(-((xx - cx) / (0.09 * s)) ** 2) * _soft(y0 + 0.3 * lh - yy, 0.03 * s)
    heart_cx, heart_cy = cx + anat.heart_shift * 2 * half_w, y1 - 0.2 * lh
    r = np.hypot((xx - heart_cx) / (anat.heart_size * half_w), (yy - heart_cy) / (0.25 * lh))
    img += 0.12 * upper + 0.06 * _soft(1 - r, 0.05) * (1 - soft_lung)
    # Spine with vertebral bodies; trachea (air) down to the carina.
    spine = np.exp(-((xx - cx) / (0.035 * s)) ** 2)
    img += spine * (0.07 + 0.025 * np.cos(2 * np.pi * (yy - y0) / (0.085 * lh + 1)))
    img -= 0.1 * np.exp(-((xx - cx) / (0.012 * s + 0.5)) ** 2) * _soft(y0 + 0.3 * lh - yy, 0.02 * s)

    # Aerated lung is dark; vessels fan out from the hila (brighter medially).
    vessels = smooth_noise(np.random.default_rng(anat.vessel_seed), size, 0.006 * s + 0.4)
    medial = np.exp(-np.abs(xx - cx) / (0.6 * half_w))
    img -= soft_lung * (anat.lung_dark - 0.06 * medial - 0.025 * vessels * (0.4 + medial))

    # Posterior ribs: bands whose centre lines rise slightly then fall laterally
    # (y = y_k - 0.1 d + curve d^2), spaced a little wider downwards; anterior ribs
    # fainter and sloping down medially.
    dn = np.abs(xx - cx) / half_w
    u = (yy - y0 + lh * (0.1 * dn - anat.rib_curve * dn * dn)) / lh
    phase = anat.rib_count * np.sign(u) * np.abs(u) ** 0.85 + anat.rib_phase
    band = np.clip((np.cos(2 * np.pi * phase) - 0.1) / 0.9, 0, 1) ** 0.6
    ua = (yy - y0 - lh * 0.3 * (1 - np.clip(dn, 0, 1))) / lh
    band_a = np.clip((np.cos(2 * np.pi * (anat.rib_count * 0.7 * ua + anat.rib_phase)) - 0.3) / 0.7, 0, 1)
    cage = _soft(1.1 - dn, 0.04) * _soft(yy - y0 + 0.04 * s, 0.01 * s) * _soft(y1 - yy, 0.03 * s)
    img += rib_contrast * cage * (0.3 + 0.7 * soft_lung) * (0.055 * band + 0.025 * band_a)

    # Clavicles: from the sternal notch laterally and slightly upward across the apices.
    top = slice(0, int(min(y0 + 0.2 * s, size)))
    for side in (-1, 1):
        p = (cx + side * 0.05 * s, y0 + 0.04 * s)
        q = (cx + side * 1.05 * half_w, y0 - anat.clavicle_tilt * s)
        dist = _segment_distance(xx[top], yy[top], p, q)
        img[top] += 0.12 * rib_contrast * np.exp(-(dist / (0.013 * s + 0.5)) ** 2)
    return img.astype(np.float32)


def jitter_frame(img: np.ndarray, lungs: np.ndarray, scale: float, dx: float,
                 dy: float) -> tuple[np.ndarray, np.ndarray]:
    """Shift and scale a patient's drawn anatomy and its lung mask by the same affine map.

    Drawing once per patient and warping per image is far cheaper than redrawing, and
    keeps every image of a patient on the same anatomy. ``img`` may be on a coarser
    grid than ``lungs`` (it is upsampled in the same bilinear pass). The mask is warped
    as a float and thresholded at 0.5, so it stays exact for the image it goes with.
    """
    size = lungs.shape[0]
    c, k = (size - 1) / 2, img.shape[0] / size

    def warp(a: np.ndarray, k: float) -> np.ndarray:
        # output pixel o (size grid) reads input (o - c - d) / scale + c on the size grid,
        # i.e. ((that + 0.5) * k - 0.5) on a grid k times as fine (pixel centres aligned)
        offset = [(c - (c + d) / scale + 0.5) * k - 0.5 for d in (dy, dx)]
        return ndi.affine_transform(a, [k / scale, k / scale], offset, output_shape=(size, size),
                                    order=1, mode="nearest")

    return warp(img, k).astype(np.float32), warp(lungs.astype(np.float32), 1.0) > 0.5


def downsample(mask: np.ndarray, factor: int) -> np.ndarray:
    """Area-average a mask by an integer factor (share of each coarse pixel that is lung)."""
    if factor == 1:
        return mask.astype(np.float32)
    n = mask.shape[0] // factor * factor
    m = mask[:n, :n].astype(np.float32)
    return m.reshape(n // factor, factor, n // factor, factor).mean(axis=(1, 3))
