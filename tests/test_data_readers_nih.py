"""NIH ChestX-ray14 reader on a fixture built from the real Data_Entry and BBox tables."""
from __future__ import annotations

import pandas as pd
import pytest
from fixtures.nih import make_nih, pick_patients

from pneumoloc.data.readers import read_dataset
from pneumoloc.data.readers.base import LayoutError
from pneumoloc.data.readers.nih import NIH_FINDINGS
from pneumoloc.data.splits import patient_split, validate_split
from pneumoloc.data.xrv_assets import compare_with_reference, load_nih_table


@pytest.fixture(scope="module")
def nih_root(tmp_path_factory):
    return make_nih(tmp_path_factory.mktemp("nih"), size=64)


def _real_rows():
    table = load_nih_table()
    return table[table["Patient ID"].isin(pick_patients())]


def test_counts_and_labels_match_real_table(nih_root):
    t = read_dataset("nih", str(nih_root), progress=False)
    real = _real_rows().set_index("Image Index").loc[t.images["image_id"]]
    assert len(t.images) == len(real) and t.skipped.empty
    assert (t.images["patient_id"].to_numpy() == real["Patient ID"].to_numpy()).all()
    assert t.images["label"].tolist() == real["Finding Labels"].str.contains("Pneumonia").astype(int).tolist()
    assert t.findings == list(NIH_FINDINGS)
    for f in ("Cardiomegaly", "Effusion", "Pneumonia"):  # hand check of the multi-label split
        assert t.images[f].tolist() == [float(f in s.split("|")) for s in real["Finding Labels"]]
    assert t.images["view"].tolist() == real["View Position"].tolist()
    assert compare_with_reference(t)["ok"].all()
    assert t.images["path"].str.contains(r"images_00[12]/images/").all()


def test_boxes_from_bbox_list(nih_root):
    lines = (nih_root / "BBox_List_2017.csv").read_text().splitlines()[1:]
    pneu = [ln.split(",") for ln in lines if ln.split(",")[1] == "Pneumonia"]
    t = read_dataset("nih", str(nih_root), progress=False)
    assert len(t.boxes) == len(pneu) >= 2
    first = t.boxes.set_index("image_id").loc[pneu[0][0]]
    assert pytest.approx([first["x"], first["y"], first["w"], first["h"]]) == [float(v) for v in pneu[0][2:6]]
    assert set(t.boxes["image_id"]) <= set(t.images.loc[t.images["label"] == 1, "image_id"])
    every = read_dataset("nih", str(nih_root), box_findings=(), progress=False)
    assert len(every.boxes) == len(lines)
    # each box keeps its finding: the ChestX-ray8 protocol scores a finding's boxes with its maps
    assert every.boxes["finding"].tolist() == [ln.split(",")[1] for ln in lines]


def test_official_split_and_2017_table(tmp_path):
    root = make_nih(tmp_path, size=32, entry_name="2017")
    assert (root / "Data_Entry_2017.csv").read_text().splitlines()[0].endswith("OriginalImagePixelSpacing[x,y],")
    t = read_dataset("nih", str(root), official_split=True, progress=False)
    test_ids = set((root / "test_list.txt").read_text().split())
    assert set(t.images.loc[t.images["official_split"] == "test", "image_id"]) == test_ids
    assert (t.images["official_split"] != "test").sum() == len(t.images) - len(test_ids)
    official = t.images.assign(split=t.images["official_split"].map({"trainval": "train", "test": "test"}))
    validate_split(official)  # the official NIH split is patient-wise


def test_patient_split_validates_and_views(nih_root):
    t = read_dataset("nih", str(nih_root), progress=False)
    validate_split(t.images.assign(split=patient_split(t.images, seed=0)))
    ap = read_dataset("nih", str(nih_root), views=("AP",), max_skipped_fraction=0.0, progress=False)
    assert set(ap.images["view"]) <= {"AP"} and len(ap.images) == int((t.images["view"] == "AP").sum())


def test_missing_images_are_skipped_and_counted(tmp_path):
    root = make_nih(tmp_path, size=32)
    victim = sorted(root.glob("images_*/images/*.png"))[0]
    victim.unlink()
    t = read_dataset("nih", str(root), max_skipped_fraction=0.5, progress=False)
    assert len(t.images) + len(t.skipped) == len(_real_rows())
    assert t.skipped["reason"].str.contains("missing file").all() and victim.name in t.skipped["path"].iloc[0]


def test_bad_label_and_missing_table(tmp_path):
    root = make_nih(tmp_path, size=32, official=False)
    entry = root / "Data_Entry_2017_v2020.csv"
    with pytest.raises(LayoutError, match="train_val_list.txt not found"):
        read_dataset("nih", str(root), official_split=True, progress=False)
    df = pd.read_csv(entry)
    df.loc[2, "Finding Labels"] = "Pneumonia|Covid"
    df.to_csv(entry, index=False)
    with pytest.raises(LayoutError, match=r"line 4, column 'Finding Labels': \['Covid'\]"):
        read_dataset("nih", str(root), progress=False)
    entry.unlink()
    with pytest.raises(LayoutError, match=r"none of \['Data_Entry_2017_v2020.csv', 'Data_Entry_2017.csv'\]"):
        read_dataset("nih", str(root), progress=False)
