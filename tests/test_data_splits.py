import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from pneumoloc.data.splits import (LeakageError, image_level_leakage, image_level_split, patient_split,
                                   split_summary, validate_split)


def make_images(images_per_patient, labels):
    rows = []
    for p, (n, y) in enumerate(zip(images_per_patient, labels)):
        rows += [{"image_id": f"p{p}_{i}", "patient_id": f"p{p}", "label": y} for i in range(n)]
    return pd.DataFrame(rows)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 4), st.integers(0, 1)), min_size=3, max_size=80),
    st.integers(0, 2**31 - 1),
)
def test_patient_split_properties(patients, seed):
    images = make_images([n for n, _ in patients], [y for _, y in patients])
    split = patient_split(images, (0.6, 0.2, 0.2), seed=seed)
    assert split.index.equals(images.index)
    assert split.isin(["train", "val", "test"]).all()
    # no patient crosses splits, and the validator agrees
    assert (images.assign(split=split).groupby("patient_id")["split"].nunique() == 1).all()
    validate_split(images.assign(split=split))
    # per stratum, patient counts follow the ratios to within one patient
    per_patient = images.assign(split=split).groupby("patient_id").agg(label=("label", "max"), split=("split", "first"))
    for _, stratum in per_patient.groupby("label"):
        counts = stratum["split"].value_counts().reindex(["train", "val", "test"], fill_value=0)
        expected = np.array([0.6, 0.2, 0.2]) * len(stratum)
        assert np.all(np.abs(counts.to_numpy() - expected) < 1 + 1e-9)
    # deterministic for a seed
    assert split.equals(patient_split(images, (0.6, 0.2, 0.2), seed=seed))


def test_different_seeds_give_different_splits():
    images = make_images([2] * 50, [0, 1] * 25)
    assert not patient_split(images, seed=0).equals(patient_split(images, seed=1))


def test_validator_names_leaking_patients():
    images = make_images([2, 2, 2], [0, 1, 1])
    images["split"] = ["train", "test", "train", "train", "val", "val"]
    with pytest.raises(LeakageError, match="p0"):
        validate_split(images)


def test_validator_rejects_missing_split():
    images = make_images([1, 1], [0, 1])
    images["split"] = ["train", None]
    with pytest.raises(ValueError, match="no valid split"):
        validate_split(images)


@pytest.mark.parametrize("ratios", [(0.5, 0.5), (0.7, 0.2, 0.2), (1.2, -0.1, -0.1)])
def test_bad_ratios_rejected(ratios):
    with pytest.raises(ValueError, match="ratios"):
        patient_split(make_images([1, 1, 1], [0, 1, 0]), ratios)


def test_image_level_split_leaks_and_patient_split_does_not():
    images = make_images([4] * 100, [0, 1] * 50)
    naive = image_level_split(images, seed=0)
    assert image_level_leakage(images, naive) > 0.5  # 4 images/patient: most test patients are in train
    assert image_level_leakage(images, patient_split(images, seed=0)) == 0.0


def test_image_level_leakage_hand_computed():
    images = make_images([2, 1, 1], [0, 1, 0])  # p0_0 p0_1 p1_0 p2_0
    split = pd.Series(["train", "test", "test", "train"])
    # test images: p0_1 (patient p0 in train) and p1_0 (not) -> 1/2
    assert image_level_leakage(images, split) == 0.5


def test_split_summary_counts():
    images = make_images([2, 1, 3], [1, 0, 1])
    images["split"] = ["train", "train", "val", "test", "test", "test"]
    s = split_summary(images)
    assert s.loc["train", "images"] == 2 and s.loc["test", "patients"] == 1
    assert s.loc["val", "pneumonia_share"] == 0.0 and s.loc["test", "pneumonia_images"] == 3


def test_validator_messages_name_the_source_and_the_fix():
    images = make_images([2, 2], [0, 1])
    images["split"] = ["train", "test", "val", "val"]
    with pytest.raises(LeakageError, match=r"^runs/x/images.csv: 1 patients .*p0.*; rerun notebook 01$"):
        validate_split(images, source="runs/x/images.csv", fix="rerun notebook 01")
    with pytest.raises(ValueError, match=r"^runs/x/images.csv has no 'split' column; rerun notebook 01$"):
        validate_split(images.drop(columns="split"), source="runs/x/images.csv", fix="rerun notebook 01")
