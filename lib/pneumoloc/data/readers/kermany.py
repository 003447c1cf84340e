"""Kermany / Guangzhou pediatric chest X-rays (Kermany et al., Cell 2018; Kaggle "chest-xray-pneumonia").

Layout: ``chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg``. The Kaggle zip also
holds a nested duplicate ``chest_xray/chest_xray/...`` and macOS ``__MACOSX/`` folders
(``._*`` resource forks): both are ignored, and a file present in two copies is
counted once (key: original split folder, class folder, file name; the shallowest
copy wins).

Patient ids come from file names (the dataset has no patient table):

* ``person1_bacteria_1.jpeg``, ``person1_virus_6.jpeg`` -> ``person1`` (pneumonia
  files: ``person<N>_<subtype>_<image counter>``);
* ``IM-0115-0001.jpeg`` -> ``IM-0115`` and ``NORMAL2-IM-0381-0001.jpeg`` ->
  ``NORMAL2-IM-0381`` (normal files: ``[NORMAL2-]IM-<patient>-<image counter>``;
  the ``NORMAL2-`` prefix marks a second numbering series and is kept, so
  ``IM-0381`` and ``NORMAL2-IM-0381`` are different patients);
* ``IM-0011-0001-0001.jpeg`` -> ``IM-0011``: the published ``test/NORMAL`` folder holds
  names with a second counter beside ``IM-0011-0001.jpeg`` (``IM-<patient>-<k>-<k2>``),
  the same patient as the two-group name.

Ids are taken at face value across the original folders: the same ``personN`` in
``train`` and ``test`` is one patient (the conservative reading, as in Shahi & Bagale:
grouping two people together can only remove leakage, never add it). The original
folder is kept in ``source_split`` and the split is redone patient-wise.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from .base import LayoutError, finish, reader

__all__ = ["read_kermany", "patient_from_name", "LAYOUT"]

LAYOUT = "chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg (data/README.md, Kermany)"
SPLITS = ("train", "val", "test")
CLASSES = {"NORMAL": 0, "PNEUMONIA": 1}
SUFFIXES = (".jpeg", ".jpg", ".png")

_PERSON = re.compile(r"^(person\d+)_(bacteria|virus)_\d+$", re.IGNORECASE)
# one or two counters after the patient number (IM-0011-0001, IM-0011-0001-0001)
_NORMAL = re.compile(r"^((?:NORMAL\d*-)?IM-\d+)(?:-\d+){1,2}$", re.IGNORECASE)


def patient_from_name(stem: str) -> tuple[str, str] | None:
    """``(patient_id, subtype)`` from a file stem, or None when no rule matches.

    >>> patient_from_name("person1_virus_6")
    ('person1', 'virus')
    >>> patient_from_name("NORMAL2-IM-0381-0001")
    ('NORMAL2-IM-0381', 'none')
    >>> patient_from_name("IM-0011-0001-0001")
    ('IM-0011', 'none')
    """
    m = _PERSON.match(stem)
    if m:
        return m.group(1).lower(), m.group(2).lower()
    m = _NORMAL.match(stem)
    if m:
        return m.group(1).upper(), "none"
    return None


def _list_files(root: Path) -> pd.DataFrame:
    rows = []
    for path in root.rglob("*"):
        rel = path.relative_to(root).parts
        if (path.suffix.lower() not in SUFFIXES or "__MACOSX" in rel or path.name.startswith(".")
                or len(rel) < 3 or rel[-3].lower() not in SPLITS or rel[-2].upper() not in CLASSES):
            continue
        rows.append((rel[-3].lower(), rel[-2].upper(), path.name, len(rel), str(path.resolve())))
    df = pd.DataFrame(rows, columns=["source_split", "source_class", "file", "depth", "path"])
    # the Kaggle copy nests a duplicate chest_xray/chest_xray: keep the shallowest copy
    df = df.sort_values(["depth", "path"]).drop_duplicates(["source_split", "source_class", "file"])
    return df.drop(columns="depth").sort_values("path").reset_index(drop=True)


@reader("kermany", unmatched_names=("error", "own_patient"))
def read_kermany(root: str, unmatched_names: str = "error", max_skipped_fraction: float = 0.05,
                 progress: bool = True):
    """Read the Kermany folders under ``root`` (the ``chest_xray`` folder or any parent of it).

    Args:
        root: dataset folder.
        unmatched_names: a file name that fits no patient rule: ``"error"`` (default)
            or ``"own_patient"`` (the file is its own patient; subtype ``"unknown"``).
        max_skipped_fraction: stop when more than this share of images is unreadable.
        progress: show a progress bar while probing images.

    Returns:
        DatasetTables with extra columns ``subtype`` (bacteria / virus / none),
        ``source_split`` (train / val / test folder) and ``source_class``.
    """
    if not Path(root).is_dir():
        raise LayoutError(f"{root}: folder not found; expected layout: {LAYOUT}")
    files = _list_files(Path(root))
    if files.empty:
        raise LayoutError(f"{root}: no images found; expected layout: {LAYOUT}")
    for cls in CLASSES:
        if not (files["source_class"] == cls).any():
            raise LayoutError(f"{root}: no {cls} images (empty or missing {cls} folders); "
                              f"expected layout: {LAYOUT}")
    parsed = []
    for stem, cls, path in zip(files["file"].map(lambda f: Path(f).stem), files["source_class"], files["path"]):
        got = patient_from_name(stem)
        if got is None:
            if unmatched_names == "error":
                raise LayoutError(f"{path}: file name fits no patient rule (person<N>_<bacteria|virus>_<k>"
                                  " or [NORMAL2-]IM-<patient>-<k>[-<k2>]); pass unmatched_names='own_patient'"
                                  " to treat such files as their own patient")
            got = (f"{cls}-{stem}", "unknown")
        parsed.append(got)
    files["patient_id"] = [p for p, _ in parsed]
    files["subtype"] = [s for _, s in parsed]
    files["label"] = files["source_class"].map(CLASSES)
    files["image_id"] = files["source_split"] + "/" + files["source_class"] + "/" + files["file"].map(
        lambda f: Path(f).stem)
    images = files[["image_id", "patient_id", "path", "label", "subtype", "source_split", "source_class"]]
    return finish("kermany", root, images, max_skipped_fraction=max_skipped_fraction, progress=progress)
