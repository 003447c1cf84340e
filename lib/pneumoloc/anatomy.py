"""Drawing a chest radiograph: real lung masks, ribs, clavicles, mediastinum, heart, diaphragm.

The phantom (:mod:`pneumoloc.phantom`) needs images that look enough like a PA chest
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
"""
from __future__ import annotations

import importlib.util
import io
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "torchxrayvision_data", "lung_mask_names", "load_lung_mask", "Anatomy", "sample_anatomy",
    "place_lungs", "render_anatomy", "jitter_frame", "downsample", "smooth_noise", "rsna_boxes",
    "draw_opacities",
]

LUNG_ZIP = "semantic_masks_v7labs_lungs.zip"
_CROP_MAX = 384  # cached crops are stored at most this big (enough for 256-384 px phantoms)


def torchxrayvision_data() -> Path:
    """The ``data`` folder of the installed torchxrayvision, found without importing it (torch)."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "torchxrayvision is not installed; the phantom needs its shipped lung masks and RSNA "
            "boxes: pip install torchxrayvision (it is in pyproject.toml)")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


@lru_cache(maxsize=1)
def _lung_zip() -> zipfile.ZipFile:
    """The v7labs zip, opened once per process (reading its directory costs ~20 ms)."""
    return zipfile.ZipFile(torchxrayvision_data() / LUNG_ZIP)


@lru_cache(maxsize=1)
def lung_mask_names() -> tuple[str, ...]:
    """Names of the mask files inside the v7labs zip, sorted (fixed order -> reproducible)."""
    return tuple(sorted(n for n in _lung_zip().namelist() if not n.endswith("/")))


def _is_degenerate(mask: np.ndarray) -> bool:
    """Empty masks, single lungs, fragments and implausible shapes are not usable lung fields.

    Judged on a ~256-px subsample so the verdict does not depend on the phantom size.
    82 of the 517 v7labs masks are empty (their images were CT slices or unlabeled).
    """
    if mask.sum() < 200:
        return True
    lab, n = ndi.label(mask)
    sizes = np.sort(np.bincount(lab.ravel())[1:])[::-1]
    if n < 2 or sizes[1] < 0.15 * sizes[0]:  # need two lungs of comparable size
        return True
    ys, xs = np.nonzero(mask)
    h, w = np.ptp(ys) + 1, np.ptp(xs) + 1
    return not (0.8 <= w / h <= 1.7 and 0.35 <= mask.sum() / (h * w))


@lru_cache(maxsize=None)
def load_lung_mask(name: str) -> np.ndarray | None:
    """The lungs of one v7labs mask cropped to their bounding box (bool), or None if degenerate.

    Masks (PNG, 0/255, up to 3000 px) are subsampled to at most ~``_CROP_MAX`` px; only
    the two largest connected components (the lungs) are kept, specks are dropped.
    Cached per process: a mask is decoded from the zip once.
    """
    from PIL import Image

    full = np.asarray(Image.open(io.BytesIO(_lung_zip().read(name))).convert("L")) > 127
    if _is_degenerate(full[::-(-max(full.shape) // 256), ::-(-max(full.shape) // 256)]):
        return None
    step = max(1, -(-max(full.shape) // _CROP_MAX))
    mask = full[::step, ::step]
    lab, _ = ndi.label(mask)
    keep = np.argsort(np.bincount(lab.ravel())[1:])[::-1][:2] + 1
    mask = np.isin(lab, keep)
    ys, xs = np.nonzero(mask)
    return np.ascontiguousarray(mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1])


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


# -- pneumonia: consolidations at real RSNA box positions ------------------------------
RSNA_ZIP = "kaggle_stage_2_train_labels.csv.zip"
# The lung field in RSNA's 1024-px frame, taken as the 5th/95th percentiles of the box
# extents in the table (x 122..912, y 136..899): boxes are mapped relative to it.
_RSNA_LUNGS = (120.0, 130.0, 910.0, 900.0)


@lru_cache(maxsize=1)
def rsna_boxes() -> tuple[np.ndarray, np.ndarray]:
    """The real RSNA stage-2 boxes (x, y, w, h in 1024 px) and offsets grouping them by patient."""
    import pandas as pd

    df = pd.read_csv(torchxrayvision_data() / RSNA_ZIP).dropna(subset=["x"])
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
