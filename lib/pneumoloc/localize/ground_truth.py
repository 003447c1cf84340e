"""What maps are scored against: the boxes and lung masks of a list of images, at map size.

A leaf of the localization stage (it reads the dataset tables and the lung-mask sources
only), so the run report, notebook 04's tables and notebook 05's ensembles load the ground
truth one way.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from .lung_sources import LungMasks, lung_masks
from .metrics import box_masks, boxes_by_image

__all__ = ["GroundTruth", "ground_truth"]


@dataclass(frozen=True)
class GroundTruth:
    """Everything maps are scored against, row-aligned with ``images``."""

    images: pd.DataFrame  # image_id, patient_id, label, width, height, path, split, ...
    boxes: list  # [k, 4] arrays, original pixels
    box_masks: np.ndarray  # bool [N, M, M]
    lungs: LungMasks

    @property
    def has_box(self) -> np.ndarray:
        return self.box_masks.reshape(len(self.box_masks), -1).any(1)


def ground_truth(tables, image_ids: Sequence[str], size: int, lung_source: str = "auto",
                 **lung_options) -> GroundTruth:
    """Boxes and lung masks of ``image_ids`` at ``size``; ``lung_source="auto"`` uses the dataset's
    masks when it has them, else the (approximate) classical fallback."""
    images = tables.images.set_index("image_id", drop=False).loc[list(map(str, image_ids))].reset_index(drop=True)
    boxes = boxes_by_image(tables.boxes, images["image_id"])
    masks = box_masks(boxes, images["width"], images["height"], size)
    if lung_source == "auto":
        lung_source = "dataset" if tables.has_masks else "classical"
    return GroundTruth(images, boxes, masks, lung_masks(lung_source, images, size, **lung_options))
