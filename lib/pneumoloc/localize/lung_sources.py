"""Lung masks in the squashed M x M map frame, from several sources (registry ``LUNG_SOURCES``).

===============  ========  ==============================================================
source           exact?    what it reads
===============  ========  ==============================================================
``dataset``      yes       the images table's ``mask_path`` (PNG, same size as the image,
                           lungs > 0; the phantom's masks are exact)
``chexmask``     yes*      a CheXmask CSV (Gaggion et al. 2024; read by
                           :mod:`pneumoloc.data.chexmask`): both lungs' run-length codes,
                           masks with ``Dice RCA (Mean)`` below 0.7 dropped; NIH images by
                           ``Image Index``, RSNA images through the challenge's RSNA -> NIH
                           mapping file (``mapping=``)
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
import warnings
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from ..data.chexmask import LUNGS, MIN_DICE, ChexmaskRows, read_chexmask, read_rsna_nih_mapping
from ..registry import Registry

__all__ = ["LungMasks", "LUNG_SOURCES", "register_lung_source", "lung_masks", "resize_mask",
           "chexmask_masks", "classical_lung_mask", "pspnet_masks",
           "PSPNET_WEIGHTS_NAME"]

PSPNET_WEIGHTS_NAME = "pspnet_chestxray_best_model_4.pth"


@dataclass(frozen=True)
class LungMasks:
    """bool ``[N, M, M]`` masks row-aligned with the images table.

    Attributes:
        approximate: True for sources that are heuristics (the classical fallback).
        missing: images without a mask (their mask is all False; LAR excludes them as
            ``no_lung``).
        excluded: why they have none, reason -> count, when the source knows (CheXmask).
    """

    masks: np.ndarray
    source: str
    approximate: bool
    missing: int
    excluded: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        """One line: the source, flagged when approximate, and how many images have no mask (and why)."""
        flag = " (APPROXIMATE: LAR and lung-normalized energy are approximate)" if self.approximate else ""
        why = f" ({', '.join(f'{k}: {v}' for k, v in self.excluded.items())})" if self.excluded else ""
        return f"lung masks: {self.source}{flag}, {self.missing} missing{why}"


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


@register_lung_source("chexmask")
def chexmask_masks(images: pd.DataFrame, size: int, table: str | os.PathLike = "",
                   mapping: str | os.PathLike = "", min_dice: float = MIN_DICE, id_column: str = "",
                   structures: Sequence[str] = LUNGS, image_key: str = "image_id") -> LungMasks:
    """Masks from a CheXmask CSV (:mod:`pneumoloc.data.chexmask`), squashed to ``size``.

    Args:
        table: the CSV (``OriginalResolution/ChestX-Ray8.csv`` for NIH and RSNA images);
            relative paths are taken from the project root.
        mapping: RSNA's ``pneumonia-challenge-dataset-mappings_2018.json``: ``images`` hold
            RSNA ids, looked up as their NIH image (empty: ids are the CSV's own).
        min_dice: keep masks with ``Dice RCA (Mean) >= min_dice`` (CheXmask's advice: 0.7).
        structures: CSV columns united into the mask (default both lungs; ``["Left Lung"]``
            for one).

    Images without a usable mask are counted in ``excluded`` by reason: ``not_in_mapping``,
    ``no_chexmask_row``, ``below_dice``, ``malformed_rle`` (also warned, with file and line)
    and ``empty_mask``.

    Raises:
        ValueError: no ``table``; a mask whose frame is not the image's (aspect ratio off by
            more than a pixel: a ``Preprocessed`` CSV, or another dataset's).
    """
    from ..environment import resolve

    if not table:
        raise ValueError("lung mask source 'chexmask' needs table=<path to the CheXmask CSV>, e.g. "
                         "lung_options={'table': 'data/chexmask/OriginalResolution/ChestX-Ray8.csv'}")
    ids = images[image_key].astype(str)
    keys = ids.map(read_rsna_nih_mapping(resolve(mapping))) if mapping else ids
    rows = _chexmask_rows(resolve(table), frozenset(keys.dropna()), min_dice, id_column)
    out = np.zeros((len(images), size, size), bool)
    excluded: Counter[str] = Counter()
    malformed: list[str] = []
    for i, key in enumerate(keys):
        reason = _why_no_mask(key, rows)
        if not reason:
            _check_frame(rows, key, images.iloc[i])
            full, reason = _decode(rows, key, structures, malformed)
            if not reason:
                out[i] = resize_mask(full, size)
        excluded[reason] += bool(reason)
    if malformed:
        warnings.warn(f"{len(malformed)} CheXmask masks with malformed run-length codes skipped: "
                      + "; ".join(malformed[:3]), stacklevel=2)
    excluded = {k: v for k, v in sorted(excluded.items()) if v}
    return LungMasks(out, "chexmask", False, sum(excluded.values()), excluded)


def _why_no_mask(key, rows: ChexmaskRows) -> str:
    """Why ``key`` has no CheXmask row to decode ("" when it has one)."""
    return rows.why_missing(key) if isinstance(key, str) else "not_in_mapping"


def _decode(rows: ChexmaskRows, key: str, structures: Sequence[str],
            problems: list[str]) -> tuple[np.ndarray | None, str]:
    """The full-size mask of ``key`` and why it is unusable ("" when usable); a malformed code's
    message is appended to ``problems``."""
    try:
        full = rows.mask(key, structures)
    except ValueError as e:
        problems.append(str(e))
        return None, "malformed_rle"
    return full, "" if full.any() else "empty_mask"


def _check_frame(rows: ChexmaskRows, key: str, image: pd.Series) -> None:
    """The mask must cover the image's frame: same aspect ratio, to a pixel of rounding."""
    if "width" not in image or "height" not in image or pd.isna(image["width"]) or pd.isna(image["height"]):
        return
    h, w = rows.frame(key)
    if abs(h - w * float(image["height"]) / float(image["width"])) > 1:
        raise ValueError(
            f"{rows.path} line {rows.rows.loc[key, 'line']}: the CheXmask mask of {key!r} is {h} x {w} "
            f"(height x width) but the image is {int(image['height'])} x {int(image['width'])}: not the same "
            "frame. Use CheXmask's OriginalResolution CSV of the dataset the images come from (the "
            "Preprocessed masks are padded to 1024 x 1024).")


# the rows last read: (file, version, Dice cut, id column) -> (ids asked so far, their rows)
_CHEXMASK_ROWS: dict[tuple, tuple[frozenset[str], ChexmaskRows]] = {}


def _chexmask_rows(path: Path, keys: frozenset[str], min_dice: float, id_column: str) -> ChexmaskRows:
    """The rows of ``keys``; the file (GBs for NIH) is streamed again only for ids not asked before
    or a new file version (notebook 04 asks for the test images, then for some of them)."""
    if not path.is_file():
        raise FileNotFoundError(f"CheXmask table {path} not found: download it from PhysioNet "
                                "(chexmask-cxr-segmentation-data) into data/chexmask/ (data/README.md)")
    st = path.stat()
    tag = (str(path), st.st_mtime_ns, st.st_size, float(min_dice), id_column)
    asked, rows = _CHEXMASK_ROWS.get(tag, (frozenset(), None))
    if rows is None or not keys <= asked:
        asked = asked | keys
        _CHEXMASK_ROWS.clear()  # one table held at a time
        _CHEXMASK_ROWS[tag] = asked, read_chexmask(path, asked, min_dice, id_column)
    return _CHEXMASK_ROWS[tag][1]


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
