"""Kermany reader on a fixture with the Kaggle layout (nested duplicate, __MACOSX)."""
from __future__ import annotations

import pytest
from fixtures.kermany import FILES, expected_patients, make_kermany
from fixtures.images import write_image

from pneumoloc.data.readers import read_dataset
from pneumoloc.data.readers.base import LayoutError, TooManySkippedError
from pneumoloc.data.readers.kermany import patient_from_name
from pneumoloc.data.splits import patient_split, validate_split


@pytest.mark.parametrize("stem,expected", [
    ("person1_bacteria_1", ("person1", "bacteria")),
    ("person1_virus_6", ("person1", "virus")),
    ("person1946_bacteria_4874", ("person1946", "bacteria")),
    ("person1000_virus_1681", ("person1000", "virus")),
    ("IM-0115-0001", ("IM-0115", "none")),
    ("IM-0011-0001", ("IM-0011", "none")),
    ("IM-0011-0001-0001", ("IM-0011", "none")),
    ("NORMAL2-IM-0006-0001", ("NORMAL2-IM-0006", "none")),
    ("NORMAL2-IM-0381-0001", ("NORMAL2-IM-0381", "none")),
    ("scan_0001", None),
    ("person1_fungus_2", None),
    ("IM-0011", None),
    ("IM-0011-0001-0001-0001", None),
])
def test_patient_rule(stem, expected):
    assert patient_from_name(stem) == expected


@pytest.mark.parametrize("kaggle", [True, False])
def test_kaggle_copy_not_double_counted(tmp_path, kaggle):
    t = read_dataset("kermany", str(make_kermany(tmp_path, kaggle=kaggle)), progress=False)
    assert len(t.images) == len(FILES) and t.skipped.empty
    assert not t.images["path"].str.contains("chest_xray/chest_xray|__MACOSX").any()
    assert dict(zip(t.images["image_id"], t.images["patient_id"])) == expected_patients()
    by_id = t.images.set_index("image_id")
    assert by_id.loc["test/PNEUMONIA/person1_bacteria_2", "patient_id"] == "person1"
    assert by_id.loc["train/PNEUMONIA/person1_virus_6", "subtype"] == "virus"
    assert by_id.loc["train/NORMAL/IM-0115-0001", "subtype"] == "none"
    assert (t.images["label"] == (t.images["source_class"] == "PNEUMONIA")).all()
    assert t.images.groupby("source_split").size().to_dict() == {"test": 10, "train": 10, "val": 3}
    assert (t.images[["width", "height"]] == 32).all().all()


def test_default_options_read_every_published_name_pattern(tmp_path):
    """Three number groups (test/NORMAL/IM-0011-0001-0001) belong to the two-group patient."""
    t = read_dataset("kermany", str(make_kermany(tmp_path, kaggle=False)), progress=False)
    got = dict(zip(t.images["image_id"], t.images["patient_id"]))
    for stem in ("IM-0011-0001", "IM-0011-0001-0001", "IM-0011-0001-0002"):
        assert got[f"test/NORMAL/{stem}"] == "IM-0011"
    assert got["test/NORMAL/NORMAL2-IM-0006-0001"] == "NORMAL2-IM-0006"
    assert got["train/PNEUMONIA/person1000_virus_1681"] == "person1000"
    assert got["val/PNEUMONIA/person1946_bacteria_4874"] == "person1946"


def test_patient_split_validates(tmp_path):
    t = read_dataset("kermany", str(make_kermany(tmp_path)), progress=False)
    images = t.images.assign(split=patient_split(t.images, seed=0))
    validate_split(images)  # raises on leakage
    assert images.groupby("patient_id")["split"].nunique().max() == 1


def test_truncated_jpeg_is_skipped_and_counted(tmp_path):
    root = str(make_kermany(tmp_path, truncated=True))
    t = read_dataset("kermany", root, max_skipped_fraction=0.1, progress=False)
    assert len(t.images) + len(t.skipped) == len(FILES) + 1
    assert t.skipped["path"].iloc[0].endswith("person8_bacteria_14.jpeg")
    assert "truncated" in t.skipped["reason"].iloc[0]
    assert t.options["max_skipped_fraction"] == 0.1
    below = 0.5 / (len(FILES) + 1)  # one skipped file exceeds it
    with pytest.raises(TooManySkippedError, match="person8_bacteria_14") as e:
        read_dataset("kermany", root, max_skipped_fraction=below, progress=False)
    assert len(e.value.skipped) == 1


def test_unmatched_name(tmp_path):
    root = make_kermany(tmp_path, kaggle=False)
    write_image(root / "chest_xray" / "train" / "NORMAL" / "scan_0001.jpeg")
    with pytest.raises(LayoutError, match="scan_0001.jpeg.*own_patient"):
        read_dataset("kermany", str(root), progress=False)
    t = read_dataset("kermany", str(root), unmatched_names="own_patient", progress=False)
    row = t.images.set_index("image_id").loc["train/NORMAL/scan_0001"]
    assert row["patient_id"] == "NORMAL-scan_0001" and row["subtype"] == "unknown"


def test_empty_folder_and_missing_class(tmp_path):
    (tmp_path / "chest_xray" / "train" / "NORMAL").mkdir(parents=True)
    with pytest.raises(LayoutError, match=r"no images found.*chest_xray/\{train,val,test\}"):
        read_dataset("kermany", str(tmp_path), progress=False)
    write_image(tmp_path / "chest_xray" / "train" / "NORMAL" / "IM-0001-0001.jpeg")
    with pytest.raises(LayoutError, match="no PNEUMONIA images"):
        read_dataset("kermany", str(tmp_path), progress=False)


def test_options_checked(tmp_path):
    root = str(make_kermany(tmp_path, kaggle=False))
    with pytest.raises(TypeError, match="unknown option.*'colour'.*valid options: unmatched_names="):
        read_dataset("kermany", root, colour=True)
    with pytest.raises(TypeError, match="max_skipped_fraction='a lot' should be float"):
        read_dataset("kermany", root, max_skipped_fraction="a lot")
    with pytest.raises(ValueError, match="unmatched_names='guess' not in"):
        read_dataset("kermany", root, unmatched_names="guess")
