"""CheXmask lung masks: RLE decoding, the quality filter, the NIH and RSNA joins, LAR on them.

The run-length codes are made by :func:`_encode`, a plain pixel loop written from the
published definition (CheXmask data dictionary: "start length" pairs, starts 1-based into
the row-major flattened ``Height x Width`` mask), independent of the library's decoder.
"""
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pneumoloc.data import chexmask as CM
from pneumoloc.localize import lung_sources as LM

# the header of CheXmask's ChestX-Ray8.csv, in the published column order
NIH_COLUMNS = ["Image Index", "Dice RCA (Mean)", "Dice RCA (Max)", "Landmarks", "Left Lung", "Right Lung",
               "Heart", "Height", "Width"]


def _encode(mask: np.ndarray) -> str:
    """Run-length code of ``mask`` by walking its pixels (no numpy run tricks)."""
    out, start = [], None
    flat = [bool(v) for v in np.asarray(mask).ravel()]
    for i, on in enumerate(flat + [False]):
        if on and start is None:
            start = i
        elif not on and start is not None:
            out += [start + 1, i - start]
            start = None
    return " ".join(map(str, out))


# ----------------------------------------------------------------------------- decoding


def test_decode_hand_case():
    # 3 x 4 mask, flat pixels 1..3 and 8..9 (0-based): codes "2 3" and "9 2"
    expected = np.zeros(12, bool)
    expected[1:4] = expected[8:10] = True
    assert (CM.rle_decode("2 3 9 2", 3, 4) == expected.reshape(3, 4)).all()


@pytest.mark.parametrize("shape,density", [((1, 1), 0.5), ((7, 13), 0.1), ((32, 32), 0.5), ((40, 25), 0.9),
                                           ((64, 48), 0.02)])
def test_decode_inverts_encode_on_random_masks(shape, density):
    rng = np.random.default_rng(shape[0] * 100 + shape[1])
    for _ in range(5):
        mask = rng.random(shape) < density
        assert (CM.rle_decode(_encode(mask), *shape) == mask).all()


def test_decode_edge_cases():
    h, w = 5, 6
    full = np.ones((h, w), bool)
    assert (CM.rle_decode(_encode(full), h, w) == full).all()  # one run: 1..30
    assert CM.rle_decode("1 30", h, w).all()
    assert not CM.rle_decode("", h, w).any()  # empty code = empty mask
    assert not CM.rle_decode(float("nan"), h, w).any()  # pandas reads an empty cell as NaN
    end = np.zeros((h, w), bool)
    end[-1, -2:] = True  # run touching the last pixel
    assert _encode(end) == "29 2" and (CM.rle_decode("29 2", h, w) == end).all()
    ones = np.zeros((h, w), bool)
    ones[0, 0] = ones[2, 3] = ones[4, 5] = True  # 1-pixel runs at the first, a middle and the last pixel
    assert (CM.rle_decode(_encode(ones), h, w) == ones).all()
    row_wrap = np.zeros((h, w), bool)
    row_wrap[1, 4:] = row_wrap[2, :3] = True  # one run across a row end (row-major)
    assert _encode(row_wrap) == "11 5" and (CM.rle_decode("11 5", h, w) == row_wrap).all()


@pytest.mark.parametrize("code,what", [("0 3", "start"), ("30 2", "past"), ("3", "odd"), ("2 -1", "length"),
                                       ("2 x", "integer"), ("5 3 2 2", "order")])
def test_decode_refuses_malformed_codes(code, what):
    with pytest.raises(ValueError, match=what):
        CM.rle_decode(code, 5, 6)


# ----------------------------------------------------------------------------- the CSV


def _lungs(h: int, w: int, shift: int = 0) -> tuple[np.ndarray, np.ndarray]:
    left, right = np.zeros((h, w), bool), np.zeros((h, w), bool)
    left[h // 8:h - h // 8, w // 2 + 2 + shift:w - w // 10] = True  # image right = patient left
    right[h // 8 + 1:h - h // 6, w // 10:w // 2 - 2 + shift] = True
    return left, right


def _row(image_id, left, right, dice=0.9, heart=None):
    h, w = left.shape
    heart = np.zeros((h, w), bool) if heart is None else heart
    return [image_id, dice, min(1.0, dice + 0.05), "1,2,3,4", _encode(left), _encode(right), _encode(heart), h, w]


@pytest.fixture()
def nih_table(tmp_path):
    """A ChestX-Ray8.csv with: two good rows, one below Dice 0.7, one malformed code."""
    rows, masks = [], {}
    for k, name in enumerate(["00000001_000.png", "00000002_001.png", "00000003_000.png", "00000004_000.png"]):
        masks[name] = _lungs(40, 40, shift=k)
        rows.append(_row(name, *masks[name], dice=0.65 if k == 2 else 0.85))
    rows[3][5] = "30 4 10 2"  # right lung: starts not increasing
    path = tmp_path / "ChestX-Ray8.csv"
    pd.DataFrame(rows, columns=NIH_COLUMNS).to_csv(path, index=False)
    return path, masks


def test_read_keeps_rows_at_or_above_the_dice_threshold_and_counts_the_rest(nih_table):
    path, _ = nih_table
    rows = CM.read_chexmask(path)
    assert rows.id_column == "Image Index"
    assert sorted(rows.rows.index) == ["00000001_000.png", "00000002_001.png", "00000004_000.png"]
    assert rows.dropped == {"below_dice": 1}
    assert CM.read_chexmask(path, min_dice=0.0).dropped == {}
    assert CM.read_chexmask(path, min_dice=0.85).dropped == {"below_dice": 1}  # >= keeps the 0.85 rows
    assert CM.read_chexmask(path, min_dice=0.86).dropped == {"below_dice": 4}
    assert CM.read_chexmask(path, ids=["00000002_001.png", "nope"]).rows.index.tolist() == ["00000002_001.png"]
    gz = path.with_suffix(".csv.gz")  # PhysioNet also serves the tables gzipped
    pd.read_csv(path).to_csv(gz, index=False)
    assert CM.read_chexmask(gz).rows.equals(rows.rows)


def test_read_names_the_file_and_the_missing_columns(tmp_path):
    path = tmp_path / "cm.csv"
    pd.DataFrame({"Image Index": ["a"], "Left Lung": [""], "Height": [4], "Width": [4]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"cm\.csv.*Right Lung.*Dice RCA \(Mean\)"):
        CM.read_chexmask(path)
    pd.DataFrame({"name": ["a"], "Left Lung": [""], "Right Lung": [""], "Height": [4], "Width": [4],
                  "Dice RCA (Mean)": [0.9]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match="id_column"):
        CM.read_chexmask(path)
    assert CM.read_chexmask(path, id_column="name").rows.index.tolist() == ["a"]


def test_structures_keep_left_and_right_apart(nih_table):
    path, masks = nih_table
    rows = CM.read_chexmask(path)
    left, right = masks["00000001_000.png"]
    assert (rows.mask("00000001_000.png", ("Left Lung",)) == left).all()
    assert (rows.mask("00000001_000.png", ("Right Lung",)) == right).all()
    assert (rows.mask("00000001_000.png") == (left | right)).all()
    with pytest.raises(ValueError, match=r"line 5.*00000004_000\.png.*Right Lung"):
        rows.mask("00000004_000.png")


# ----------------------------------------------------------------------------- joins


def _images(ids, size=40):
    return pd.DataFrame({"image_id": ids, "width": size, "height": size})


def test_nih_join_by_image_index(nih_table):
    path, masks = nih_table
    ids = ["00000002_001.png", "00000001_000.png", "00000003_000.png", "00000004_000.png", "00000099_000.png"]
    with pytest.warns(UserWarning, match=r"ChestX-Ray8\.csv.*line 5"):
        out = LM.lung_masks("chexmask", _images(ids), 20, table=path)
    for i in (0, 1):
        assert (out.masks[i] == LM.resize_mask(np.logical_or(*masks[ids[i]]), 20)).all()
    assert not out.masks[2:].any()
    assert out.missing == 3 and not out.approximate
    assert out.excluded == {"below_dice": 1, "malformed_rle": 1, "no_chexmask_row": 1}
    assert "below_dice" in out.describe()


def _mapping(path, pairs):
    """The RSNA challenge's mapping file: a JSON list, one object per RSNA image (real keys)."""
    entries = [{"subset_img_id": rsna, "img_id": nih, "dataset": "nih", "subset_group": "train",
                "orig_labels": ["Infiltration"], "StudyInstanceUID": f"1.2.{k}", "SeriesInstanceUID": f"1.3.{k}",
                "SOPInstanceUID": f"1.4.{k}"} for k, (rsna, nih) in enumerate(pairs)]
    path.write_text(json.dumps(entries))
    return path


def test_rsna_join_through_the_challenge_mapping(nih_table, tmp_path):
    path, masks = nih_table
    mapping = _mapping(tmp_path / "pneumonia-challenge-dataset-mappings_2018.json",
                       [("0004cfab-14fd-4e49-80ba-63a80b6bddd6", "00000002_001.png"),
                        ("00313ee0-9eaa-42f4-b0ab-c148ed3241cd", "00000001_000.png"),
                        ("00322d4d-1c29-4943-afc9-b6754be640eb", "00000099_000.png")])
    assert CM.read_rsna_nih_mapping(mapping)["00313ee0-9eaa-42f4-b0ab-c148ed3241cd"] == "00000001_000.png"
    ids = ["00313ee0-9eaa-42f4-b0ab-c148ed3241cd", "0004cfab-14fd-4e49-80ba-63a80b6bddd6",
           "00322d4d-1c29-4943-afc9-b6754be640eb", "ffffffff-0000-0000-0000-000000000000"]
    out = LM.lung_masks("chexmask", _images(ids), 20, table=path, mapping=mapping)
    assert (out.masks[0] == LM.resize_mask(np.logical_or(*masks["00000001_000.png"]), 20)).all()
    assert (out.masks[1] == LM.resize_mask(np.logical_or(*masks["00000002_001.png"]), 20)).all()
    assert out.excluded == {"no_chexmask_row": 1, "not_in_mapping": 1} and out.missing == 2


def test_mapping_of_another_format_is_refused(tmp_path):
    bad = tmp_path / "map.json"
    bad.write_text(json.dumps({"0004cfab": "00000002_001.png"}))
    with pytest.raises(ValueError, match=r"map\.json.*list"):
        CM.read_rsna_nih_mapping(bad)
    bad.write_text(json.dumps([{"patientId": "a", "img_id": "b"}]))
    with pytest.raises(ValueError, match=r"map\.json.*subset_img_id"):
        CM.read_rsna_nih_mapping(bad)


def test_mask_in_another_frame_than_the_image_is_an_error(nih_table):
    path, _ = nih_table
    images = pd.DataFrame({"image_id": ["00000001_000.png"], "width": [2000], "height": [1000]})
    with pytest.raises(ValueError, match=r"ChestX-Ray8\.csv.*40 x 40.*OriginalResolution"):
        LM.lung_masks("chexmask", images, 20, table=path)
    scaled = pd.DataFrame({"image_id": ["00000001_000.png"], "width": [1024], "height": [1024]})
    assert LM.lung_masks("chexmask", scaled, 20, table=path).missing == 0  # same frame at another scale


# ----------------------------------------------------------------------------- LAR


def test_lar_with_a_chexmask_mask_equals_lar_with_the_same_mask_given_directly(nih_table, tmp_path):
    from pneumoloc.data.tables import DatasetTables
    from pneumoloc.localize.ground_truth import ground_truth
    from pneumoloc.localize.metrics import lung_attention_ratio

    path, masks = nih_table
    ids = ["00000001_000.png", "00000002_001.png"]
    for name in ids:
        Image.fromarray(np.logical_or(*masks[name]).astype(np.uint8) * 255).save(tmp_path / f"mask_{name}")
    images = pd.DataFrame({"image_id": ids, "patient_id": ["1", "2"], "path": [str(tmp_path / i) for i in ids],
                           "label": [1, 0], "width": 40, "height": 40,
                           "mask_path": [str(tmp_path / f"mask_{i}") for i in ids]})
    tables = DatasetTables(images, pd.DataFrame(columns=["image_id", "x", "y", "w", "h"]), "nih", str(tmp_path))
    maps = np.random.default_rng(0).random((2, 16, 16)).astype(np.float16)
    direct = ground_truth(tables, ids, 16, "dataset").lungs
    cxm = ground_truth(tables, ids, 16, "chexmask", table=str(path)).lungs
    assert cxm.source == "chexmask" and cxm.missing == 0
    assert (cxm.masks == direct.masks).all()
    a, b = lung_attention_ratio(maps, cxm.masks), lung_attention_ratio(maps, direct.masks)
    assert a.valid.all() and (a.values == b.values).all()


def test_missing_table_says_where_to_put_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.csv.*data/README\.md"):
        LM.lung_masks("chexmask", _images(["a"]), 8, table=tmp_path / "nope.csv")
    with pytest.raises(ValueError, match="table="):
        LM.lung_masks("chexmask", _images(["a"]), 8)


@pytest.mark.parametrize("id_column", ["Image Index", "dicom_id", "Path", "ImageID", "image_id", "Image ID"])
def test_id_column_of_each_published_csv_is_found(tmp_path, id_column):
    # ChestX-Ray8, MIMIC-CXR-JPG, CheXpert, Padchest, VinDr-CXR (the authors' sample CSVs), data dictionary
    left, right = _lungs(8, 8)
    pd.DataFrame([_row("x1", left, right)], columns=[id_column, *NIH_COLUMNS[1:]]).to_csv(tmp_path / "c.csv",
                                                                                          index=False)
    assert CM.read_chexmask(tmp_path / "c.csv").id_column == id_column


def test_rows_without_a_frame_are_dropped_and_counted(tmp_path):
    # some rows of CheXmask's Padchest sample have empty Height and Width
    left, right = _lungs(16, 16)
    rows = [_row("a", left, right), _row("b", left, right)]
    rows[1][-2:] = [None, None]
    pd.DataFrame(rows, columns=NIH_COLUMNS).to_csv(tmp_path / "c.csv", index=False)
    got = CM.read_chexmask(tmp_path / "c.csv")
    assert got.rows.index.tolist() == ["a"] and got.dropped == {"no_frame": 1}
    out = LM.lung_masks("chexmask", _images(["b", "a"], 16), 8, table=tmp_path / "c.csv")
    assert out.excluded == {"no_frame": 1} and out.masks[1].any()


def test_repeated_id_keeps_the_first_row_and_counts_the_others(tmp_path):
    left, right = _lungs(16, 16)
    rows = [_row("a", left, right), _row("a", right, left), _row("b", left, right, dice=0.1),
            _row("b", left, right, dice=0.2)]
    pd.DataFrame(rows, columns=NIH_COLUMNS).to_csv(tmp_path / "c.csv", index=False)
    got = CM.read_chexmask(tmp_path / "c.csv")
    assert (got.mask("a", ("Left Lung",)) == left).all()
    assert got.dropped == {"below_dice": 1, "duplicate_id": 2}
    assert got.why_missing("a") == "" and got.why_missing("b") == "below_dice"
    assert got.why_missing("c") == "no_chexmask_row"


def test_table_is_streamed_once_for_the_ids_of_one_report(nih_table, monkeypatch):
    # notebook 04 asks for the test images, then for a few of them (failure review)
    path, _ = nih_table
    calls = []
    read = CM.read_chexmask
    monkeypatch.setattr(LM, "read_chexmask", lambda *a, **k: calls.append(a[1]) or read(*a, **k))
    LM._CHEXMASK_ROWS.clear()
    ids = ["00000001_000.png", "00000002_001.png", "00000003_000.png"]
    first = LM.lung_masks("chexmask", _images(ids), 8, table=path)
    again = LM.lung_masks("chexmask", _images(ids[1:]), 8, table=path)
    assert len(calls) == 1 and (again.masks == first.masks[1:]).all()
    LM.lung_masks("chexmask", _images(["00000099_000.png"]), 8, table=path)
    assert len(calls) == 2 and set(calls[1]) == {*ids, "00000099_000.png"}
    path.touch()  # a new file version is read again
    LM.lung_masks("chexmask", _images(ids[:1]), 8, table=path)
    assert len(calls) == 3
