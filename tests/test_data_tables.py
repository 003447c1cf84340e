"""The run's stored tables: ``load_tables`` re-validates the schema and the patient split on every load."""
from __future__ import annotations

import pandas as pd
import pytest

from pneumoloc.data.splits import LeakageError
from pneumoloc.data.tables import DatasetTables, load_tables, save_tables
from pneumoloc.environment import RunPaths
from pneumoloc.storage import save_table


def _tables(n_patients: int = 8) -> DatasetTables:
    rows = [{"image_id": f"im{p}_{i}", "patient_id": f"pt{p}", "path": f"/data/im{p}_{i}.png", "label": p % 2,
             "width": 64, "height": 64} for p in range(n_patients) for i in range(2)]
    boxes = pd.DataFrame([{"image_id": "im1_0", "x": 1.0, "y": 2.0, "w": 10.0, "h": 12.0}])
    return DatasetTables(pd.DataFrame(rows), boxes, name="synthetic", root="/data")


def _split(images: pd.DataFrame) -> pd.Series:
    """A clean patient-wise split: patients 0-3 train, 4-5 val, 6-7 test."""
    number = images["patient_id"].str[2:].astype(int)
    return pd.Series(["train" if n < 4 else "val" if n < 6 else "test" for n in number], index=images.index)


@pytest.fixture
def run(tmp_path) -> RunPaths:
    return RunPaths.from_params(str(tmp_path / "run"), str(tmp_path / "fig")).ensure()


def test_clean_split_round_trips(run):
    tables = _tables()
    save_tables(run, tables, tables.images.assign(split=_split(tables.images)))
    back = load_tables(run)
    assert back.images["split"].tolist() == _split(tables.images).tolist()
    assert back.images["patient_id"].tolist() == tables.images["patient_id"].tolist()
    assert len(back.boxes) == 1 and back.name == "synthetic"


def test_leaking_split_file_is_refused_naming_patients_count_and_fix(run):
    tables = _tables()
    images = tables.images.assign(split=_split(tables.images))
    save_tables(run, tables, images)
    # the split file is edited afterwards: one image each of pt1 and pt6 moves to another split
    leaked = images.copy()
    leaked.loc[leaked["image_id"] == "im1_1", "split"] = "test"
    leaked.loc[leaked["image_id"] == "im6_0", "split"] = "val"
    save_table(run.images_table, leaked)
    with pytest.raises(LeakageError) as err:
        load_tables(run)
    msg = str(err.value)
    assert "2 patients" in msg and "pt1" in msg and "pt6" in msg
    assert str(run.images_table) in msg and "01_data_audit_and_patient_split" in msg


def test_leak_message_lists_a_few_patients_and_the_count(run):
    tables = _tables(n_patients=20)
    images = tables.images.assign(split="train")
    images.loc[images["image_id"].str.endswith("_1"), "split"] = "test"  # every patient leaks
    save_tables(run, tables, images)
    with pytest.raises(LeakageError) as err:
        load_tables(run)
    msg = str(err.value)
    assert "20 patients" in msg and "pt0" in msg and "pt19" not in msg and "..." in msg


@pytest.mark.parametrize("split", [None, "holdout"])
def test_images_without_a_valid_split_are_refused(run, split):
    tables = _tables()
    images = tables.images.assign(split=_split(tables.images))
    images.loc[images["image_id"] == "im2_0", "split"] = split
    save_tables(run, tables, images)
    with pytest.raises(ValueError, match=r"im2_0.*01_data_audit_and_patient_split"):
        load_tables(run)


def test_tables_saved_without_a_split_are_refused(run):
    tables = _tables()
    save_tables(run, tables)  # no split column at all
    with pytest.raises(ValueError, match=r"no 'split' column.*01_data_audit_and_patient_split"):
        load_tables(run)
