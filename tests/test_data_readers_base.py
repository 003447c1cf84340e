"""readers.base.finish: every listed image is kept or skipped with a reason, and the manifest's
width/height are the decoded array's (EXIF orientation applied)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fixtures.images import write_dicom, write_jpeg, write_png, xray_like

from pneumoloc.data.images import read_grayscale
from pneumoloc.data.readers.base import TooManySkippedError, finish


def _wide(seed: int = 0) -> np.ndarray:
    return np.kron(xray_like(8, seed), np.ones((3, 5), np.uint8))  # 24 x 40: rotations show


def _listing(paths) -> pd.DataFrame:
    return pd.DataFrame({"image_id": [f"i{k}" for k in range(len(paths))],
                         "patient_id": [f"p{k}" for k in range(len(paths))],
                         "path": [str(p) for p in paths], "label": [k % 2 for k in range(len(paths))]})


def _boxes(*ids: str) -> pd.DataFrame:
    return pd.DataFrame({"image_id": list(ids), "x": 2.0, "y": 3.0, "w": 10.0, "h": 5.0})


def test_width_height_are_those_of_the_decoded_array(tmp_path):
    paths = [write_jpeg(tmp_path / f"o{o}.jpeg", _wide(o), orientation=o) for o in (1, 3, 6, 8)]
    t = finish("test", str(tmp_path), _listing(paths), progress=False, max_skipped_fraction=0.0)
    for row in t.images.itertuples():
        assert read_grayscale(row.path).shape == (row.height, row.width)
    assert t.images[["width", "height"]].values.tolist() == [[40, 24], [40, 24], [24, 40], [24, 40]]


def test_rotated_image_with_boxes_is_skipped_with_the_reason(tmp_path):
    paths = [write_jpeg(tmp_path / "up.jpeg", _wide(0)),
             write_jpeg(tmp_path / "turned.jpeg", _wide(1), orientation=6),
             write_jpeg(tmp_path / "turned_nobox.jpeg", _wide(2), orientation=8),
             write_jpeg(tmp_path / "mirrored.jpeg", _wide(3), orientation=2)]
    t = finish("test", str(tmp_path), _listing(paths), _boxes("i0", "i1", "i3"), progress=False,
               max_skipped_fraction=0.5)
    assert t.images["image_id"].tolist() == ["i0", "i2"]  # i2 is rotated but has no box to misplace
    assert t.boxes["image_id"].tolist() == ["i0"]
    assert t.skipped["path"].tolist() == [str(paths[1]), str(paths[3])]
    assert t.skipped["reason"].str.contains("EXIF orientation [62]").all()
    assert t.skipped["reason"].str.contains("boxes").all()
    assert len(t.images) + len(t.skipped) == 4


def test_rotated_boxed_images_count_towards_the_skip_limit(tmp_path):
    paths = [write_jpeg(tmp_path / "up.jpeg", _wide(0)),
             write_jpeg(tmp_path / "turned.jpeg", _wide(1), orientation=6)]
    with pytest.raises(TooManySkippedError, match="1 of 2"):
        finish("test", str(tmp_path), _listing(paths), _boxes("i1"), progress=False, max_skipped_fraction=0.1)


def test_every_kind_of_bad_file_is_skipped_and_counted(tmp_path):
    import pydicom

    good = [write_png(tmp_path / "g.png", xray_like(16)), write_dicom(tmp_path / "g.dcm", xray_like(16))]
    multi = write_dicom(tmp_path / "multi.dcm", np.concatenate([xray_like(16), xray_like(16, 1)]))
    ds = pydicom.dcmread(multi)
    ds.Rows, ds.NumberOfFrames = 16, 2
    ds.save_as(multi)
    nobits = write_dicom(tmp_path / "nobits.dcm", xray_like(16))
    ds = pydicom.dcmread(nobits)
    del ds.BitsAllocated
    ds.save_as(nobits)
    from PIL import Image
    Image.fromarray(xray_like(16)).save(tmp_path / "tiff.png", format="TIFF")
    paths = [*good, multi, nobits, tmp_path / "tiff.png"]
    t = finish("test", str(tmp_path), _listing(paths), progress=False, max_skipped_fraction=1.0)
    assert len(t.images) == 2 and len(t.skipped) == 3
    assert t.skipped["reason"].tolist() == [
        "multi-frame DICOM (2 frames); a radiograph has one frame and no frame of several is the radiograph: "
        "export the one to use",
        "DICOM header lacks BitsAllocated (PS3.3 C.7.6.3, required)",
        "not a PNG or JPEG image (the formats the readers accept; convert the file or remove it "
        "from the listing)"]
