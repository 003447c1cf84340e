"""The tables and lung masks that ship inside ``torchxrayvision``, and audits of them.

The package's ``data`` folder is found without importing it (``import torchxrayvision``
pulls in torch) by :func:`torchxrayvision_data`; every file is read here, once per process:

* NIH ChestX-ray14 (``Data_Entry_2017_v2020.csv.gz``): how many test images an
  image-level 70/15/15 split leaks (their patient also has images in train; patients
  have up to 184 images) against the patient-wise split of :mod:`pneumoloc.data.splits`,
  which must leak none.
* RSNA Pneumonia (``kaggle_stage_2_train_labels.csv.zip``, :data:`RSNA_LABELS`): box count,
  boxes per image, box size and position statistics; the phantom places its lesions at
  these boxes (:mod:`pneumoloc.phantom.lesions`).
* The v7labs lung masks (``semantic_masks_v7labs_lungs.zip``, :data:`LUNG_ZIP`; PNG, 0/255,
  up to 3000 px): :func:`load_lung_mask` crops one to its lungs, or rejects it as degenerate;
  the phantom draws its lungs from them and the lung atlas averages them.
"""
from __future__ import annotations

import importlib.util
import io
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

__all__ = ["torchxrayvision_data", "xrv_data_file", "RSNA_LABELS", "LUNG_ZIP", "load_nih_table",
           "load_rsna_labels", "load_rsna_headers", "split_leakage", "nih_leakage_audit", "rsna_box_stats",
           "compare_with_reference", "REFERENCE_CHECKS", "lung_mask_names", "load_lung_mask"]

RSNA_LABELS = "kaggle_stage_2_train_labels.csv.zip"
LUNG_ZIP = "semantic_masks_v7labs_lungs.zip"
_CROP_MAX = 384  # cached lung crops are stored at most this big (enough for 256-384 px phantoms)


def torchxrayvision_data() -> Path:
    """The ``data`` folder of the installed torchxrayvision, found without importing it (torch)."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "torchxrayvision is not installed; the phantom needs its shipped lung masks and RSNA "
            "boxes: pip install torchxrayvision (it is in pyproject.toml)")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def xrv_data_file(name: str) -> Path:
    """Path of ``torchxrayvision/data/<name>``; error naming the package when absent."""
    path = torchxrayvision_data() / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: this torchxrayvision version does not ship {name}")
    return path


@lru_cache(maxsize=8)
def _read(path: str, str_column: str | None = None, index_col: int | None = None) -> pd.DataFrame:
    """Parse a shipped table once per process (callers get copies: the cache stays pristine)."""
    return pd.read_csv(path, dtype={str_column: str} if str_column else None, index_col=index_col)


def load_nih_table(path: str | Path | None = None) -> pd.DataFrame:
    """The real NIH ChestX-ray14 image table (one row per image, ``Patient ID`` as str)."""
    return _read(str(path or xrv_data_file("Data_Entry_2017_v2020.csv.gz")), "Patient ID").copy()


def load_rsna_labels(path: str | Path | None = None) -> pd.DataFrame:
    """The real RSNA ``stage_2_train_labels.csv`` (one row per box; empty box for Target 0)."""
    return _read(str(path or xrv_data_file(RSNA_LABELS))).copy()


def load_rsna_headers(path: str | Path | None = None) -> pd.DataFrame:
    """DICOM header fields (PatientID, ViewPosition, PatientSex, PatientAge) of the RSNA images."""
    return _read(str(path or xrv_data_file("kaggle_stage_2_train_images_dicom_headers.csv.gz")), index_col=0).copy()


def split_leakage(patients: pd.Series, split: pd.Series) -> pd.DataFrame:
    """Per evaluation split (val, test): images and patients that also appear in train.

    Returns a table indexed by split with ``n_images``, ``n_patients``,
    ``leaked_images`` (images whose patient has a train image), ``leaked_patients``
    and ``leaked_image_share``.
    """
    df = pd.DataFrame({"patient": np.asarray(patients), "split": np.asarray(split)})
    train = set(df.loc[df["split"] == "train", "patient"])
    rows = {}
    for s in ("val", "test"):
        part = df[df["split"] == s]
        leaked = part["patient"].isin(train)
        rows[s] = {"n_images": len(part), "n_patients": part["patient"].nunique(),
                   "leaked_images": int(leaked.sum()), "leaked_patients": part.loc[leaked, "patient"].nunique(),
                   "leaked_image_share": float(leaked.mean()) if len(part) else 0.0}
    return pd.DataFrame.from_dict(rows, orient="index")


def nih_leakage_audit(table: pd.DataFrame | None = None, ratios=(0.7, 0.15, 0.15), seed: int = 0) -> pd.DataFrame:
    """Leakage of an image-level vs the patient-wise split on the NIH table.

    Rows ``(scheme, split)`` with scheme ``image-level`` or ``patient-wise``; the
    patient split comes from :func:`pneumoloc.data.splits.patient_split` (stratified on
    Pneumonia) and must show zero leaked images.
    """
    from .splits import image_level_split, patient_split

    table = load_nih_table() if table is None else table
    images = pd.DataFrame({"image_id": table["Image Index"].astype(str),
                           "patient_id": table["Patient ID"].astype(str),
                           "label": table["Finding Labels"].str.contains("Pneumonia").astype(int)})
    naive = split_leakage(images["patient_id"], image_level_split(images, ratios, seed))
    wise = split_leakage(images["patient_id"], patient_split(images, ratios=ratios, seed=seed))
    return pd.concat({"image-level": naive, "patient-wise": wise}, names=["scheme", "split"])


def rsna_box_stats(labels: pd.DataFrame | None = None, image_size: int = 1024) -> dict:
    """Counts and box geometry of the RSNA labels table.

    Returns a dict with ``n_rows``, ``n_images``, ``n_positive_images``, ``n_boxes``,
    ``boxes_per_positive_image`` (value counts: 1, 2, 3, 4 boxes), and ``boxes``: a
    DataFrame of the boxes with derived ``cx, cy`` (centre), ``area`` and ``side``
    (``"left"``/``"right"`` half of the image, as displayed), plus ``geometry``:
    ``describe()`` of width, height, area, centre.
    """
    labels = load_rsna_labels() if labels is None else labels
    boxes = labels[labels["Target"] == 1].rename(columns={"width": "w", "height": "h"}).copy()
    boxes["cx"], boxes["cy"] = boxes["x"] + boxes["w"] / 2, boxes["y"] + boxes["h"] / 2
    boxes["area"] = boxes["w"] * boxes["h"]
    boxes["side"] = np.where(boxes["cx"] < image_size / 2, "left", "right")
    per_image = boxes.groupby("patientId").size()
    return {
        "n_rows": len(labels), "n_images": labels["patientId"].nunique(),
        "n_positive_images": int(per_image.size), "n_boxes": len(boxes),
        "boxes_per_positive_image": per_image.value_counts().sort_index(),
        "boxes": boxes[["patientId", "x", "y", "w", "h", "cx", "cy", "area", "side"]].reset_index(drop=True),
        "geometry": boxes[["w", "h", "area", "cx", "cy"]].describe(),
    }


def _nih_reference(tables) -> list[tuple]:
    ref = load_nih_table().set_index("Image Index")
    img = tables.images.set_index("image_id")
    known = img.index.isin(ref.index)
    ref = ref.loc[img.index[known]]
    pneu = ref["Finding Labels"].str.contains("Pneumonia").astype(int)
    return [("images found in the real table", int(known.sum()), len(img)),
            ("patients", img.loc[known, "patient_id"].nunique(), ref["Patient ID"].nunique()),
            ("patient_id mismatches", int((img.loc[known, "patient_id"] != ref["Patient ID"]).sum()), 0),
            ("pneumonia images", int(img.loc[known, "label"].sum()), int(pneu.sum()))]


def _rsna_reference(tables) -> list[tuple]:
    ref = load_rsna_labels()
    ref = ref[ref["patientId"].isin(tables.images["image_id"])]
    return [("images found in the real table", ref["patientId"].nunique(), len(tables.images)),
            ("boxes", len(tables.boxes), int((ref["Target"] == 1).sum())),
            ("positive images", int(tables.images["label"].sum()), ref.loc[ref["Target"] == 1, "patientId"].nunique())]


# reader name -> reference check; datasets without a shipped table are not listed
REFERENCE_CHECKS = {"nih": _nih_reference, "rsna": _rsna_reference}


def compare_with_reference(tables) -> pd.DataFrame:
    """Check a reader's counts against the real table shipped with torchxrayvision.

    Returns rows ``check, reader, reference, ok`` (empty for datasets without a
    shipped table). Counts are over the reader's images that the real table lists.
    """
    fn = REFERENCE_CHECKS.get(tables.name)
    rows = fn(tables) if fn else []
    df = pd.DataFrame(rows, columns=["check", "reader", "reference"])
    df["ok"] = df["reader"] == df["reference"]
    return df


@lru_cache(maxsize=1)
def _lung_zip() -> zipfile.ZipFile:
    """The v7labs zip, opened once per process (its directory is read on opening)."""
    return zipfile.ZipFile(xrv_data_file(LUNG_ZIP))


@lru_cache(maxsize=1)
def lung_mask_names() -> tuple[str, ...]:
    """Names of the mask files inside the v7labs zip, sorted (fixed order -> reproducible)."""
    return tuple(sorted(n for n in _lung_zip().namelist() if not n.endswith("/")))


def _is_degenerate(mask: np.ndarray) -> bool:
    """Empty masks, single lungs, fragments and implausible shapes are not usable lung fields.

    Judged on a ~256-px subsample so the verdict does not depend on the phantom size.
    82 of the 517 v7labs masks are empty (their images were CT slices or unlabeled).
    """
    if mask.sum() < 200:
        return True
    lab, n = ndi.label(mask)
    sizes = np.sort(np.bincount(lab.ravel())[1:])[::-1]
    if n < 2 or sizes[1] < 0.15 * sizes[0]:  # need two lungs of comparable size
        return True
    ys, xs = np.nonzero(mask)
    h, w = np.ptp(ys) + 1, np.ptp(xs) + 1
    return not (0.8 <= w / h <= 1.7 and 0.35 <= mask.sum() / (h * w))


@lru_cache(maxsize=None)
def load_lung_mask(name: str) -> np.ndarray | None:
    """The lungs of one v7labs mask cropped to their bounding box (bool), or None if degenerate.

    Masks (PNG, 0/255, up to 3000 px) are subsampled to at most ~``_CROP_MAX`` px; only
    the two largest connected components (the lungs) are kept, specks are dropped.
    Cached per process: a mask is decoded from the zip once.
    """
    from PIL import Image

    full = np.asarray(Image.open(io.BytesIO(_lung_zip().read(name))).convert("L")) > 127
    if _is_degenerate(full[::-(-max(full.shape) // 256), ::-(-max(full.shape) // 256)]):
        return None
    step = max(1, -(-max(full.shape) // _CROP_MAX))
    mask = full[::step, ::step]
    lab, _ = ndi.label(mask)
    keep = np.argsort(np.bincount(lab.ravel())[1:])[::-1][:2] + 1
    mask = np.isin(lab, keep)
    ys, xs = np.nonzero(mask)
    return np.ascontiguousarray(mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1])
