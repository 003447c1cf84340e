"""MIMIC-CXR (Johnson et al. 2019): MIMIC-CXR-JPG (``.jpg``) or MIMIC-CXR (``.dcm``).

Layout (``root`` = the ``.../2.0.0`` folder; each table as ``.csv`` or ``.csv.gz``)::

    mimic-cxr-2.0.0-chexpert.csv   subject_id,study_id,<14 findings>   (one row per study)
    mimic-cxr-2.0.0-metadata.csv   dicom_id,subject_id,study_id,ViewPosition,Rows,Columns,...
    mimic-cxr-2.0.0-split.csv      dicom_id,study_id,subject_id,split   (train/validate/test)
    files/p10/p10000032/s50414267/<dicom_id>.jpg   (or .dcm)

One row per image (``dicom_id``), patient = ``subject_id``; the study's labels are
copied to each of its images. Images of studies without a label row are not
listed (the labeler produced nothing for them). Findings are 1 / 0 / -1 / blank,
mapped by ``uncertain`` (U-Ones by default, as the MIMIC-CXR DenseNet/ResNet study)
and ``blank``. The official split is kept in ``source_split``.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .base import (BLANK_POLICIES, CHEXPERT_FINDINGS, UNCERTAIN_POLICIES, LayoutError, finish,
                   labeler_findings, read_csv, reader)

__all__ = ["read_mimic", "LAYOUT", "FRONTAL_VIEWS"]

LAYOUT = ("mimic-cxr-2.0.0-{chexpert,metadata,split}.csv[.gz] and "
          "files/p10/p10000032/s50414267/<dicom_id>.jpg|.dcm")
FRONTAL_VIEWS = ("PA", "AP")


def _table(root: Path, kind: str, columns: list[str]) -> tuple[Path, pd.DataFrame]:
    for suffix in (".csv.gz", ".csv"):
        path = root / f"mimic-cxr-2.0.0-{kind}{suffix}"
        if path.is_file():
            return path, read_csv(path, columns, LAYOUT)
    raise LayoutError(f"{root}: mimic-cxr-2.0.0-{kind}.csv[.gz] not found; expected layout: {LAYOUT}")


def _image_path(root: Path, subject: int, study: int, dicom: str, image_format: str) -> str:
    folder = root / "files" / f"p{str(subject)[:2]}" / f"p{subject}" / f"s{study}"
    if image_format != "auto":
        return str(folder / f"{dicom}.{image_format}")
    jpg = folder / f"{dicom}.jpg"
    return str(jpg if jpg.exists() or not (folder / f"{dicom}.dcm").exists() else folder / f"{dicom}.dcm")


@reader("mimic", uncertain=UNCERTAIN_POLICIES, blank=BLANK_POLICIES, image_format=("auto", "jpg", "dcm"),
        labels=("chexpert", "negbio"))
def read_mimic(root: str, uncertain: str = "ones", blank: str = "zeros", frontal_only: bool = True,
               views: tuple = (), image_format: str = "auto", labels: str = "chexpert",
               max_skipped_fraction: float = 0.05, progress: bool = True):
    """Read MIMIC-CXR(-JPG) under ``root``.

    Args:
        root: folder holding the three tables and ``files/``.
        uncertain: -1 labels: ``"ones"`` (U-Ones), ``"zeros"`` or ``"ignore"`` (NaN, masked).
        blank: unmentioned findings: ``"zeros"`` or ``"ignore"``.
        frontal_only: keep ViewPosition PA and AP only.
        views: keep only these ViewPosition values; empty = all (after ``frontal_only``).
        image_format: ``"jpg"`` (MIMIC-CXR-JPG), ``"dcm"`` (MIMIC-CXR) or ``"auto"`` per image.
        labels: ``"chexpert"`` or ``"negbio"`` labeler table.
        max_skipped_fraction: stop when more than this share of images is unreadable.
        progress: show a progress bar while probing images.
    """
    root_p = Path(root)
    lab_path, lab = _table(root_p, labels, ["subject_id", "study_id", *CHEXPERT_FINDINGS])
    _, meta = _table(root_p, "metadata", ["dicom_id", "subject_id", "study_id", "ViewPosition"])
    _, split = _table(root_p, "split", ["dicom_id", "split"])
    findings = labeler_findings(lab, lab_path, LAYOUT, uncertain, blank)
    lab = pd.concat([lab[["subject_id", "study_id"]].reset_index(drop=True), findings], axis=1)
    df = meta.merge(lab.drop_duplicates(["subject_id", "study_id"]), on=["subject_id", "study_id"],
                    how="inner").merge(split[["dicom_id", "split"]], on="dicom_id", how="left")
    if frontal_only:
        df = df[df["ViewPosition"].isin(FRONTAL_VIEWS)]
    if views:
        df = df[df["ViewPosition"].isin(views)]
    if not (root_p / "files").is_dir():
        raise LayoutError(f"{root_p / 'files'}: image folder not found; expected layout: {LAYOUT}")
    images = pd.DataFrame({
        "image_id": df["dicom_id"].astype(str), "patient_id": df["subject_id"].astype(str),
        "path": [_image_path(root_p, s, t, d, image_format)
                 for s, t, d in zip(df["subject_id"], df["study_id"], df["dicom_id"])],
        "label": (df["Pneumonia"] == 1).astype(int), "view": df["ViewPosition"],
        "study_id": df["study_id"].astype(str), "source_split": df["split"],
    }).reset_index(drop=True)
    images = pd.concat([images, df[list(CHEXPERT_FINDINGS)].reset_index(drop=True)], axis=1)
    return finish("mimic", root, images, None, CHEXPERT_FINDINGS, max_skipped_fraction, progress)
