"""CheXpert reader on a fixture with real train.csv rows; uncertainty policies checked by hand."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fixtures.chexpert import make_chexpert

from pneumoloc.data.readers import read_dataset
from pneumoloc.data.readers.base import CHEXPERT_FINDINGS, LayoutError
from pneumoloc.data.splits import patient_split, validate_split


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_chexpert(tmp_path_factory.mktemp("chexpert"))


def _raw(root):
    return pd.concat([pd.read_csv(root / "train.csv").assign(src="train"),
                      pd.read_csv(root / "valid.csv").assign(src="valid")], ignore_index=True)


def test_counts_ids_and_frontal_filter(root):
    raw = _raw(root)
    t = read_dataset("chexpert", str(root), progress=False)
    frontal = raw[raw["Frontal/Lateral"] == "Frontal"]
    assert len(t.images) == len(frontal) and t.skipped.empty
    assert t.images["image_id"].tolist() == [p.split("/", 1)[1] for p in frontal["Path"]]
    assert t.images["patient_id"].tolist() == frontal["Path"].str.split("/").str[2].tolist()
    assert t.images["source_split"].tolist() == frontal["src"].tolist()
    assert t.images["view"].isin(["AP", "PA"]).all()
    both = read_dataset("chexpert", str(root), frontal_only=False, progress=False)
    assert len(both.images) == len(raw) and (both.images["view"] == "LATERAL").sum() == (raw["AP/PA"].isna()).sum()
    pa = read_dataset("chexpert", str(root), views=["PA"], progress=False)
    assert len(pa.images) == int((frontal["AP/PA"] == "PA").sum())


@pytest.mark.parametrize("uncertain", ["ones", "zeros", "ignore"])
@pytest.mark.parametrize("blank", ["zeros", "ignore"])
def test_uncertainty_policy(root, uncertain, blank):
    raw = _raw(root)
    raw = raw[raw["Frontal/Lateral"] == "Frontal"]
    t = read_dataset("chexpert", str(root), uncertain=uncertain, blank=blank, progress=False)
    assert t.findings == list(CHEXPERT_FINDINGS)
    u = {"ones": 1.0, "zeros": 0.0, "ignore": np.nan}[uncertain]
    b = {"zeros": 0.0, "ignore": np.nan}[blank]
    for f in CHEXPERT_FINDINGS:
        v = raw[f].to_numpy()
        ref = np.where(v == -1, u, np.where(np.isnan(v), b, v))  # independent element-wise mapping
        np.testing.assert_array_equal(t.images[f].to_numpy(), ref)
    assert t.images["label"].tolist() == (np.nan_to_num(t.images["Pneumonia"].to_numpy()) == 1).astype(int).tolist()
    assert (raw["Pneumonia"] == -1).any()  # the fixture exercises the uncertain case


def test_patient_split_validates(root):
    t = read_dataset("chexpert", str(root), progress=False)
    validate_split(t.images.assign(split=patient_split(t.images, seed=2)))


def test_bad_value_and_missing_column(tmp_path):
    root = make_chexpert(tmp_path, bad_value=True)
    n = len(pd.read_csv(root / "train.csv"))
    with pytest.raises(LayoutError, match=rf"train.csv: line {n + 1}, column 'Pneumonia': value 2.0 not in \[1, 0, -1\] or blank"):
        read_dataset("chexpert", str(root), progress=False)
    pd.read_csv(root / "valid.csv").drop(columns="Edema").to_csv(root / "train.csv", index=False)
    with pytest.raises(LayoutError, match=r"missing column\(s\) \['Edema'\]"):
        read_dataset("chexpert", str(root), progress=False)
