"""The burned-in marker: off changes nothing, outside the lungs, an exact box, rates per split."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pneumoloc.data.splits import patient_split
from pneumoloc.phantom.config import PhantomConfig
from pneumoloc.phantom.drawing import choose_lung_masks, patient_images, plan_patients
from pneumoloc.phantom.markers import glyph_mask, place_marker, read_marker_boxes
from pneumoloc.phantom.writer import generate_phantom

MARKED = dict(marker_rate_positive=0.9, marker_rate_negative=0.1, marker_rate_test=0.5)
SMALL = dict(n_images=24, size=64, workers=1)


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("markers")
    return generate_phantom(root / "plain", **SMALL), generate_phantom(root / "marked", **SMALL, **MARKED)


def _images(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "images.csv", dtype={"image_id": str, "patient_id": str})


def test_marker_off_writes_no_marker_file_or_column_and_keeps_the_fingerprint(pair):
    plain, _ = pair
    assert not (plain / "markers.csv").exists()
    assert not {"marker", "marker_split"} & set(_images(plain).columns)
    assert read_marker_boxes(plain).empty
    # the marker fields do not enter the fingerprint of a phantom without a marker
    assert PhantomConfig(marker_size=0.2).fingerprint() == PhantomConfig().fingerprint()
    assert PhantomConfig(marker_rate_test=0.5).fingerprint() != PhantomConfig().fingerprint()
    assert (PhantomConfig(marker_rate_test=0.5, marker_size=0.2).fingerprint()
            != PhantomConfig(marker_rate_test=0.5).fingerprint())


def test_marked_phantom_differs_only_inside_the_marker_boxes(pair):
    plain, marked = pair
    images, boxes = _images(marked), read_marker_boxes(marked)
    assert set(boxes["image_id"]) == set(images.loc[images["marker"] == 1, "image_id"])
    assert len(boxes) > 0 and (images["marker"] == 0).any()
    assert _images(plain).drop(columns=["marker", "marker_split"], errors="ignore").equals(
        images.drop(columns=["marker", "marker_split"]))
    assert (plain / "boxes.csv").read_bytes() == (marked / "boxes.csv").read_bytes()
    by_id = {b.image_id: b for b in boxes.itertuples()}
    for row in images.itertuples():
        a = np.asarray(Image.open(plain / row.path))
        b = np.asarray(Image.open(marked / row.path))
        changed = a != b
        if row.image_id not in by_id:
            assert not changed.any()
            continue
        m = by_id[row.image_id]
        inside = np.zeros_like(changed)
        inside[m.y:m.y + m.h, m.x:m.x + m.w] = True
        assert changed.any() and not (changed & ~inside).any()
        letter = b[m.y:m.y + m.h, m.x:m.x + m.w]
        # the box is tight: bright letter pixels (>= 0.9 * 255 - rounding) on all four edges
        bright = letter >= 229
        assert bright[0].any() and bright[-1].any() and bright[:, 0].any() and bright[:, -1].any()


def test_marker_lies_outside_the_lungs(pair):
    _, marked = pair
    images, boxes = _images(marked), read_marker_boxes(marked)
    masks = {r.image_id: np.asarray(Image.open(marked / r.mask_path)) > 0 for r in images.itertuples()}
    for m in boxes.itertuples():
        assert not masks[m.image_id][m.y:m.y + m.h, m.x:m.x + m.w].any()


def test_placement_moves_off_lungs_and_fails_when_there_is_no_room():
    glyph = glyph_mask("R", 7)
    assert glyph.shape == (7, 5)
    lungs = np.zeros((40, 40), bool)
    lungs[:20, :20] = True  # the top-left corner is lung
    x, y = place_marker(lungs, glyph, "top_left", (0.05, 0.05))
    assert (x, y) == (40 - 2 - 5, 2)  # the next corner: top right at the same offset
    with pytest.raises(RuntimeError, match="clear of the lungs"):
        place_marker(np.ones((40, 40), bool), glyph, "top_left", (0.05, 0.05))


def test_marker_box_is_the_letter_box_in_memory():
    cfg = PhantomConfig(n_images=16, size=96, marker_rate_positive=1.0, marker_rate_negative=1.0,
                        marker_rate_test=1.0, seed=5)
    plan = plan_patients(cfg)[:2]
    names, known = choose_lung_masks(plan)
    for patient, name in zip(plan, names):
        for im, spec in zip(patient_images(cfg, patient, name, known[name]), patient["markers"]):
            x, y, w, h = im.marker
            letter = glyph_mask(spec["glyph"], round(cfg.marker_size * cfg.size))
            assert (h, w) == letter.shape
            assert (im.image[y:y + h, x:x + w][letter] >= 229).all()
            assert not im.lungs[max(y - 1, 0):y + h + 1, max(x - 1, 0):x + w + 1].any()


def _within_binomial(k: int, n: int, p: float, z: float = 4.0) -> bool:
    """``k`` successes of ``n`` at rate ``p``, within ``z`` binomial standard errors (+ half a count)."""
    return abs(k - n * p) <= z * math.sqrt(n * p * (1 - p)) + 0.5


def test_realised_rates_per_split_follow_the_parameters_within_binomial_error():
    """Planned markers only (no pixels): 3000 images; the split is notebook 01's patient_split."""
    cfg = PhantomConfig(n_images=3000, marker_rate_positive=0.8, marker_rate_negative=0.15,
                        marker_rate_test=0.4, marker_split=(0.6, 0.2, 0.2), marker_split_seed=3)
    plan = plan_patients(cfg)
    rows = pd.DataFrame([{"patient_id": p["patient_id"], "label": p["label"], "split": p["split"],
                          "marker": m is not None} for p in plan for m in p["markers"]])
    again = patient_split(rows, (0.6, 0.2, 0.2), seed=3)
    assert (again == rows["split"]).all()  # notebook 01 with the same ratios and seed: the same split
    expected = {("train", 1): 0.8, ("train", 0): 0.15, ("val", 1): 0.8, ("val", 0): 0.15,
                ("test", 1): 0.4, ("test", 0): 0.4}
    for (split, label), g in rows.groupby(["split", "label"]):
        assert _within_binomial(int(g["marker"].sum()), len(g), expected[(split, label)]), (split, label)
    # the check itself can fail: the train rate of normal images is far from the positive rate
    train0 = rows[(rows["split"] == "train") & (rows["label"] == 0)]
    assert not _within_binomial(int(train0["marker"].sum()), len(train0), 0.8)


def test_bad_marker_parameters_name_the_field():
    for field, value in [("marker_rate_positive", 1.5), ("marker_size", 0.5), ("marker_split", (0.5, 0.5, 0.5)),
                         ("marker_split_seed", -1)]:
        with pytest.raises(ValueError, match=field):
            PhantomConfig(**{field: value})
