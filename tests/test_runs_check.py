"""``pneumoloc run SPEC --check``: listing through the readers, weights availability, time estimates,
every tracked spec against real-layout fixtures, and the failures it must report together."""
from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.registry import FIXTURES

from pneumoloc.data.readers import list_dataset, read_dataset, reader_names

REAL = [n for n in reader_names() if n != "phantom"]


def _no_decoding(monkeypatch) -> None:
    """Make any image probe or decode fail the test: listing must not open an image."""
    def refuse(*args, **kwargs):
        raise AssertionError("listing opened an image")

    import pneumoloc.data.images as images
    import pneumoloc.data.readers.base as base

    monkeypatch.setattr(base, "probe_images", refuse)
    monkeypatch.setattr(images, "probe_images", refuse)
    monkeypatch.setattr(images, "read_grayscale", refuse)
    import pydicom

    monkeypatch.setattr(pydicom, "dcmread", refuse)


@pytest.mark.parametrize("name", REAL)
def test_listing_lists_what_reading_loads_without_opening_an_image(tmp_path, monkeypatch, name):
    root = FIXTURES[name](tmp_path / "data")
    read = read_dataset(name, str(root), progress=False)
    _no_decoding(monkeypatch)
    listed = list_dataset(name, str(root), progress=False)
    # the fixtures' images are all readable: listing and reading agree on every image and box
    assert sorted(listed.images["image_id"]) == sorted(read.images["image_id"])
    assert len(listed.boxes) == len(read.boxes) and listed.findings == read.findings
    assert listed.images["width"].isna().all()  # sizes need a decode; listing leaves them unknown


def test_listing_the_phantom_reads_its_tables_only(tmp_path, monkeypatch):
    from pneumoloc.phantom.writer import generate_phantom

    root = generate_phantom(tmp_path / "phantom", n_images=12, size=32, workers=1)
    _no_decoding(monkeypatch)
    assert len(list_dataset("phantom", str(root)).images) == 12


def test_listing_skips_and_counts_a_missing_image(tmp_path):
    root = FIXTURES["rsna"](tmp_path / "data")  # images listed by a table, so a lost file is noticed
    full = list_dataset("rsna", str(root), progress=False)
    victim = Path(full.images["path"].iloc[0])
    victim.unlink()
    listed = list_dataset("rsna", str(root), progress=False, max_skipped_fraction=0.5)
    assert len(listed.images) == len(full.images) - 1
    assert listed.skipped["path"].tolist() == [str(victim.resolve())]
    assert "missing" in listed.skipped["reason"].iloc[0]


def test_listing_a_missing_file_gives_the_readers_message(tmp_path):
    root = FIXTURES["rsna"](tmp_path / "data")
    (Path(root) / "stage_2_detailed_class_info.csv").unlink()
    with pytest.raises(ValueError, match=r"stage_2_detailed_class_info.csv not found; expected layout"):
        list_dataset("rsna", str(root), progress=False)
