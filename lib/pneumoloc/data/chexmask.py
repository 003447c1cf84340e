"""CheXmask lung masks (Gaggion et al. 2024, Scientific Data; PhysioNet
``chexmask-cxr-segmentation-data``) and the RSNA -> NIH id mapping that reaches them from RSNA.

**The CSVs.** One per source dataset (``OriginalResolution/ChestX-Ray8.csv``,
``MIMIC-CXR-JPG.csv``, ...), one row per image. What this module relies on, from the data
dictionary and README published with the dataset (v1.0.0) and the column order of the
``ChestX-Ray8.csv`` sample in the authors' repository (``ngaggion/CheXmask-Database``):

* an id column whose name depends on the dataset (:data:`ID_COLUMNS`): ``Image ID`` in the
  data dictionary; in the authors' sample CSVs ``Image Index`` (``ChestX-Ray8.csv``, the NIH
  file name, e.g. ``00000001_000.png``), ``dicom_id`` (MIMIC-CXR-JPG), ``Path`` (CheXpert),
  ``ImageID`` (Padchest), ``image_id`` (VinDr-CXR); any other: pass ``id_column``;
* ``Dice RCA (Mean)`` and ``Dice RCA (Max)``: the reverse-classification-accuracy quality
  estimate; the README recommends using only masks with ``Dice RCA (Mean) >= 0.7``
  (:data:`MIN_DICE`);
* ``Left Lung``, ``Right Lung``, ``Heart``: run-length codes, ``"start length start length
  ..."`` with 1-based starts into the row-major flattened mask (the authors' encoder:
  ``np.where(pixels[1:] != pixels[:-1])`` on the padded flat mask, plus one);
* ``Height``, ``Width``: the mask's frame, which in ``OriginalResolution`` is the image's
  own (``Preprocessed`` masks are padded to 1024 x 1024 instead); some rows of the Padchest
  sample leave them empty: such rows are dropped (``no_frame``);
* no line breaks inside a field, so the row of id ``k`` is line ``index + 2`` of the file.

``Landmarks`` is never read. The NIH table is several GB (about 30 kB of codes per image):
:func:`read_chexmask` streams it in chunks and keeps only the requested ids.

**RSNA.** The RSNA Pneumonia Detection Challenge images are NIH ChestX-ray14 images (Shih et
al. 2019, Radiology: AI) in the same 1024 x 1024 frame. RSNA published
``pneumonia-challenge-dataset-mappings_2018.json``: a JSON list with one object per RSNA
image; :func:`read_rsna_nih_mapping` relies on two of its keys only, ``subset_img_id`` (the
RSNA ``patientId``) and ``img_id`` (the NIH ``Image Index``). The other keys
(``orig_labels``, ``StudyInstanceUID``, ``SOPInstanceUID``, ...) are ignored.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

__all__ = ["MIN_DICE", "LUNGS", "STRUCTURES", "ID_COLUMNS", "rle_decode", "ChexmaskRows", "read_chexmask",
           "read_rsna_nih_mapping"]

MIN_DICE = 0.7  # Dice RCA (Mean) cut recommended by the CheXmask README
LUNGS = ("Left Lung", "Right Lung")
STRUCTURES = (*LUNGS, "Heart")
# looked for in this order when id_column is "" (data dictionary, then each dataset's CSV)
ID_COLUMNS = ("Image ID", "Image Index", "dicom_id", "Path", "ImageID", "image_id")
DICE = "Dice RCA (Mean)"
_FRAME = ("Height", "Width")
_CHUNK_ROWS = 2000  # rows parsed at a time (~60 MB of codes in the NIH file)


def rle_decode(rle: str | float | None, height: int, width: int) -> np.ndarray:
    """CheXmask run-length code -> bool ``[height, width]``.

    ``rle`` is ``"start length ..."``, starts 1-based into the row-major flattened mask,
    runs in increasing order and disjoint (as the encoder writes them). An empty code (or
    the NaN pandas reads for an empty cell) is an empty mask.

    Raises:
        ValueError: a token that is not an integer, an odd count, a start below 1, a length
            below 1, runs out of order or overlapping, or a run past the mask's end.
    """
    n = int(height) * int(width)
    if rle is None or (isinstance(rle, float) and np.isnan(rle)) or not str(rle).strip():
        return np.zeros((height, width), bool)
    tokens = str(rle).split()
    try:
        runs = np.array(tokens, dtype=np.int64)
    except ValueError:
        bad = [t for t in tokens if not t.lstrip("+-").isdigit()] or tokens
        raise ValueError(f"run-length code: {bad[0][:20]!r} is not an integer") from None
    if runs.size % 2:
        raise ValueError(f"run-length code has an odd number of values ({runs.size}); it holds start-length pairs")
    starts, lengths = runs[0::2] - 1, runs[1::2]
    _check_runs(starts, lengths, height, width)
    # flat index of every masked pixel: 0..L-1 shifted, run by run, to its run's start
    # (touches only the pixels inside runs instead of a pass over the whole mask)
    before = np.cumsum(lengths) - lengths  # pixels in earlier runs
    flat = np.zeros(n, bool)
    flat[np.arange(lengths.sum()) + np.repeat(starts - before, lengths)] = True
    return flat.reshape(height, width)


def _check_runs(starts: np.ndarray, lengths: np.ndarray, height: int, width: int) -> None:
    """Refuse runs that no CheXmask encoder writes (see :func:`rle_decode`)."""
    if (starts < 0).any():
        raise ValueError(f"run-length code: start {starts.min() + 1} below 1 (starts are 1-based)")
    if (lengths < 1).any():
        raise ValueError(f"run-length code: length {lengths.min()} below 1")
    ends = starts + lengths
    if ends.max() > height * width:
        raise ValueError(f"run-length code: a run ends at pixel {ends.max()}, past the end of the "
                         f"{height} x {width} mask ({height * width} pixels): wrong Height/Width?")
    if (starts[1:] < ends[:-1]).any():
        raise ValueError("run-length code: runs not in increasing order (or overlapping)")


@dataclass(frozen=True)
class ChexmaskRows:
    """The usable rows of one CheXmask CSV.

    Attributes:
        rows: indexed by image id: ``Height, Width``, the codes read, the Dice columns
            present and ``line`` (the row's line in the file).
        path: the CSV.
        id_column: the CSV's id column.
        skipped: id -> reason of the rows read but not kept (``duplicate_id``, ``no_frame``,
            ``below_dice``, in that order of precedence).
    """

    rows: pd.DataFrame
    path: str
    id_column: str
    skipped: pd.Series

    def why_missing(self, key: str) -> str:
        """"" when ``key`` has a usable row, else why not: its skipped row's reason (the first,
        for a repeated id) or ``no_chexmask_row``."""
        if key in self.rows.index:
            return ""
        return self._first_reason.get(key, "no_chexmask_row")

    @cached_property
    def _first_reason(self) -> dict[str, str]:
        return self.skipped[~self.skipped.index.duplicated()].to_dict()

    @property
    def dropped(self) -> dict[str, int]:
        """How many rows each reason dropped (reasons with none are left out)."""
        return {str(k): int(v) for k, v in self.skipped.value_counts().sort_index().items()}

    def frame(self, key: str) -> tuple[int, int]:
        """``(height, width)`` of the mask of ``key``."""
        r = self.rows.loc[key]
        return int(r["Height"]), int(r["Width"])

    def mask(self, key: str, structures: Sequence[str] = LUNGS) -> np.ndarray:
        """Full-size bool mask of ``key``: the union of ``structures`` (default both lungs).

        Raises:
            ValueError: a code is malformed, or a structure was not read; the message names
                the file, line, id and column.
        """
        r = self.rows.loc[key]
        h, w = self.frame(key)
        out = np.zeros((h, w), bool)
        for s in structures:
            if s not in r:
                raise ValueError(f"{self.path}: column {s!r} was not read; known: {[c for c in STRUCTURES if c in r]}")
            try:
                out |= rle_decode(r[s], h, w)
            except ValueError as e:
                raise ValueError(f"{self.path} line {r['line']}, {self.id_column} {key!r}, {s!r}: {e}") from None
        return out


def _id_column(path: Path, columns: Sequence[str], id_column: str) -> str:
    if id_column:
        if id_column not in columns:
            raise ValueError(f"{path}: id_column {id_column!r} is not a column; columns: {list(columns)}")
        return id_column
    found = [c for c in ID_COLUMNS if c in columns]
    if not found:
        raise ValueError(f"{path}: no image id column (looked for {list(ID_COLUMNS)}); pass "
                         f"id_column=<one of {list(columns)}>")
    return found[0]


def read_chexmask(path: str | os.PathLike, ids: Iterable[str] | None = None, min_dice: float = MIN_DICE,
                  id_column: str = "", progress: bool = True) -> ChexmaskRows:
    """The rows of a CheXmask CSV (``.csv`` or ``.csv.gz``) with ``Dice RCA (Mean) >= min_dice``.

    Args:
        ids: keep only these image ids (recommended: the NIH table is several GB).
        min_dice: quality cut on ``Dice RCA (Mean)``; 0 keeps every row (and does not need
            the column).
        id_column: the id column; empty: the first of :data:`ID_COLUMNS` present.

    Raises:
        ValueError: a required column is missing (the message names the file and columns).
    """
    from tqdm.auto import tqdm

    path = Path(path)
    columns = list(pd.read_csv(path, nrows=0).columns)
    key = _id_column(path, columns, id_column)
    need = [*LUNGS, *_FRAME] + ([DICE] if min_dice > 0 else [])
    if missing := [c for c in need if c not in columns]:
        raise ValueError(f"{path}: CheXmask table lacks columns {missing}; expected {[key, *need]} "
                         "(the published CSV columns)")
    use = [key, *_FRAME, *(c for c in (*STRUCTURES, DICE, "Dice RCA (Max)") if c in columns)]
    wanted = None if ids is None else set(map(str, ids))
    parts, offset = [], 0
    text = {c: str for c in (key, *STRUCTURES) if c in use}  # ids like 00000001 and codes stay text
    chunks = pd.read_csv(path, usecols=use, dtype=text, chunksize=_CHUNK_ROWS)
    for chunk in tqdm(chunks, desc=f"CheXmask {path.name}", unit="chunk", disable=not progress or
                      path.stat().st_size < 50e6):
        chunk["line"] = np.arange(offset, offset + len(chunk)) + 2  # header is line 1
        offset += len(chunk)
        parts.append(chunk if wanted is None else chunk[chunk[key].isin(wanted)])
    rows = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[*use, "line"])
    return _filter(rows, path, key, min_dice)


def _filter(rows: pd.DataFrame, path: Path, key: str, min_dice: float) -> ChexmaskRows:
    """Drop repeated ids (first kept), rows without a frame and rows below the Dice cut, recording why."""
    reason = pd.Series("", index=rows.index, dtype=object)
    frame = rows[list(_FRAME)].apply(pd.to_numeric, errors="coerce")
    if min_dice > 0:  # a missing or unreadable score counts as below the cut
        reason[~(pd.to_numeric(rows[DICE], errors="coerce") >= min_dice)] = "below_dice"
    reason[~((frame >= 1) & (frame % 1 == 0)).all(axis=1)] = "no_frame"
    reason[rows[key].duplicated()] = "duplicate_id"
    kept = rows[reason == ""].astype({c: np.int64 for c in _FRAME}).set_index(key)
    skipped = pd.Series(reason[reason != ""].to_numpy(), index=rows.loc[reason != "", key].to_numpy(), dtype=str)
    return ChexmaskRows(kept, str(path), key, skipped)


def read_rsna_nih_mapping(path: str | os.PathLike) -> pd.Series:
    """RSNA ``patientId`` -> NIH ``Image Index``, from ``pneumonia-challenge-dataset-mappings_2018.json``.

    Raises:
        ValueError: the file is not a JSON list of objects with ``subset_img_id`` and
            ``img_id``, or maps one RSNA id to two NIH images.
    """
    path = Path(path)
    entries = json.loads(path.read_text())
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a JSON list of objects (the RSNA challenge's mapping file), "
                         f"got a {type(entries).__name__}")
    need = ("subset_img_id", "img_id")
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or any(k not in e for k in need):
            raise ValueError(f"{path}: entry {i} lacks keys {list(need)} (RSNA patientId and NIH image id); "
                             f"it has {sorted(e) if isinstance(e, dict) else type(e).__name__}")
    df = pd.DataFrame({"rsna": [str(e["subset_img_id"]) for e in entries],
                       "nih": [str(e["img_id"]) for e in entries]}).drop_duplicates()
    if (clash := df["rsna"].duplicated(keep=False)).any():
        raise ValueError(f"{path}: RSNA ids mapped to several NIH images: "
                         f"{df[clash].head(3).values.tolist()}")
    return df.set_index("rsna")["nih"]
