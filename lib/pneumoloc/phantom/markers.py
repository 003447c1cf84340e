"""A burned-in laterality marker outside the lungs: the phantom's known shortcut.

Real chest X-ray classifiers learn confounders instead of disease. Zech et al. (2018,
PLoS Med 15(11): e1002683) showed that a CNN detecting pneumonia also identified the
hospital and the portable scanner, with activation on the burned-in laterality tokens
and text in the image corners; DeGrave et al. (2021, Nat Mach Intell 3: 610-619) found
COVID-19 detectors relying on laterality markers, text and the image border outside the
lungs, shown by their saliency maps. The marker here imitates the commonest of these:
a radio-opaque lead letter ("R" on the image's left, the patient's right; "L" on the
image's right) burned in near an upper corner, saturated white and drawn after exposure
and noise, so it has the same look on every image whatever the patient.

Its location is exact: its box is the tight box of the drawn letter pixels, and it never
touches the lungs (the corner is changed, then the offset, until it does not). Which
images carry it is decided per image from its own random stream, with rates that depend
on the split (patient-wise, assigned here with :func:`pneumoloc.data.splits.patient_split`
and the config's ``marker_split`` / ``marker_split_seed``, the same call and defaults as
notebook 01): in train and val a pneumonia image carries it with probability
``marker_rate_positive`` and a normal image with ``marker_rate_negative`` (the shortcut);
in test every image carries it with ``marker_rate_test`` whatever its label (so the
shortcut no longer predicts the label there). Deciding in the plan, from a stream apart
from the images' own, leaves every other pixel of the phantom unchanged.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .config import PhantomConfig

__all__ = ["GLYPHS", "MARKER_COLUMNS", "plan_markers", "marker_rate", "glyph_mask", "place_marker",
           "burn_marker", "read_marker_boxes"]

# 5 x 7 bitmaps of the lead letters (rows top to bottom)
GLYPHS = {
    "R": ("11110", "10001", "10001", "11110", "10100", "10010", "10001"),
    "L": ("10000", "10000", "10000", "10000", "10000", "10000", "11111"),
}
MARKER_COLUMNS = ("image_id", "x", "y", "w", "h")  # markers.csv: one row per marked image
_CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")  # tried in this order after the drawn one


def marker_rate(cfg: PhantomConfig, split: str, label: int) -> float:
    """Probability that an image of ``split`` with ``label`` carries the marker."""
    if split == "test":
        return cfg.marker_rate_test
    return cfg.marker_rate_positive if label else cfg.marker_rate_negative


def plan_markers(cfg: PhantomConfig, patients: list[dict[str, Any]]) -> None:
    """Add ``split`` and per-image ``markers`` (None or the marker's drawing parameters) to each patient.

    The split is :func:`pneumoloc.data.splits.patient_split` of the patients' labels with
    ``cfg.marker_split`` and ``cfg.marker_split_seed``: notebook 01 with the same ratios and
    seed reproduces it. The random stream is child 2 of the seed (the plan and the patients
    use children 0 and 1), so the images themselves do not change.
    """
    from ..data.splits import patient_split

    table = pd.DataFrame({"patient_id": [p["patient_id"] for p in patients],
                          "label": [p["label"] for p in patients]})
    splits = patient_split(table, cfg.marker_split, cfg.marker_split_seed).to_numpy()
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(2,)))
    for patient, split in zip(patients, splits):
        rate = marker_rate(cfg, str(split), patient["label"])
        patient["split"] = str(split)
        patient["markers"] = []
        for _ in range(patient["n"]):
            # every image draws the same numbers, marked or not, so a rate changes no other image
            u, side = rng.random(), int(rng.integers(2))
            (dx, dy), value = rng.uniform(0.02, 0.06, 2), rng.uniform(0.9, 1.0)
            patient["markers"].append(None if u >= rate else {
                "corner": _CORNERS[side], "glyph": "R" if side == 0 else "L",
                "offset": (float(dx), float(dy)), "value": float(value)})


def glyph_mask(glyph: str, height: int) -> np.ndarray:
    """The letter as a bool array about ``height`` pixels tall (nearest-neighbour scaling of the bitmap)."""
    bitmap = np.array([[c == "1" for c in row] for row in GLYPHS[glyph]])
    k = max(1, int(round(height / bitmap.shape[0])))
    return np.kron(bitmap, np.ones((k, k), bool))


def _box_at(corner: str, offset: tuple[float, float], shape: tuple[int, int], size: int) -> tuple[int, int]:
    """Top-left pixel of a ``shape`` glyph at ``offset`` (fractions of ``size``) from ``corner``."""
    h, w = shape
    ox, oy = (int(round(o * size)) for o in offset)
    x = ox if corner.endswith("left") else size - ox - w
    y = oy if corner.startswith("top") else size - oy - h
    return int(np.clip(x, 0, size - w)), int(np.clip(y, 0, size - h))


def place_marker(lungs: np.ndarray, glyph: np.ndarray, corner: str,
                 offset: tuple[float, float]) -> tuple[int, int]:
    """Top-left pixel of the glyph: the drawn corner and offset, or the first placement off the lungs.

    The glyph must keep one pixel of air between itself and the lung mask. The drawn corner
    is tried first, then the other corners at the drawn offset, then every corner flush
    against the image border.

    Raises:
        RuntimeError: no corner leaves the glyph clear of the lungs (lungs filling the frame).
    """
    from scipy import ndimage as ndi

    size = lungs.shape[0]
    near = ndi.binary_dilation(lungs, iterations=1)
    order = (corner,) + tuple(c for c in _CORNERS if c != corner)
    for off in (offset, (0.0, 0.0)):
        for c in order:
            x, y = _box_at(c, off, glyph.shape, size)
            if not (near[y:y + glyph.shape[0], x:x + glyph.shape[1]] & glyph).any():
                return x, y
    raise RuntimeError(f"no image corner leaves a {glyph.shape} marker clear of the lungs")


def burn_marker(image: np.ndarray, lungs: np.ndarray, marker: dict[str, Any],
                height: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Burn the marker into the float image (after exposure and noise); return it and the marker box.

    The box ``x, y, w, h`` is the tight box of the letter's pixels.
    """
    glyph = glyph_mask(marker["glyph"], height)
    x, y = place_marker(lungs, glyph, marker["corner"], marker["offset"])
    out = image.copy()
    region = out[y:y + glyph.shape[0], x:x + glyph.shape[1]]
    region[glyph] = marker["value"]
    ys, xs = np.nonzero(glyph)
    return out, (x + int(xs.min()), y + int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1)


def read_marker_boxes(root: str | Path) -> pd.DataFrame:
    """The marker boxes of a phantom folder (``image_id, x, y, w, h``); empty when it has no marker.

    Raises:
        FileNotFoundError: ``root`` has no ``phantom.json`` (not a finished phantom).
    """
    root = Path(root)
    if not (root / "phantom.json").exists():
        raise FileNotFoundError(f"{root} is not a finished phantom (no phantom.json): generate it with "
                                f"pneumoloc.phantom.writer.generate_phantom({str(root)!r}, ...)")
    path = root / "markers.csv"
    if not path.exists():
        return pd.DataFrame(columns=list(MARKER_COLUMNS))
    return pd.read_csv(path, dtype={"image_id": str})
