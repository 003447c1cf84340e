"""A probabilistic lung atlas and its fit to one radiograph (shape prior of the classical fallback).

The atlas is the pixel-wise mean of the v7labs lung masks shipped in torchxrayvision
(``semantic_masks_v7labs_lungs.zip``; the zip holds masks only, not their images), each
cropped to the bounding box of its two lungs and resized to ``ATLAS_SIZE`` squared: the
probability that a point at a given position relative to the lungs' bounding box is lung
(a probabilistic atlas as in Candemir et al., IEEE TMI 2014, without their non-rigid
registration). Masks are read and filtered by :mod:`pneumoloc.data.xrv_assets`, as for the phantom.
Decoding the 517 PNGs takes seconds, and every notebook 04 and 05 of a run without dataset
masks needs the atlas, so it is stored once per machine under :data:`ATLAS_CACHE_DIR`, in a
file named by what it depends on (torchxrayvision version and zip size, ``ATLAS_SIZE``,
the excluded masks, the source of the functions that compute it): another version or
changed code gives another file, never a stale atlas. The file is written atomically
with its SHA-256 (:func:`pneumoloc.storage.save_arrays`); a truncated or corrupt one is
rebuilt and replaced.

:func:`fit_atlas` places the atlas on an image by searching the bounding box (centre, top,
width, height) that best explains the image's dark pixels as lungs (template matching by
coordinate search); :mod:`pneumoloc.localize.lung_sources` fuses the placed atlas with the intensities.
"""
from __future__ import annotations

import hashlib
import inspect
import os
import sys
import warnings
import zipfile
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import numpy as np

from ..environment import PROJECT_ROOT
from ..storage import CorruptFileError, load_arrays, save_arrays

__all__ = ["ATLAS_SIZE", "ATLAS_CACHE_DIR", "lung_atlas", "build_lung_atlas", "atlas_cache_file", "place_atlas",
           "fit_atlas", "body_mask", "atlas_lung_mask"]

ATLAS_SIZE = 64  # atlas side in pixels (the mean shape is smooth: more adds nothing)
ATLAS_CACHE_DIR = PROJECT_ROOT / ".cache" / "lung_atlas"  # git-ignored (.gitignore: .cache/)
_FIT_SIZE = 64  # the box search runs on the image squashed to this side (cheap, smooth score)
_CONFIDENT = 0.6  # atlas prior above which a pixel is lung whatever its intensity


def _atlas_member(crop: np.ndarray) -> np.ndarray:
    """One usable lung crop (:func:`pneumoloc.data.xrv_assets.load_lung_mask`) on the atlas grid."""
    from PIL import Image

    small = Image.fromarray(crop.astype(np.uint8) * 255).resize((ATLAS_SIZE, ATLAS_SIZE), Image.Resampling.BOX)
    return np.asarray(small, np.float32) / 255


def build_lung_atlas(exclude: frozenset[str] = frozenset()) -> np.ndarray:
    """float32 ``[ATLAS_SIZE, ATLAS_SIZE]`` mean lung mask, computed from the zip (no cache).

    Args:
        exclude: base names of zip members to leave out.
    """
    from ..data.xrv_assets import LUNG_ZIP, load_lung_mask, lung_mask_names, torchxrayvision_data

    # the phantom's own reader and filter (two lungs, plausible shape), so both use the same masks
    crops = [load_lung_mask(n) for n in lung_mask_names() if n.rsplit("/", 1)[-1] not in exclude]
    members = [_atlas_member(c) for c in crops if c is not None]
    if not members:
        raise RuntimeError(f"no usable lung mask in {torchxrayvision_data() / LUNG_ZIP}")
    return np.mean(members, axis=0, dtype=np.float32)


def atlas_cache_file(exclude: frozenset[str] = frozenset(), folder: str | os.PathLike | None = None) -> Path:
    """The cache file of the atlas for ``exclude``, named by a SHA-256 of everything it depends on.

    The key holds the torchxrayvision version and the byte size of its lung zip, ``ATLAS_SIZE``,
    the sorted excluded names, and the source code of this module and of the functions that
    read and filter the masks, so an edit to any of them gives another file rather than a
    stale atlas.
    """
    from ..data import xrv_assets

    parts = [metadata.version("torchxrayvision"), str(xrv_assets.xrv_data_file(xrv_assets.LUNG_ZIP).stat().st_size),
             str(ATLAS_SIZE), str(xrv_assets._CROP_MAX), *sorted(exclude)]
    parts += [inspect.getsource(code) for code in (sys.modules[__name__], xrv_assets.load_lung_mask,
                                                   xrv_assets._is_degenerate)]
    key = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:20]
    return Path(folder if folder is not None else ATLAS_CACHE_DIR) / f"atlas_{key}.npz"


def _read_cached(path: Path) -> np.ndarray | None:
    """The atlas stored at ``path``, or None when it is absent, corrupt or not an atlas."""
    try:
        atlas = load_arrays(path)["atlas"]
    except (FileNotFoundError, CorruptFileError, KeyError, ValueError, OSError, zipfile.BadZipFile):
        return None
    ok = atlas.shape == (ATLAS_SIZE, ATLAS_SIZE) and atlas.dtype == np.float32 and np.isfinite(atlas).all()
    return atlas if ok else None


@lru_cache(maxsize=4)
def lung_atlas(exclude: frozenset[str] = frozenset(), cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """float32 ``[ATLAS_SIZE, ATLAS_SIZE]`` mean lung mask in lung-bounding-box coordinates.

    Read from :func:`atlas_cache_file` when it holds a valid atlas, else built
    (:func:`build_lung_atlas`, seconds: decoding 517 PNGs dominates) and stored there; an
    unwritable cache folder only costs the rebuild next time (a warning says so). Kept per
    process and arguments.

    Args:
        exclude: base names of zip members to leave out (the bench leaves out the masks the
            evaluated phantom images were drawn from, so the prior never saw its test shapes).
        cache_dir: folder of the cache files (default :data:`ATLAS_CACHE_DIR`).
    """
    path = atlas_cache_file(exclude, cache_dir)
    atlas = _read_cached(path)
    if atlas is None:
        atlas = build_lung_atlas(exclude)
        try:
            save_arrays(path, atlas=atlas)
        except OSError as e:
            warnings.warn(f"lung atlas not cached ({e}); make {path.parent} writable to skip the rebuild",
                          stacklevel=2)
    atlas.flags.writeable = False  # shared by the cache
    return atlas


def place_atlas(atlas: np.ndarray, box: tuple[float, float, float, float],
                shape: tuple[int, int]) -> np.ndarray:
    """The atlas stretched onto ``box`` = (x0, y0, width, height) in an image of ``shape``.

    Bilinear sampling in box coordinates; outside the box the prior is 0.
    """
    from scipy import ndimage

    x0, y0, w, h = box
    a = atlas.shape[0]
    yy = (np.arange(shape[0]) + 0.5 - y0) / h * a - 0.5
    xx = (np.arange(shape[1]) + 0.5 - x0) / w * a - 0.5
    rows = ndimage.map_coordinates(atlas, [np.repeat(yy, len(xx)), np.tile(xx, len(yy))],
                                   order=1, mode="constant", cval=0.0)
    return rows.reshape(shape)


def fit_atlas(atlas: np.ndarray, darkness: np.ndarray, box: tuple[float, float, float, float],
              valid: np.ndarray | None = None, rounds: int = 4) -> tuple[float, float, float, float]:
    """Refine ``box`` = (x0, y0, width, height) so the placed atlas matches the dark pixels.

    The score is the normalized cross-correlation (Pearson r; template matching, Lewis
    1995) between the placed atlas and ``darkness`` over the ``valid`` pixels (the body):
    invariant to contrast and to the share of dark pixels, so neither a bright (consolidated)
    lung shrinks the box nor dark soft tissue inflates it. Each round tries, for centre x,
    top, width and height in turn, shifts of -20 % .. +20 % of the box size (halved every
    round) and keeps the best (coordinate search).
    """
    valid = np.ones(darkness.shape, bool) if valid is None else valid
    d = darkness[valid] - darkness[valid].mean()

    def score(b):
        p = place_atlas(atlas, b, darkness.shape)[valid]
        return float((p - p.mean()) @ d / (p.std() + 1e-12))  # r up to a positive factor

    best = score(box)
    x0, y0, w, h = box
    for r in range(rounds):
        for k in range(4):
            for s in np.linspace(-0.2, 0.2, 9) * 0.5 ** r:
                cand = [x0 + w / 2, y0, w, h]
                cand[k] += s * (w if k in (0, 2) else h)
                b = (cand[0] - cand[2] / 2, cand[1], cand[2], cand[3])
                if min(b[2], b[3]) >= 4 and (v := score(b)) > best:
                    best, (x0, y0, w, h) = v, b
    return x0, y0, w, h


def body_mask(image: np.ndarray) -> np.ndarray:
    """The thorax: per row, the span between the first and last non-air pixel.

    Air is the darkest Otsu class (Otsu of the pixels below the image's Otsu threshold);
    a small opening drops noise in the air before the spans are taken.
    """
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    low = image[image < threshold_otsu(image)]
    solid = image > (threshold_otsu(low) if np.ptp(low) > 0 else low.max(initial=0))
    solid = ndimage.binary_opening(solid, iterations=2)
    cols = np.arange(image.shape[1])
    has = solid.any(1)
    first = np.where(has, np.argmax(solid, 1), image.shape[1])
    last = np.where(has, image.shape[1] - 1 - np.argmax(solid[:, ::-1], 1), -1)
    return (cols[None] >= first[:, None]) & (cols[None] <= last[:, None])


def atlas_lung_mask(image: np.ndarray, atlas: np.ndarray | None = None, em_steps: int = 3) -> np.ndarray:
    """APPROXIMATE lungs: the atlas prior fused with a two-class intensity model (MAP).

    1. body (:func:`body_mask`); inside it, three-class Otsu (Liao et al. 2001) gives the
       lung/tissue cut ``t`` (lungs are the darkest class of the thorax);
    2. the atlas box is searched (:func:`fit_atlas`) on ``sign(t - image)`` inside the
       body, starting from the middle 80 % of the body width;
    3. each body pixel's posterior P(lung | intensity) = prior * N(lung) / (prior * N(lung)
       + (1 - prior) * N(tissue)), the Gaussians re-estimated from the posterior weights
       ``em_steps`` times (EM with a spatial prior, as in atlas-based tissue
       classification, Ashburner & Friston 2005);
    4. posterior > 1/2 or atlas prior > 0.6 (keeps bright lesions inside confident lung),
       the two largest components, holes filled.
    """
    from PIL import Image
    from scipy import ndimage
    from skimage.filters import threshold_multiotsu

    img = np.asarray(image, np.float64)
    body = body_mask(img) if img.max() > img.min() else np.zeros(img.shape, bool)
    if np.unique(img[body]).size < 3:
        return np.zeros(img.shape, bool)
    atlas = lung_atlas() if atlas is None else atlas
    t = threshold_multiotsu(img[body], 3)[0]
    h, w = img.shape
    n = min(_FIT_SIZE, h, w)
    dark = np.asarray(Image.fromarray(np.sign(t - img).astype(np.float32)).resize((n, n), Image.Resampling.BOX))
    inside = np.asarray(Image.fromarray(body.astype(np.uint8) * 255).resize((n, n), Image.Resampling.BOX)) > 127
    xs = np.flatnonzero(body.any(0))
    x0, bw = xs[0] * n / w, (xs[-1] - xs[0] + 1) * n / w
    bx, by, bw, bh = fit_atlas(atlas, dark, (x0 + 0.1 * bw, 0.1 * n, 0.8 * bw, 0.7 * n), inside)
    prior = np.clip(place_atlas(atlas, (bx * w / n, by * h / n, bw * w / n, bh * h / n), img.shape), 0, 1)
    post = prior * body
    for _ in range(em_steps):
        like = [_gaussian(img, weight) for weight in (post, (1 - post) * body)]
        post = body * prior * like[0] / (prior * like[0] + (1 - prior) * like[1] + 1e-300)
    # pneumonia opacities are bright: where the atlas is confident the pixel stays lung
    # (LAR must count map energy on a lesion as inside the lungs)
    labels, k = ndimage.label((post > 0.5) | ((prior > _CONFIDENT) & body))
    sizes = np.bincount(labels.ravel(), minlength=k + 1)
    sizes[0] = 0
    keep = np.argsort(sizes)[::-1][:2]
    return ndimage.binary_fill_holes(np.isin(labels, keep[sizes[keep] > 0]))


def _gaussian(img: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Density of ``img`` under the Gaussian fitted to it with ``weight`` (std >= 1 grey level)."""
    total = weight.sum() + 1e-12
    mean = (weight * img).sum() / total
    std = max(np.sqrt((weight * (img - mean) ** 2).sum() / total), 1.0)
    return np.exp(-0.5 * ((img - mean) / std) ** 2) / std
