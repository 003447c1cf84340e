"""Audits of the real NIH / RSNA tables shipped with torchxrayvision."""
from __future__ import annotations

import csv
import io
import zipfile
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from pneumoloc.data.tables import DatasetTables
from pneumoloc.data.xrv_assets import (compare_with_reference, load_nih_table, nih_leakage_audit, rsna_box_stats,
                                       split_leakage, xrv_data_file)


def test_split_leakage_hand_case():
    patients = pd.Series(["a", "a", "b", "c", "c", "d", "e"])
    split = pd.Series(["train", "test", "train", "val", "val", "test", "test"])
    out = split_leakage(patients, split)
    assert out.loc["test"].to_dict() == {"n_images": 3, "n_patients": 3, "leaked_images": 1,
                                         "leaked_patients": 1, "leaked_image_share": pytest.approx(1 / 3)}
    assert out.loc["val", "leaked_images"] == 0


@pytest.fixture(scope="module")
def nih():
    return load_nih_table()


def test_nih_table_facts(nih):
    assert len(nih) == 112120
    assert nih["Patient ID"].value_counts().max() == 184  # the "up to 184 images"


def test_nih_image_level_split_leaks_patient_split_does_not(nih):
    audit = nih_leakage_audit(nih, seed=0)
    wise, naive = audit.loc["patient-wise"], audit.loc["image-level"]
    assert (wise["leaked_images"] == 0).all()
    assert naive.loc["test", "leaked_images"] > 0.5 * naive.loc["test", "n_images"]
    # independent recount of the image-level leak with plain sets
    from pneumoloc.data.splits import image_level_split
    s = image_level_split(nih, seed=0).to_numpy()
    pid = nih["Patient ID"].to_numpy()
    train = set(pid[s == "train"])
    assert naive.loc["test", "leaked_images"] == sum(p in train for p in pid[s == "test"])
    assert naive["n_images"].sum() + int((s == "train").sum()) == len(nih)


def test_rsna_box_stats_real_table():
    with zipfile.ZipFile(xrv_data_file("kaggle_stage_2_train_labels.csv.zip")) as z:
        rows = list(csv.DictReader(io.TextIOWrapper(z.open("stage_2_train_labels.csv"))))
    boxes_per = Counter(r["patientId"] for r in rows if r["Target"] == "1")
    stats = rsna_box_stats()
    assert stats["n_rows"] == len(rows) == 30227
    assert stats["n_boxes"] == sum(boxes_per.values()) == 9555
    assert stats["n_images"] == len({r["patientId"] for r in rows}) == 26684
    assert stats["n_positive_images"] == len(boxes_per)
    assert stats["boxes_per_positive_image"].to_dict() == dict(sorted(Counter(boxes_per.values()).items()))
    assert stats["boxes_per_positive_image"].index.max() == 4
    g = stats["geometry"]
    assert 0 < g.loc["min", "w"] and g.loc["max", "cx"] < 1024


def test_rsna_box_stats_hand_case():
    labels = pd.DataFrame({"patientId": ["a", "a", "b", "c"], "x": [0, 600, 100, np.nan],
                           "y": [0, 0, 100, np.nan], "width": [100, 200, 50, np.nan],
                           "height": [200, 100, 50, np.nan], "Target": [1, 1, 1, 0]})
    s = rsna_box_stats(labels)
    assert (s["n_rows"], s["n_images"], s["n_positive_images"], s["n_boxes"]) == (4, 3, 2, 3)
    assert s["boxes_per_positive_image"].to_dict() == {1: 1, 2: 1}
    assert s["boxes"]["cx"].tolist() == [50, 700, 125] and s["boxes"]["side"].tolist() == ["left", "right", "left"]
    assert s["boxes"]["area"].tolist() == [20000, 20000, 2500]


def test_compare_with_reference_flags_mismatch(nih):
    rows = nih.iloc[:5]
    images = pd.DataFrame({"image_id": rows["Image Index"], "patient_id": rows["Patient ID"],
                           "path": "/x", "label": rows["Finding Labels"].str.contains("Pneumonia").astype(int),
                           "width": 1024, "height": 1024})
    t = DatasetTables(images=images, boxes=pd.DataFrame(columns=["image_id", "x", "y", "w", "h"]), name="nih", root="/x")
    assert compare_with_reference(t)["ok"].all()
    t.images.loc[t.images.index[0], "patient_id"] = "999999"
    bad = compare_with_reference(t).set_index("check")
    assert not bad.loc["patient_id mismatches", "ok"]
    t.name = "kermany"
    assert compare_with_reference(t).empty
