"""RSNA Pneumonia Detection Challenge (Shih et al., Radiology: AI 2019; Kaggle stage 2).

Layout::

    stage_2_train_labels.csv          patientId,x,y,width,height,Target  (one row per box;
                                      one row with empty box for Target 0)
    stage_2_detailed_class_info.csv   patientId,class  (Lung Opacity | Normal |
                                      No Lung Opacity / Not Normal)
    stage_2_train_images/<patientId>.dcm   1024 x 1024 DICOM (MONOCHROME2, 8-bit)

RSNA ``patientId`` names one image (one radiograph per patient), so it is both
``image_id`` and ``patient_id``. Boxes are in the 1024-pixel image frame. The third
class, "No Lung Opacity / Not Normal" (abnormal but not pneumonia-like), is handled
by ``not_normal``: ``"drop"`` (default; Normal vs Lung Opacity, as the WILDCAT study
did), ``"negative"`` (kept with label 0) or ``"keep"`` (label 0 plus a ``not_normal``
finding column so a multi-label model can learn it).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from . import listing
from .base import LayoutError, check_values, finish, read_csv, reader

__all__ = ["read_rsna", "LAYOUT", "CLASSES"]

LAYOUT = ("stage_2_train_labels.csv (patientId,x,y,width,height,Target), "
          "stage_2_detailed_class_info.csv (patientId,class), stage_2_train_images/<patientId>.dcm")
CLASSES = ("Lung Opacity", "Normal", "No Lung Opacity / Not Normal")
NOT_NORMAL = CLASSES[2]


def _labels(root: Path, labels_csv: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    path = root / labels_csv
    df = read_csv(path, ["patientId", "x", "y", "width", "height", "Target"], LAYOUT)
    check_values(df, "Target", [0, 1], path, LAYOUT)
    has_box = df[["x", "y", "width", "height"]].notna().all(axis=1)
    bad = (df["Target"] == 1) != has_box
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise LayoutError(f"{path}: line {i + 2}: Target={df['Target'].iloc[i]} but box "
                          f"{'present' if has_box.iloc[i] else 'missing'}; Target 1 rows carry a box, "
                          f"Target 0 rows none; expected layout: {LAYOUT}")
    boxes = df[has_box].rename(columns={"patientId": "image_id", "width": "w", "height": "h"})
    per_image = df.groupby("patientId", sort=True)["Target"].max().rename("label").reset_index()
    return per_image, boxes[["image_id", "x", "y", "w", "h"]]


def _classes(root: Path, class_csv: str, ids: pd.Series) -> pd.Series:
    path = root / class_csv
    df = read_csv(path, ["patientId", "class"], LAYOUT)
    check_values(df, "class", CLASSES, path, LAYOUT)
    cls = df.drop_duplicates("patientId").set_index("patientId")["class"]
    missing = ids[~ids.isin(cls.index)]
    if len(missing):
        raise LayoutError(f"{path}: no class row for patientId {missing.iloc[0]!r} "
                          f"({len(missing)} images); expected layout: {LAYOUT}")
    return cls.reindex(ids).to_numpy()


def _dicom_tags(paths: pd.Series) -> pd.DataFrame:
    """View, sex, age from each DICOM header (unreadable -> missing; the probe skips them)."""
    import pydicom

    rows = []
    for p in paths:
        try:
            with warnings.catch_warnings():  # real RSNA headers store PatientAge as '51', not AS '051Y'
                warnings.simplefilter("ignore", UserWarning)
                ds = pydicom.dcmread(p, stop_before_pixels=True, force=True,
                                     specific_tags=["ViewPosition", "PatientSex", "PatientAge"])
            age = str(ds.get("PatientAge", "")).rstrip("Yy").lstrip("0")
            rows.append((str(ds.get("ViewPosition", "")) or None, str(ds.get("PatientSex", "")) or None,
                         float(age) if age.isdigit() else np.nan))
        except Exception:  # noqa: BLE001 - any header problem: the probe reports the file
            rows.append((None, None, np.nan))
    return pd.DataFrame(rows, columns=["view", "sex", "age"])


@reader("rsna", not_normal=("drop", "negative", "keep"))
def read_rsna(root: str, not_normal: str = "drop", views: tuple = (),
              labels_csv: str = "stage_2_train_labels.csv",
              class_csv: str = "stage_2_detailed_class_info.csv",
              images_dir: str = "stage_2_train_images", max_skipped_fraction: float = 0.05,
              progress: bool = True):
    """Read the RSNA challenge folder ``root``.

    Args:
        root: folder holding the CSVs and the image folder.
        not_normal: "No Lung Opacity / Not Normal" images: ``"drop"``, ``"negative"`` or ``"keep"``.
        views: keep only these DICOM ViewPosition values (e.g. ``("PA",)``); empty = all.
        labels_csv, class_csv, images_dir: file names inside ``root`` (stage 2 by default).
        max_skipped_fraction: stop when more than this share of images is unreadable.
        progress: show a progress bar while probing images.

    Returns:
        DatasetTables with columns ``class``, ``view``, ``sex``, ``age``; boxes from the
        labels CSV; with ``not_normal="keep"`` findings ``lung_opacity`` and ``not_normal``.
    """
    root_p = Path(root)
    images, boxes = _labels(root_p, labels_csv)
    images["class"] = _classes(root_p, class_csv, images["patientId"])
    wrong = images[(images["class"] == "Lung Opacity") != (images["label"] == 1)]
    if len(wrong):
        raise LayoutError(f"{root_p / class_csv}: patientId {wrong['patientId'].iloc[0]!r} has class "
                          f"{wrong['class'].iloc[0]!r} but Target {wrong['label'].iloc[0]} in {labels_csv}")
    if not_normal == "drop":
        images = images[images["class"] != NOT_NORMAL]
    images = images.rename(columns={"patientId": "image_id"}).reset_index(drop=True)
    images["patient_id"] = images["image_id"]
    img_dir = root_p / images_dir
    if not img_dir.is_dir():
        raise LayoutError(f"{img_dir}: image folder not found; expected layout: {LAYOUT}")
    images["path"] = [str((img_dir / f"{i}.dcm").resolve()) for i in images["image_id"]]
    if listing() and not views:  # listing opens no file; the tags are needed only to filter views
        tags = pd.DataFrame({"view": None, "sex": None, "age": np.nan}, index=images.index)
    else:
        tags = _dicom_tags(images["path"])
    images = pd.concat([images, tags], axis=1)
    if views:
        images = images[images["view"].isin(views)].reset_index(drop=True)
    findings: list[str] = []
    if not_normal == "keep":
        images["lung_opacity"] = images["label"].astype(float)
        images["not_normal"] = (images["class"] == NOT_NORMAL).astype(float)
        findings = ["lung_opacity", "not_normal"]
    cols = ["image_id", "patient_id", "path", "label", "class", "view", "sex", "age", *findings]
    return finish("rsna", root, images[cols], boxes, findings, max_skipped_fraction, progress)
