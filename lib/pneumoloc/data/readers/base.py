"""Building blocks every real-dataset reader shares.

* :func:`reader` — registers a reader and checks its keyword options: an unknown
  option is an error listing the valid ones with their defaults, a value of the
  wrong type or outside its choices is an error, and the effective options are
  stored in ``tables.options`` (so the run records exactly how it read the data).
* :func:`read_csv` / :func:`check_values` — a missing file, a missing column or a
  value outside the allowed set is an error naming the file, the row or column and
  the expected layout (``data/README.md``).
* :func:`uncertain_policy` — CheXpert-style 1 / 0 / -1 / blank labels to 1 / 0 / NaN
  (Irvin et al. 2019, CheXpert, section 4: U-Ones, U-Zeros, U-Ignore).
* :func:`finish` — probes every listed image, moves unreadable ones into
  ``tables.skipped`` with the reason (loaded + skipped == listed), stops when too many
  are bad. ``width``/``height`` are those of the decoded array (EXIF orientation
  applied); an EXIF-rotated or -mirrored image that has boxes is skipped, because a
  box table does not say whether its boxes were drawn on the stored or the displayed
  pixels (DICOMs carry no EXIF; none of the boxed datasets ships rotated files).
"""
from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd

from ..images import probe_images
from ..tables import DatasetTables
from . import listing, register_reader

__all__ = [
    "reader", "read_csv", "check_values", "uncertain_policy", "labeler_findings", "finish", "TooManySkippedError",
    "LayoutError", "UNCERTAIN_POLICIES", "BLANK_POLICIES", "CHEXPERT_FINDINGS",
]

UNCERTAIN_POLICIES = ("ones", "zeros", "ignore")
BLANK_POLICIES = ("zeros", "ignore")
# The 14 labels of the CheXpert labeler, shared by CheXpert and MIMIC-CXR (same column names).
CHEXPERT_FINDINGS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
    "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
    "Pleural Other", "Fracture", "Support Devices",
)


class LayoutError(ValueError):
    """The dataset folder does not have the expected files, columns or values."""


class TooManySkippedError(RuntimeError):
    """More images were unreadable than ``max_skipped_fraction`` allows; ``.skipped`` lists them."""

    def __init__(self, message: str, skipped: pd.DataFrame):
        super().__init__(message)
        self.skipped = skipped


def reader(name: str, **choices: Iterable[str]) -> Callable:
    """Register ``fn(root, **options)`` as reader ``name`` with checked options.

    Args:
        name: registry key (``read_dataset(name, root, ...)``).
        choices: for string options, the allowed values, e.g. ``uncertain=UNCERTAIN_POLICIES``.
    """
    def deco(fn: Callable[..., DatasetTables]) -> Callable[..., DatasetTables]:
        params = list(inspect.signature(fn).parameters.values())[1:]
        defaults = {p.name: p.default for p in params}

        @functools.wraps(fn)
        def wrapped(root: str, **options: Any) -> DatasetTables:
            opts = dict(defaults)
            opts.update(_checked(name, options, defaults, choices))
            tables = fn(root, **opts)
            tables.options = {k: list(v) if isinstance(v, tuple) else v for k, v in opts.items()}
            return tables

        return register_reader(name)(wrapped)
    return deco


def _checked(name: str, options: dict, defaults: dict, choices: dict) -> dict:
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        valid = ", ".join(f"{k}={v!r}" for k, v in defaults.items())
        raise TypeError(f"reader {name!r}: unknown option(s) {unknown}; valid options: {valid}")
    out = {}
    for k, v in options.items():
        d = defaults[k]
        if isinstance(d, tuple) and isinstance(v, (list, tuple)):
            v = tuple(v)  # lists come from JSON/YAML run specs
        elif isinstance(d, float) and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if d is not None and type(v) is not type(d):
            raise TypeError(f"reader {name!r}: option {k}={v!r} should be {type(d).__name__} "
                            f"(default {d!r})")
        if k in choices and v not in choices[k]:
            raise ValueError(f"reader {name!r}: option {k}={v!r} not in {list(choices[k])}")
        out[k] = v
    return out


def read_csv(path: Path, columns: Iterable[str], layout: str, **kwargs: Any) -> pd.DataFrame:
    """Read a dataset CSV, failing with the file, the missing columns and ``layout``."""
    path = Path(path)
    if not path.is_file():
        raise LayoutError(f"{path} not found; expected layout: {layout}")
    try:
        df = pd.read_csv(path, **kwargs)
    except (ValueError, pd.errors.ParserError) as e:
        raise LayoutError(f"{path}: cannot parse as CSV ({e}); expected layout: {layout}") from e
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise LayoutError(f"{path}: missing column(s) {missing} (found {list(df.columns)}); "
                          f"expected layout: {layout}")
    return df


def check_values(df: pd.DataFrame, column: str, allowed: Iterable, path: Path, layout: str,
                 allow_nan: bool = False) -> None:
    """Error naming file, CSV line (header = line 1) and column of the first bad value."""
    allowed = list(allowed)
    col = df[column]
    bad = ~col.isin(allowed) & ~(col.isna() if allow_nan else False)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        value = col.iloc[i].item() if hasattr(col.iloc[i], "item") else col.iloc[i]
        raise LayoutError(
            f"{path}: line {i + 2}, column {column!r}: value {value!r} not in {allowed}"
            f"{' or blank' if allow_nan else ''} ({int(bad.sum())} bad rows); expected layout: {layout}")


def uncertain_policy(values: pd.DataFrame, uncertain: str, blank: str) -> pd.DataFrame:
    """CheXpert labels (1, 0, -1, NaN=blank) to 1.0 / 0.0 / NaN.

    ``uncertain``: ``"ones"`` (-1 -> 1, U-Ones, the MIMIC-CXR study's choice),
    ``"zeros"`` (-1 -> 0) or ``"ignore"`` (-1 -> NaN, masked in the loss).
    ``blank`` (finding not mentioned in the report): ``"zeros"`` (the labeler's
    convention: unmentioned = negative) or ``"ignore"`` (NaN).
    """
    out = values.astype(float).copy()
    u = {"ones": 1.0, "zeros": 0.0, "ignore": np.nan}[uncertain]
    out = out.mask(values == -1, u)
    if blank == "zeros":
        out = out.mask(values.isna(), 0.0)
    return out


def labeler_findings(df: pd.DataFrame, path: Path, layout: str, uncertain: str,
                     blank: str) -> pd.DataFrame:
    """The 14 CheXpert-labeler columns of ``df``, checked (1/0/-1/blank) and policy-mapped."""
    for f in CHEXPERT_FINDINGS:
        check_values(df, f, [1, 0, -1], path, layout, allow_nan=True)
    out = uncertain_policy(df[list(CHEXPERT_FINDINGS)], uncertain, blank)
    return out.reset_index(drop=True)


def _refuse_turned_boxed(images: pd.DataFrame, sizes: pd.DataFrame, skipped: pd.DataFrame,
                         boxes: pd.DataFrame | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mark not ok (and list in ``skipped``) the images with boxes whose EXIF orientation is
    not 1: the decoder transposes their pixels, so boxes in an unknown frame would be misplaced."""
    if boxes is None or len(boxes) == 0:
        return sizes, skipped
    boxed = images["image_id"].astype(str).isin(set(boxes["image_id"].astype(str))).to_numpy()
    turned = sizes["ok"].to_numpy() & (sizes["orientation"].to_numpy() != 1) & boxed
    if not turned.any():
        return sizes, skipped
    reasons = [f"EXIF orientation {o} transposes the pixels, but the box table does not say whether its "
               "boxes are in the stored or the displayed frame; store the image upright (and its boxes in "
               "that frame) or remove the EXIF Orientation tag" for o in sizes["orientation"][turned]]
    extra = pd.DataFrame({"path": images["path"].astype(str).to_numpy()[turned], "reason": reasons})
    return sizes.assign(ok=sizes["ok"] & ~turned), pd.concat([skipped, extra], ignore_index=True)


def _exists_only(paths: list[str], progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``probe_images``'s ``(sizes, skipped)`` from file existence alone (listing mode): sizes
    unknown (NaN), orientation taken as upright, a missing file skipped."""
    ok = np.array([Path(p).is_file() for p in paths], bool)
    nan = np.full(len(paths), np.nan)
    sizes = pd.DataFrame({"width": nan, "height": nan, "orientation": np.ones(len(paths), np.int64), "ok": ok})
    skipped = pd.DataFrame({"path": [str(p) for p, k in zip(paths, ok) if not k], "reason": "file missing"})
    return sizes, skipped


def finish(name: str, root: str, images: pd.DataFrame, boxes: pd.DataFrame | None = None,
           findings: Iterable[str] = (), max_skipped_fraction: float = 0.05,
           progress: bool = True) -> DatasetTables:
    """Probe the listed images, skip-and-count bad ones, return the validated tables.

    ``images`` must have ``image_id, patient_id, path, label``; ``width``/``height``
    come from the image headers (the decoded, EXIF-oriented frame). Boxes of skipped
    images are dropped with them; an EXIF-transposed image with boxes is skipped.

    Raises:
        LayoutError: no image is listed.
        TooManySkippedError: skipped / listed > ``max_skipped_fraction``.
    """
    if len(images) == 0:
        raise LayoutError(f"{name}: no images listed under {root}; see data/README.md for the layout")
    probe = _exists_only if listing() else probe_images
    sizes, skipped = probe(images["path"].tolist(), progress=progress)
    sizes, skipped = _refuse_turned_boxed(images, sizes, skipped, boxes)
    frac = len(skipped) / len(images)
    if frac > max_skipped_fraction:
        head = "\n".join(f"  {p}: {r}" for p, r in skipped.head(20).itertuples(index=False))
        raise TooManySkippedError(
            f"{name}: {len(skipped)} of {len(images)} images ({frac:.1%}) are unreadable, more than "
            f"max_skipped_fraction={max_skipped_fraction}; first ones:\n{head}", skipped)
    ok = sizes["ok"].to_numpy()
    images = images.reset_index(drop=True).copy()
    images["width"], images["height"] = sizes["width"].to_numpy(), sizes["height"].to_numpy()
    images["label"] = images["label"].astype(int)
    for c in ("image_id", "patient_id"):
        images[c] = images[c].astype(str)
    kept = images[ok].reset_index(drop=True)
    if boxes is None or len(boxes) == 0:
        boxes = pd.DataFrame({"image_id": pd.Series(dtype=str), **{c: pd.Series(dtype=float) for c in "xywh"}})
    boxes = boxes.assign(image_id=boxes["image_id"].astype(str))
    boxes = boxes[boxes["image_id"].isin(kept["image_id"])].reset_index(drop=True)
    columns = ["image_id", "x", "y", "w", "h"] + (["finding"] if "finding" in boxes else [])  # finding: optional
    return DatasetTables(images=kept, boxes=boxes[columns], name=name,
                         root=str(root), findings=list(findings), skipped=skipped)
