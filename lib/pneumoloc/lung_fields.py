"""Real lung fields for the phantom: the 517 v7labs lung masks shipped in ``torchxrayvision``.

The masks (``data/semantic_masks_v7labs_lungs.zip``, PNG, 0/255, up to 3000 px) are
read straight from the installed package, without importing it (that would import
torch). Unusable masks (empty, a single lung, fragments, implausible shapes) are
rejected; usable ones are cropped to the lungs' bounding box for
:func:`pneumoloc.anatomy.place_lungs`.
"""
from __future__ import annotations

import importlib.util
import io
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

__all__ = ["LUNG_ZIP", "torchxrayvision_data", "lung_mask_names", "load_lung_mask"]

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
