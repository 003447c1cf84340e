"""The one table format every dataset reader produces (docs/design.md, data flow 1).

``images`` — one row per image:

=============  ==========================================================
column         meaning
=============  ==========================================================
image_id       unique string id of the image
patient_id     string id of the patient (splits group on it)
path           absolute path of the image file
label          1 = pneumonia / positive, 0 = negative (binary task; int)
width, height  original size in pixels (int)
view           optional: PA, AP, LATERAL, ...
sex, age       optional demographics
mask_path      optional: absolute path of a lung mask (PNG, same size, lungs > 0)
<finding>      optional multi-label columns named in ``findings``: 1.0, 0.0, or NaN
               (NaN = masked in the loss, after the reader's uncertainty policy)
=============  ==========================================================

``boxes`` — one row per box, ``image_id, x, y, w, h`` in original pixels (x, y =
top-left corner), optionally ``finding`` (the box's label, NIH). Images without boxes have no rows.

``split`` is added by :mod:`pneumoloc.data.splits` and saved with the run; :func:`load_tables`
re-validates the schema and the split on every load, so a split file edited or mixed up after
notebook 01 (a patient in two splits leaks test images into training) stops every later notebook.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..storage import load_json, load_table, save_json, save_table
from .splits import validate_split

__all__ = [
    "IMAGE_COLUMNS", "BOX_COLUMNS", "DatasetTables", "validate_tables", "save_tables", "load_tables",
]

IMAGE_COLUMNS = ("image_id", "patient_id", "path", "label", "width", "height")
BOX_COLUMNS = ("image_id", "x", "y", "w", "h")


@dataclass
class DatasetTables:
    """What a reader returns: the images table, the boxes table and a description.

    Attributes:
        images: one row per image (see module docstring).
        boxes: one row per box.
        name: reader name (``"phantom"``, ``"kermany"``, ...).
        root: dataset folder the reader was pointed at.
        findings: names of multi-label columns (empty for a binary-only dataset).
        options: the reader options used (stored with the run).
        skipped: images the reader could not use: ``path, reason`` rows.
    """

    images: pd.DataFrame
    boxes: pd.DataFrame
    name: str
    root: str
    findings: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    skipped: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["path", "reason"]))

    def __post_init__(self) -> None:
        validate_tables(self.images, self.boxes, self.findings, source=f"reader {self.name!r}")

    @property
    def has_masks(self) -> bool:
        return "mask_path" in self.images and self.images["mask_path"].notna().any()

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "root": self.root, "findings": list(self.findings),
                "options": self.options, "n_images": int(len(self.images)),
                "n_boxes": int(len(self.boxes)), "n_skipped": int(len(self.skipped))}


def validate_tables(images: pd.DataFrame, boxes: pd.DataFrame, findings: list[str] | tuple = (),
                    source: str = "dataset") -> None:
    """Raise ``ValueError`` naming the problem when the tables break the schema."""
    missing = [c for c in (*IMAGE_COLUMNS, *findings) if c not in images.columns]
    if missing:
        raise ValueError(f"{source}: images table lacks columns {missing}; expected {list(IMAGE_COLUMNS)}")
    missing = [c for c in BOX_COLUMNS if c not in boxes.columns]
    if missing:
        raise ValueError(f"{source}: boxes table lacks columns {missing}; expected {list(BOX_COLUMNS)}")
    dup = images["image_id"][images["image_id"].duplicated()]
    if len(dup):
        raise ValueError(f"{source}: duplicate image_id values, e.g. {dup.iloc[:5].tolist()}")
    bad = images.loc[~images["label"].isin([0, 1]), "image_id"]
    if len(bad):
        raise ValueError(f"{source}: label must be 0 or 1; images {bad.iloc[:5].tolist()} are not")
    unknown = set(boxes["image_id"]) - set(images["image_id"])
    if unknown:
        raise ValueError(f"{source}: boxes reference unknown images, e.g. {sorted(unknown)[:5]}")
    if len(boxes) and ((boxes["w"] <= 0) | (boxes["h"] <= 0)).any():
        raise ValueError(f"{source}: boxes with non-positive width or height")
    for f in findings:
        vals = images[f].dropna().unique()
        if not np.isin(vals, [0.0, 1.0]).all():
            raise ValueError(f"{source}: finding {f!r} has values {sorted(vals)}; expected 0, 1 or NaN")


def save_tables(run, tables: DatasetTables, images: pd.DataFrame | None = None) -> None:
    """Store the tables in a run (``images`` overrides ``tables.images``, e.g. with ``split``)."""
    save_table(run.images_table, tables.images if images is None else images)
    save_table(run.boxes_table, tables.boxes)
    save_table(run.data / "skipped.csv", tables.skipped)
    save_json(run.dataset_info, tables.info())


def load_tables(run) -> DatasetTables:
    """Read the tables a run's notebook 01 stored (``images`` includes ``split``).

    Raises:
        ValueError: a table breaks the schema, or an image has no valid split.
        LeakageError: a patient appears in more than one split (names a few and the count).
    """
    info = load_json(run.dataset_info)
    images = load_table(run.images_table, dtype={"image_id": str, "patient_id": str})
    boxes = load_table(run.boxes_table, dtype={"image_id": str})
    skipped_path = Path(run.data / "skipped.csv")
    skipped = load_table(skipped_path) if skipped_path.exists() else pd.DataFrame(columns=["path", "reason"])
    tables = DatasetTables(images=images, boxes=boxes, name=info["name"], root=info["root"],
                           findings=info.get("findings", []), options=info.get("options", {}),
                           skipped=skipped)  # validates the schema first
    validate_split(images, source=str(run.images_table),
                   fix="rerun notebook 01_data_audit_and_patient_split to write a patient-wise split")
    return tables
