"""CheXpert (Irvin et al., AAAI 2019), original or downsampled ("-small") copy.

Layout (``root`` = the ``CheXpert-v1.0-small`` or ``CheXpert-v1.0`` folder)::

    train.csv, valid.csv
        Path,Sex,Age,Frontal/Lateral,AP/PA,<14 findings>
        Path = CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg
    train/patient00001/study1/view1_frontal.jpg ...

The first component of ``Path`` is the dataset folder itself, so paths are resolved
under ``root`` without it. Findings are 1 / 0 / -1 (uncertain) / blank (not
mentioned), mapped by ``uncertain`` and ``blank`` (:func:`~.base.uncertain_policy`).
The binary ``label`` is Pneumonia after that mapping (1 only when the mapped value
is 1; an ignored, NaN Pneumonia counts as 0 for the binary task).
"""
from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import pandas as pd

from .base import (BLANK_POLICIES, CHEXPERT_FINDINGS, UNCERTAIN_POLICIES, LayoutError, check_values,
                   finish, labeler_findings, read_csv, reader)

__all__ = ["read_chexpert", "LAYOUT"]

LAYOUT = ("train.csv / valid.csv with columns Path,Sex,Age,Frontal/Lateral,AP/PA and the 14 CheXpert "
          "findings; Path like CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg")
_PATIENT = re.compile(r"(patient\d+)")


def _local(root: Path, rel: str) -> str:
    parts = PurePosixPath(rel).parts
    if parts and parts[0].lower().startswith("chexpert"):
        parts = parts[1:]  # the dataset folder itself
    return str((root.joinpath(*parts)).resolve())


def _one_csv(root: Path, name: str, uncertain: str, blank: str) -> pd.DataFrame:
    path = root / name
    df = read_csv(path, ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_FINDINGS], LAYOUT)
    check_values(df, "Frontal/Lateral", ["Frontal", "Lateral"], path, LAYOUT)
    patients = df["Path"].astype(str).str.extract(_PATIENT)[0]
    if patients.isna().any():
        i = int(patients.isna().to_numpy().argmax())
        raise LayoutError(f"{path}: line {i + 2}, column 'Path': {df['Path'].iloc[i]!r} has no "
                          f"patientNNNNN folder; expected layout: {LAYOUT}")
    findings = labeler_findings(df, path, LAYOUT, uncertain, blank)
    images = pd.DataFrame({
        "image_id": df["Path"].astype(str).map(lambda p: str(PurePosixPath(*PurePosixPath(p).parts[1:]))),
        "patient_id": patients, "path": [_local(root, p) for p in df["Path"]],
        "label": (findings["Pneumonia"] == 1).astype(int), "sex": df["Sex"], "age": df["Age"],
        "frontal": df["Frontal/Lateral"] == "Frontal",
        "view": df["AP/PA"].where(df["Frontal/Lateral"] == "Frontal", "LATERAL"),
        "source_split": Path(name).stem,
    })
    return pd.concat([images, findings], axis=1)


@reader("chexpert", uncertain=UNCERTAIN_POLICIES, blank=BLANK_POLICIES)
def read_chexpert(root: str, uncertain: str = "ones", blank: str = "zeros", frontal_only: bool = True,
                  views: tuple = (), csvs: tuple = ("train.csv", "valid.csv"),
                  max_skipped_fraction: float = 0.05, progress: bool = True):
    """Read CheXpert under ``root``.

    Args:
        root: the ``CheXpert-v1.0-small`` (or ``CheXpert-v1.0``) folder.
        uncertain: -1 labels: ``"ones"`` (U-Ones), ``"zeros"`` or ``"ignore"`` (NaN, masked).
        blank: unmentioned findings: ``"zeros"`` or ``"ignore"`` (NaN).
        frontal_only: drop lateral views.
        views: keep only these ``AP/PA`` values (``("PA",)``); empty = all.
        csvs: label tables to read; their stems go into ``source_split``.
        max_skipped_fraction: stop when more than this share of images is unreadable.
        progress: show a progress bar while probing images.
    """
    root_p = Path(root)
    images = pd.concat([_one_csv(root_p, c, uncertain, blank) for c in csvs], ignore_index=True)
    if frontal_only:
        images = images[images["frontal"]]
    if views:
        images = images[images["view"].isin(views)]
    return finish("chexpert", root, images.drop(columns="frontal").reset_index(drop=True), None,
                  CHEXPERT_FINDINGS, max_skipped_fraction, progress)
