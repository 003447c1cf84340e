"""RSNA reader on a fixture built from real label rows; counts checked against the real table."""
from __future__ import annotations

import pandas as pd
import pytest
from fixtures.rsna import NOT_NORMAL, make_rsna, pick_patients

from pneumoloc.data.readers import read_dataset
from pneumoloc.data.readers.base import LayoutError
from pneumoloc.data.splits import patient_split, validate_split
from pneumoloc.data.xrv_assets import compare_with_reference, load_rsna_headers, load_rsna_labels


@pytest.fixture(scope="module")
def rsna_root(tmp_path_factory):
    return make_rsna(tmp_path_factory.mktemp("rsna"))


def _classes(root):
    return pd.read_csv(root / "stage_2_detailed_class_info.csv").drop_duplicates("patientId").set_index(
        "patientId")["class"]


@pytest.mark.parametrize("policy", ["drop", "negative", "keep"])
def test_counts_match_real_table(rsna_root, policy):
    t = read_dataset("rsna", str(rsna_root), not_normal=policy, progress=False)
    cls = _classes(rsna_root)
    expected_ids = set(cls.index) if policy != "drop" else set(cls.index[cls != NOT_NORMAL])
    assert set(t.images["image_id"]) == expected_ids
    real = load_rsna_labels()
    real = real[real["patientId"].isin(expected_ids)]
    assert len(t.boxes) == int(real["Target"].sum())  # one CSV row per box
    got = t.boxes.groupby("image_id").size().sort_index()
    assert got.to_dict() == real[real["Target"] == 1].groupby("patientId").size().to_dict()
    assert sorted(got.value_counts().index) == [1, 2, 3, 4]
    assert compare_with_reference(t)["ok"].all()
    assert (t.images["patient_id"] == t.images["image_id"]).all()
    assert (t.images[["width", "height"]] == 1024).all().all()
    assert t.images.set_index("image_id")["label"].to_dict() == (cls.reindex(list(expected_ids)) == "Lung Opacity").astype(int).to_dict()


def test_not_normal_policies(rsna_root):
    keep = read_dataset("rsna", str(rsna_root), not_normal="keep", progress=False)
    neg = read_dataset("rsna", str(rsna_root), not_normal="negative", progress=False)
    assert keep.findings == ["lung_opacity", "not_normal"] and neg.findings == []
    nn = keep.images["class"] == NOT_NORMAL
    assert nn.any() and (keep.images.loc[nn, "label"] == 0).all()
    assert (keep.images["not_normal"] == nn.astype(float)).all()
    assert (neg.images.loc[neg.images["class"] == NOT_NORMAL, "label"] == 0).all()


def test_dicom_header_fields_and_view_filter(rsna_root):
    t = read_dataset("rsna", str(rsna_root), not_normal="negative", progress=False)
    h = load_rsna_headers().set_index("PatientID").loc[t.images["image_id"]]
    assert t.images["view"].tolist() == h["ViewPosition"].tolist()
    assert t.images["sex"].tolist() == h["PatientSex"].tolist()
    assert t.images["age"].tolist() == h["PatientAge"].astype(float).tolist()
    pa = read_dataset("rsna", str(rsna_root), not_normal="negative", views=["PA"], progress=False)
    assert set(pa.images["image_id"]) == set(t.images.loc[t.images["view"] == "PA", "image_id"])
    assert set(pa.boxes["image_id"]) <= set(pa.images["image_id"])


def test_patient_split_validates(rsna_root):
    t = read_dataset("rsna", str(rsna_root), not_normal="negative", progress=False)
    validate_split(t.images.assign(split=patient_split(t.images, seed=1)))


def test_dicom_without_pixels_skipped_with_its_boxes(tmp_path):
    patients = pick_patients()
    broken = patients[-1]  # the 4-box image
    root = make_rsna(tmp_path, patients, size=64, broken={broken: "nopixels"})
    t = read_dataset("rsna", str(root), not_normal="negative", max_skipped_fraction=0.2, progress=False)
    assert len(t.images) + len(t.skipped) == len(patients)
    assert t.skipped["path"].iloc[0].endswith(f"{broken}.dcm") and "without pixel data" in t.skipped["reason"].iloc[0]
    assert broken not in set(t.boxes["image_id"])


def test_layout_errors_name_file_line_column(tmp_path):
    root = make_rsna(tmp_path, pick_patients(1, (1,)), size=32)
    labels = root / "stage_2_train_labels.csv"
    good = labels.read_text()
    labels.write_text(good.replace(",1\n", ",2\n"))
    with pytest.raises(LayoutError, match=r"stage_2_train_labels.csv: line 3, column 'Target': value 2"):
        read_dataset("rsna", str(root), progress=False)
    labels.write_text(good.replace("Target", "Label"))
    with pytest.raises(LayoutError, match=r"missing column\(s\) \['Target'\].*patientId,x,y,width,height,Target"):
        read_dataset("rsna", str(root), progress=False)
    labels.write_text(good)
    (root / "stage_2_detailed_class_info.csv").unlink()
    with pytest.raises(LayoutError, match="stage_2_detailed_class_info.csv not found"):
        read_dataset("rsna", str(root), progress=False)
