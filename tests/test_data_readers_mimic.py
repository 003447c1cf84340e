"""MIMIC-CXR reader on a fixture with the real table names/headers, JPG and DICOM variants."""
from __future__ import annotations

import numpy as np
import pytest
from fixtures.mimic import IMAGES, STUDIES, make_mimic

from pneumoloc.data.images import read_grayscale
from pneumoloc.data.readers import read_dataset
from pneumoloc.data.readers.base import LayoutError, TooManySkippedError
from pneumoloc.data.splits import patient_split, validate_split

STUDY = {t: (s, p, e, sp) for s, t, p, e, sp in STUDIES}


@pytest.mark.parametrize("image_format,gz", [("jpg", True), ("dcm", False)])
def test_rows_labels_and_split(tmp_path, image_format, gz):
    root = make_mimic(tmp_path, image_format=image_format, gz=gz)
    t = read_dataset("mimic", str(root), progress=False)
    frontal = [(d, st) for d, st, v in IMAGES if v in ("PA", "AP")]
    assert t.images["image_id"].tolist() == [d for d, _ in frontal]  # unlabeled study not listed
    assert t.images["patient_id"].tolist() == [str(STUDY[st][0]) for _, st in frontal]
    assert t.images["source_split"].tolist() == [STUDY[st][3] for _, st in frontal]
    assert t.images["path"].str.endswith(f".{image_format}").all()
    # U-ones, blank -> 0 (defaults): Pneumonia nan -> 0, -1 -> 1, 1 -> 1, 0 -> 0
    ref = [1.0 if STUDY[st][1] in (1.0, -1.0) else 0.0 for _, st in frontal]
    assert t.images["Pneumonia"].tolist() == ref and t.images["label"].tolist() == [int(v) for v in ref]
    for p in t.images["path"]:
        assert read_grayscale(p).shape == (32, 32)
    validate_split(t.images.assign(split=patient_split(t.images, seed=0)))


def test_laterals_views_and_ignore_policy(tmp_path):
    root = make_mimic(tmp_path)
    every = read_dataset("mimic", str(root), frontal_only=False, uncertain="ignore", blank="ignore", progress=False)
    assert len(every.images) == len(IMAGES)
    by_id = every.images.set_index("image_id")
    d_unc = next(d for d, st, _ in IMAGES if STUDY[st][1] == -1.0)
    assert np.isnan(by_id.loc[d_unc, "Pneumonia"]) and by_id.loc[d_unc, "label"] == 0
    ap = read_dataset("mimic", str(root), views=("AP",), progress=False)
    assert set(ap.images["view"]) == {"AP"} and len(ap.images) == sum(v == "AP" for *_, v in IMAGES)


def test_wrong_format_and_missing_table(tmp_path):
    root = make_mimic(tmp_path, image_format="dcm")
    with pytest.raises(TooManySkippedError, match="missing file"):
        read_dataset("mimic", str(root), image_format="jpg", progress=False)
    (root / "mimic-cxr-2.0.0-split.csv.gz").unlink()
    with pytest.raises(LayoutError, match=r"mimic-cxr-2.0.0-split.csv\[.gz\] not found"):
        read_dataset("mimic", str(root), progress=False)
