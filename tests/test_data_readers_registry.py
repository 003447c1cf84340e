"""Every registered real-dataset reader: option checking, stored options, run round trip, split."""
from __future__ import annotations

import json

import pytest
from fixtures.registry import FIXTURES

from pneumoloc.data.readers import READERS, read_dataset, reader_names
from pneumoloc.data.splits import patient_split, validate_split
from pneumoloc.data.tables import load_tables, save_tables
from pneumoloc.environment import RunPaths

REAL = [n for n in reader_names() if n != "phantom"]


def test_every_real_reader_has_a_fixture():
    assert sorted(REAL) == sorted(FIXTURES)


@pytest.mark.parametrize("name", REAL)
def test_unknown_option_lists_valid_ones(tmp_path, name):
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['bogus'\]; valid options: .*max_skipped_fraction=0.05"):
        READERS[name](str(tmp_path), bogus=1)


@pytest.mark.parametrize("name", REAL)
def test_round_trip_through_a_run(tmp_path, name):
    root = FIXTURES[name](tmp_path / "data")
    t = read_dataset(name, str(root), progress=False)
    assert t.options["max_skipped_fraction"] == 0.05 and "progress" in t.options
    json.dumps(t.info())  # stored in dataset.json
    images = t.images.assign(split=patient_split(t.images, seed=0))
    validate_split(images)
    run = RunPaths.from_params(str(tmp_path / "run"), str(tmp_path / "fig")).ensure()
    save_tables(run, t, images)
    back = load_tables(run)
    assert back.name == name and back.findings == t.findings and len(back.images) == len(t.images)
    assert len(back.boxes) == len(t.boxes)
    validate_split(back.images)
