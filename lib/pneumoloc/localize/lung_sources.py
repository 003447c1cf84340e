"""Lung masks in the squashed M x M map frame, from several sources (registry ``LUNG_SOURCES``).

===============  ========  ==============================================================
source           exact?    what it reads
===============  ========  ==============================================================
``dataset``      yes       the images table's ``mask_path`` (PNG, same size as the image,
                           lungs > 0; the phantom's masks are exact)
``chexmask``     yes*      a CheXmask CSV (Gaggion et al. 2024): one row per image, columns
                           ``Left Lung`` / ``Right Lung`` holding run-length codes
                           ``"start length ..."`` (1-based starts into the row-major
                           flattened ``Height x Width`` mask); read by an id column
``pspnet``       model     torchxrayvision's ChestX-Det PSPNet (Left Lung + Right Lung
                           channels) from a local weights file; never downloads unless
                           ``allow_download=True``
``classical``    APPROX    the v7labs lung atlas (mean of torchxrayvision's shipped masks,
                           :mod:`pneumoloc.localize.lung_atlas`) placed by template matching and
                           fused with a two-class intensity model (MAP, EM); on the phantom
                           (60 images, 256 px, atlas without their masks) IoU 0.87 mean /
                           0.72 worst, Dice 0.93, vs 0.62 / 0.10 and 0.73 for Otsu and
                           morphology alone (``bench/references.py``), as printed by
                           ``.venv/bin/python bench/bench_lung_fallback.py``; not checked
                           on real radiographs (the zip holds masks, not images): every
                           table built on it says "approximate"
===============  ========  ==============================================================

(*) CheXmask masks are model outputs with a published quality score; exact as a file format.
Each loader returns :class:`LungMasks`; images whose mask is missing are counted, not guessed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ..registry import Registry

__all__ = ["LungMasks", "LUNG_SOURCES", "register_lung_source", "lung_masks", "resize_mask",
           "rle_decode", "chexmask_masks", "classical_lung_mask", "pspnet_masks",
           "PSPNET_WEIGHTS_NAME"]

PSPNET_WEIGHTS_NAME = "pspnet_chestxray_best_model_4.pth"


@dataclass(frozen=True)
class LungMasks:
    """bool ``[N, M, M]`` masks row-aligned with the images table.

    Attributes:
        approximate: True for sources that are heuristics (the classical fallback).
        missing: images without a mask (their mask is all False; LAR excludes them as
            ``no_lung``).
    """

    masks: np.ndarray
    source: str
    approximate: bool
    missing: int

    def describe(self) -> str:
        """One line: the source, flagged when approximate, and how many images have no mask."""
        flag = " (APPROXIMATE: LAR and lung-normalized energy are approximate)" if self.approximate else ""
        return f"lung masks: {self.source}{flag}, {self.missing} missing"


LUNG_SOURCES: Registry[Callable[..., LungMasks]] = Registry("lung mask source")


def register_lung_source(name: str):
    """Decorator: ``@register_lung_source("otsu")`` on ``fn(images, size, **options) -> LungMasks``."""
    return LUNG_SOURCES.register(name)


def lung_masks(source: str, images: pd.DataFrame, size: int, **options) -> LungMasks:
    """Lung masks of ``images`` (rows of the images table) at ``size x size``.

    Raises:
        KeyError: unknown source; the message lists the known ones.
    """
    return LUNG_SOURCES.lookup(source)(images, size, **options)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Squash a full-size boolean mask to ``size x size`` (area average, then > 1/2)."""
    from PIL import Image

    img = Image.fromarray(np.asarray(mask, bool).astype(np.uint8) * 255)
    return np.asarray(img.resize((size, size), Image.Resampling.BOX)) > 127


@register_lung_source("dataset")
def dataset_masks(images: pd.DataFrame, size: int) -> LungMasks:
    """Masks from the ``mask_path`` column (PNG, lungs > 0)."""
    from ..data.images import read_grayscale

    if "mask_path" not in images:
        raise ValueError("lung mask source 'dataset' needs a mask_path column in the images table; "
                         f"this dataset has none: use one of {sorted(set(LUNG_SOURCES) - {'dataset'})}")
    out = np.zeros((len(images), size, size), bool)
    missing = 0
    for i, p in enumerate(images["mask_path"]):
        if not isinstance(p, str) or not p or not Path(p).exists():
            missing += 1
            continue
        out[i] = resize_mask(read_grayscale(p) > 0, size)
    return LungMasks(out, "dataset", False, missing)


def rle_decode(rle: str, height: int, width: int) -> np.ndarray:
    """CheXmask run-length code -> bool ``[height, width]`` (1-based starts, row-major)."""
    runs = np.asarray(str(rle).split(), dtype=np.int64)
    if runs.size % 2:
        raise ValueError(f"run-length code has an odd number of values ({runs.size})")
    flat = np.zeros(height * width + 1, np.int32)
    starts, lengths = runs[0::2] - 1, runs[1::2]
    np.add.at(flat, starts, 1)  # +1 at each run start, -1 after its end, then a cumsum
    np.add.at(flat, starts + lengths, -1)
    return (np.cumsum(flat[:-1]) > 0).reshape(height, width)


@register_lung_source("chexmask")
def chexmask_masks(images: pd.DataFrame, size: int, table: str | os.PathLike = "",
                   id_column: str = "dicom_id", image_key: str = "image_id") -> LungMasks:
    """Masks from a CheXmask CSV, matched on ``table[id_column] == images[image_key]``."""
    if not table:
        raise ValueError("lung mask source 'chexmask' needs table=<path to the CheXmask CSV>")
    df = pd.read_csv(table, dtype={id_column: str})
    need = [id_column, "Left Lung", "Right Lung", "Height", "Width"]
    if missing_cols := [c for c in need if c not in df]:
        raise ValueError(f"{table}: CheXmask table lacks columns {missing_cols}; expected {need}")
    df = df.drop_duplicates(id_column).set_index(id_column)
    out = np.zeros((len(images), size, size), bool)
    missing = 0
    for i, key in enumerate(images[image_key].astype(str)):
        if key not in df.index:
            missing += 1
            continue
        r = df.loc[key]
        h, w = int(r["Height"]), int(r["Width"])
        full = np.zeros((h, w), bool)
        for col in ("Left Lung", "Right Lung"):
            if isinstance(r[col], str) and r[col].strip():
                full |= rle_decode(r[col], h, w)
        out[i] = resize_mask(full, size)
    return LungMasks(out, "chexmask", False, missing)


def classical_lung_mask(image: np.ndarray, atlas: np.ndarray | None = None) -> np.ndarray:
    """APPROXIMATE lung mask: the v7labs lung atlas fused with the image's intensities.

    See :func:`pneumoloc.localize.lung_atlas.atlas_lung_mask` (atlas box search, then a MAP
    two-class intensity model with the atlas as spatial prior). ``atlas`` defaults to
    :func:`pneumoloc.localize.lung_atlas.lung_atlas` (mean of the shipped v7labs masks).
    """
    from .lung_atlas import atlas_lung_mask

    return atlas_lung_mask(image, atlas)


@register_lung_source("classical")
def classical_masks(images: pd.DataFrame, size: int, pixels: np.ndarray | None = None,
                    atlas: np.ndarray | None = None) -> LungMasks:
    """The classical fallback on each image (``pixels`` = cached uint8 ``[N, S, S]`` images,
    else read from ``path``; ``atlas`` = a prior other than the v7labs mean); marked approximate."""
    from tqdm.auto import tqdm

    from ..data.images import read_grayscale
    from .lung_atlas import lung_atlas

    atlas = lung_atlas() if atlas is None else atlas
    out = np.zeros((len(images), size, size), bool)
    for i in tqdm(range(len(images)), desc="classical lung masks", unit="img", disable=len(images) < 50):
        img = pixels[i] if pixels is not None else read_grayscale(images["path"].iloc[i])
        out[i] = resize_mask(classical_lung_mask(img, atlas), size)
    missing = int((~out.reshape(len(out), -1).any(1)).sum())
    return LungMasks(out, "classical", True, missing)


@register_lung_source("pspnet")
def pspnet_masks(images: pd.DataFrame, size: int, weights: str | os.PathLike = "",
                 pixels: np.ndarray | None = None, allow_download: bool = False,
                 batch_size: int = 4, threshold: float = 0.5) -> LungMasks:
    """torchxrayvision's ChestX-Det PSPNet lungs: union of channels Left Lung and Right Lung.

    Each image is squashed to the model's native 512 x 512, scaled to [-1024, 1024]
    (``xrv.utils.normalize``), segmented, and a pixel is lung when the sigmoid of either
    lung channel exceeds ``threshold``; the 512 px mask is then squashed to ``size``.

    Args:
        weights: path of ``pspnet_chestxray_best_model_4.pth`` (default: torchxrayvision's cache
            folder ``~/.torchxrayvision/models_data/``). It is read with an explicit
            ``torch.load(weights_only=True)`` before torchxrayvision loads it, so a pickle that
            would run code is refused, also when ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` is set.
        allow_download: let torchxrayvision download the weights when missing (needs network).
        threshold: lung probability cut (0.5 = the model's own decision).
    """
    from ..data.images import read_grayscale

    # torchxrayvision's cache folder, spelled out so a missing file fails before the heavy import
    path = Path(weights or Path("~/.torchxrayvision/models_data") / PSPNET_WEIGHTS_NAME).expanduser()
    if not path.is_file() and not allow_download:
        raise FileNotFoundError(
            f"PSPNet lung segmentation weights not found at {path}. Offline fix: copy "
            f"{PSPNET_WEIGHTS_NAME} (torchxrayvision release v1) there or pass weights=<file>; "
            "online: pass allow_download=True; or use lung mask source 'classical' (approximate).")
    if path.name != PSPNET_WEIGHTS_NAME:
        raise ValueError(f"weights file must be named {PSPNET_WEIGHTS_NAME} (torchxrayvision looks it up by name); got {path.name}")
    import torch
    import torchxrayvision as xrv

    stamp = path.stat() if path.is_file() else None
    model = _load_pspnet(str(path), stamp and (stamp.st_mtime_ns, stamp.st_size))
    lung_ch = [model.targets.index("Left Lung"), model.targets.index("Right Lung")]
    out = np.zeros((len(images), size, size), bool)
    with torch.no_grad():
        for a in range(0, len(images), batch_size):
            imgs = [pixels[i] if pixels is not None else read_grayscale(images["path"].iloc[i])
                    for i in range(a, min(a + batch_size, len(images)))]
            x = torch.stack([torch.from_numpy(xrv.utils.normalize(_square(im, 512), 255))[None]
                             for im in imgs])
            prob = torch.sigmoid(model(x))[:, lung_ch].amax(1).numpy()
            for j, p in enumerate(prob):
                out[a + j] = resize_mask(p > threshold, size)
    return LungMasks(out, "pspnet", False, int((~out.reshape(len(out), -1).any(1)).sum()))


@lru_cache(maxsize=1)
def _load_pspnet(path: str, stamp: tuple[int, int] | None):
    """The PSPNet from ``path``, built once per file version (``stamp`` = mtime, size)."""
    import torchxrayvision as xrv

    _refuse_unsafe_pickle(path)
    try:
        model = xrv.baseline_models.chestx_det.PSPNet(cache_dir=str(Path(path).parent))
    except Exception as e:  # torchxrayvision only prints "Loading failure" and re-raises
        raise ValueError(f"{path}: not a loadable PSPNet state dict (torchxrayvision's published "
                         f"{PSPNET_WEIGHTS_NAME} is expected): {type(e).__name__}: {e}") from e
    return model.eval()


def _refuse_unsafe_pickle(path: str) -> None:
    """Read ``path`` with torch's restricted unpickler before torchxrayvision reads it.

    ``weights_only=True`` is passed explicitly: torch (2.14, ``torch/serialization.py``
    ``load``) lets ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` turn the restricted unpickler off
    only for calls that leave ``weights_only`` unset. torchxrayvision then loads the same
    bytes, which the restricted unpickler accepted (tensors and allow-listed types only),
    so no code runs even under a torchxrayvision release that calls ``torch.load`` bare.

    Raises:
        ValueError: the file holds anything ``weights_only=True`` refuses, or is unreadable.
    """
    import torch

    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a loadable PSPNet state dict: torch.load(weights_only=True) refused it "
                         f"(a published {PSPNET_WEIGHTS_NAME} holds tensors only): "
                         f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e


def _square(image: np.ndarray, size: int) -> np.ndarray:
    """Squash to ``size x size`` (same convention as the map frame)."""
    from PIL import Image

    return np.asarray(Image.fromarray(np.asarray(image, np.uint8)).resize((size, size), Image.Resampling.BILINEAR))
