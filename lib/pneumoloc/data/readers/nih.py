"""NIH ChestX-ray14 (Wang et al., CVPR 2017), the Kaggle/Box layout.

Layout::

    Data_Entry_2017.csv  or  Data_Entry_2017_v2020.csv   (one row per image)
        Image Index, Finding Labels (``A|B`` or ``No Finding``), Follow-up #,
        Patient ID, Patient Age, Patient Gender, View Position, ...
    BBox_List_2017.csv     Image Index, Finding Label, Bbox [x,y,w,h]  (984 boxes, 8 findings)
    train_val_list.txt, test_list.txt     the official patient-wise split (optional)
    images_001/images/*.png ... images_012/images/*.png   (or images/*.png), 1024 x 1024

Patients come from ``Patient ID`` (up to 184 images per patient: an image-level
split leaks heavily, see :mod:`pneumoloc.data.xrv_assets`). The binary label is
Pneumonia; the 14 findings are float columns (1/0, no uncertainty in NIH labels).
Boxes are in the 1024-pixel PNG frame; the boxes table keeps each box's ``finding``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .base import LayoutError, finish, read_csv, reader

__all__ = ["read_nih", "NIH_FINDINGS", "LAYOUT"]

NIH_FINDINGS = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)
LAYOUT = ("Data_Entry_2017.csv or Data_Entry_2017_v2020.csv (Image Index, Finding Labels, Patient ID, "
          "Patient Age, Patient Gender, View Position), BBox_List_2017.csv, images*/images/*.png")
ENTRY_CSVS = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
COLUMNS = ("Image Index", "Finding Labels", "Patient ID", "Patient Age", "Patient Gender", "View Position")


def _entry(root: Path, entry_csv: str) -> tuple[Path, pd.DataFrame]:
    names = (entry_csv,) if entry_csv else ENTRY_CSVS
    for name in names:
        if (root / name).is_file():
            path = root / name
            return path, read_csv(path, COLUMNS, LAYOUT, dtype={"Patient ID": str})
    raise LayoutError(f"{root}: none of {list(names)} found; expected layout: {LAYOUT}")


def _findings(path: Path, labels: pd.Series) -> pd.DataFrame:
    split = labels.fillna("").str.split("|")
    allowed = set(NIH_FINDINGS) | {"No Finding"}
    for i, names in enumerate(split):
        bad = [n for n in names if n not in allowed]
        if bad:
            raise LayoutError(f"{path}: line {i + 2}, column 'Finding Labels': {bad} not in "
                              f"{sorted(allowed)}; expected layout: {LAYOUT}")
    return pd.DataFrame({f: split.map(lambda n, f=f: float(f in n)).to_numpy() for f in NIH_FINDINGS})


def _image_paths(root: Path) -> dict[str, str]:
    found = {}
    for pattern in ("images*/images/*.png", "images/*.png"):
        for p in root.glob(pattern):
            found.setdefault(p.name, str(p.resolve()))
    return found


def _boxes(root: Path, bbox_csv: str, box_findings: tuple) -> pd.DataFrame:
    path = root / bbox_csv
    empty = pd.DataFrame(columns=["image_id", "x", "y", "w", "h"])
    if not path.is_file():
        return empty
    # header "Image Index,Finding Label,Bbox [x,y,w,h],,," splits the box over 4 columns
    df = read_csv(path, ["Image Index", "Finding Label"], LAYOUT)
    if df.shape[1] < 6:
        raise LayoutError(f"{path}: expected Image Index, Finding Label and 4 box columns; got "
                          f"{list(df.columns)}")
    out = pd.DataFrame({"image_id": df["Image Index"], "finding": df["Finding Label"],
                        **{c: df.iloc[:, 2 + k].astype(float) for k, c in enumerate("xywh")}})
    if box_findings:
        out = out[out["finding"].isin(box_findings)]
    return out[["image_id", "x", "y", "w", "h", "finding"]].reset_index(drop=True)


def _official(root: Path, ids: pd.Series) -> np.ndarray:
    split = pd.Series(pd.NA, index=ids.index, dtype=object)
    for name, value in (("train_val_list.txt", "trainval"), ("test_list.txt", "test")):
        path = root / name
        if not path.is_file():
            raise LayoutError(f"{path} not found (needed by official_split=True); expected layout: {LAYOUT}")
        split[ids.isin(set(path.read_text().split()))] = value
    return split.to_numpy()


@reader("nih")
def read_nih(root: str, entry_csv: str = "", bbox_csv: str = "BBox_List_2017.csv",
             box_findings: tuple = ("Pneumonia",), views: tuple = (), official_split: bool = False,
             max_skipped_fraction: float = 0.05, progress: bool = True):
    """Read NIH ChestX-ray14 under ``root``.

    Args:
        root: folder holding the CSVs and the ``images*`` folders.
        entry_csv: the image table; empty = ``Data_Entry_2017_v2020.csv`` else ``Data_Entry_2017.csv``.
        bbox_csv: the box table (optional file).
        box_findings: findings whose boxes go into the boxes table; empty = all 8.
        views: keep only these ``View Position`` values (``("PA",)``, ``("AP",)``); empty = all.
        official_split: add column ``official_split`` (trainval / test) from the two list files.
        max_skipped_fraction: stop when more than this share of images is unreadable; a
            partial download (some ``images_0NN`` folders) counts missing files as skipped.
        progress: show a progress bar while probing images.
    """
    root_p = Path(root)
    path, df = _entry(root_p, entry_csv)
    if views:
        df = df[df["View Position"].isin(views)].reset_index(drop=True)
    found = _image_paths(root_p)
    if not found:
        raise LayoutError(f"{root_p}: no PNG under images*/images/ or images/; expected layout: {LAYOUT}")
    findings = _findings(path, df["Finding Labels"])
    age = pd.to_numeric(df["Patient Age"].astype(str).str.extract(r"(\d+)")[0], errors="coerce")
    images = pd.DataFrame({
        "image_id": df["Image Index"].astype(str), "patient_id": df["Patient ID"].astype(str),
        "path": [found.get(n, str(root_p / "images" / n)) for n in df["Image Index"]],
        "label": findings["Pneumonia"].astype(int), "view": df["View Position"],
        "sex": df["Patient Gender"], "age": age, "follow_up": df.get("Follow-up #"),
    })
    if official_split:
        images["official_split"] = _official(root_p, images["image_id"])
    images = pd.concat([images, findings], axis=1)
    boxes = _boxes(root_p, bbox_csv, box_findings)
    return finish("nih", root, images, boxes, NIH_FINDINGS, max_skipped_fraction, progress)
