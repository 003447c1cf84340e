"""Patient-wise, stratified, seeded splits and the validator that proves them.

Several images of one patient are nearly the same picture; if they land in both
train and test, test accuracy measures memory, not generalization (Shahi & Bagale
re-split Kermany patient-wise for this reason). Every split in pneumoloc assigns
*patients*, and :func:`validate_split` is run on every load of a split.

Stratification: a patient's stratum is the maximum of ``stratify`` over their
images (a patient with any pneumonia image is a pneumonia patient). Within each
stratum, patients are shuffled with the seed and cut by the ratios using the
largest-remainder rule, so each split holds the same class mix up to one patient
per stratum. Ratios are over patients, not images.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

__all__ = [
    "SPLITS", "LeakageError", "patient_split", "validate_split", "image_level_split",
    "image_level_leakage", "split_summary",
]

SPLITS = ("train", "val", "test")


class LeakageError(ValueError):
    """A patient appears in more than one split."""


def _check_ratios(ratios: Sequence[float]) -> np.ndarray:
    r = np.asarray(ratios, dtype=float)
    if r.shape != (3,) or (r < 0).any() or not np.isclose(r.sum(), 1.0):
        raise ValueError(f"ratios must be three non-negative numbers summing to 1 (train, val, test); got {ratios}")
    return r


def _cut(n: int, ratios: np.ndarray) -> np.ndarray:
    """Split ``n`` items into three counts proportional to ``ratios`` (largest remainder)."""
    exact = ratios * n
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    return counts


def patient_split(images: pd.DataFrame, ratios: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 0,
                  stratify: str | None = "label") -> pd.Series:
    """Assign every image to train/val/test so that no patient crosses splits.

    Args:
        images: table with ``patient_id`` (and ``stratify`` when given).
        ratios: shares of patients for train, val, test.
        seed: same seed and same table -> same split.
        stratify: column whose per-patient maximum defines the strata; None for none.

    Returns:
        A Series named ``split`` aligned with ``images.index``.
    """
    r = _check_ratios(ratios)
    if "patient_id" not in images:
        raise ValueError("images table has no patient_id column; a patient-wise split needs one")
    patients = images.groupby("patient_id", sort=True)
    strata = patients[stratify].max() if stratify else pd.Series(0, index=patients.size().index)
    rng = np.random.default_rng(seed)
    assignment: dict = {}
    for _, members in strata.groupby(strata, sort=True):
        ids = members.index.to_numpy().copy()
        rng.shuffle(ids)
        bounds = np.cumsum(_cut(len(ids), r))
        for name, chunk in zip(SPLITS, np.split(ids, bounds[:2])):
            assignment.update(dict.fromkeys(chunk.tolist(), name))
    return images["patient_id"].map(assignment).rename("split")


def validate_split(images: pd.DataFrame, split_col: str = "split", source: str = "images table",
                   fix: str = "split by patient with patient_split()") -> None:
    """Raise :class:`LeakageError` naming the patients found in more than one split.

    Also rejects a table without a split column, images without a split and split names
    outside train/val/test.

    Args:
        images: table with ``image_id``, ``patient_id`` and ``split_col``.
        split_col: the column holding the split names.
        source: what the table is (a file path), opening every message.
        fix: what the user should do, closing every message.
    """
    if split_col not in images:
        raise ValueError(f"{source} has no {split_col!r} column; {fix}")
    bad = images.loc[~images[split_col].isin(SPLITS), "image_id"]
    if len(bad):
        raise ValueError(f"{source}: {len(bad)} images have no valid split (expected {SPLITS}), "
                         f"e.g. {bad.iloc[:5].tolist()}; {fix}")
    per_patient = images.groupby("patient_id")[split_col].nunique()
    leaking = per_patient[per_patient > 1].index.tolist()
    if leaking:
        detail = images[images["patient_id"].isin(leaking[:5])].groupby("patient_id")[split_col].unique()
        shown = "; ".join(f"{p}: {sorted(s)}" for p, s in detail.items())
        raise LeakageError(f"{source}: {len(leaking)} patients appear in more than one split ({shown}"
                           f"{' ...' if len(leaking) > 5 else ''}); {fix}")


def image_level_split(images: pd.DataFrame, ratios: Sequence[float] = (0.7, 0.15, 0.15),
                      seed: int = 0) -> pd.Series:
    """The naive split that ignores patients (for showing the leakage it causes only)."""
    r = _check_ratios(ratios)
    order = np.random.default_rng(seed).permutation(len(images))
    labels = np.empty(len(images), dtype=object)
    for name, chunk in zip(SPLITS, np.split(order, np.cumsum(_cut(len(images), r))[:2])):
        labels[chunk] = name
    return pd.Series(labels, index=images.index, name="split")


def image_level_leakage(images: pd.DataFrame, split: pd.Series) -> float:
    """Share of test images whose patient also has an image in train."""
    train_patients = set(images.loc[split == "train", "patient_id"])
    test = images.loc[split == "test", "patient_id"]
    return float(test.isin(train_patients).mean()) if len(test) else 0.0


def split_summary(images: pd.DataFrame, split_col: str = "split") -> pd.DataFrame:
    """Images, patients and positive share per split (rows) — the audit's first table."""
    g = images.groupby(split_col)
    out = pd.DataFrame({
        "images": g.size(),
        "patients": g["patient_id"].nunique(),
        "pneumonia_images": g["label"].sum().astype(int),
    })
    out["pneumonia_share"] = out["pneumonia_images"] / out["images"]
    return out.reindex([s for s in SPLITS if s in out.index])
