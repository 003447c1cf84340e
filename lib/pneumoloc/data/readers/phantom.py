"""Reader for the generated phantom dataset (:mod:`pneumoloc.phantom.writer`).

Layout (written by ``pneumoloc phantom --out DIR``)::

    DIR/images.csv    image_id, patient_id, path, label, width, height, mask_path, view,
                      sex, age, n_opacities, lung_source (paths relative to DIR)
    DIR/boxes.csv     image_id, x, y, w, h (pixels)
    DIR/markers.csv   only with a burned-in marker: image_id, x, y, w, h of the marker letter;
                      images.csv then also has marker (0/1) and marker_split
    DIR/images/*.png  8-bit grayscale radiographs
    DIR/masks/*.png   exact lung masks (255 = lung)
    DIR/phantom.json  config, counts, provenance; written last (marks the dataset complete)
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...storage import load_json
from ..tables import DatasetTables
from . import register_reader

__all__ = ["read"]


def _missing(root: Path, what: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"phantom dataset {root}: {what}. Generate it with `pneumoloc phantom --out {root}` "
        f"(or pneumoloc.phantom.writer.generate_phantom({str(root)!r}))")


@register_reader("phantom")
def read(root: str, progress: bool = True, **options) -> DatasetTables:
    """Read a phantom folder into the shared tables (absolute ``path`` and ``mask_path``).

    Images or masks whose file is missing are skipped and counted in ``skipped``. ``progress``
    is accepted as every reader takes it; the phantom's tables are read without opening an
    image, so there is no progress to show.

    Raises:
        FileNotFoundError: the folder, its ``images.csv`` or ``phantom.json`` is missing
            (the message says how to generate it).
        TypeError: an option was passed (the phantom reader takes none).
    """
    if options:
        raise TypeError(f"the phantom reader takes no options, got {sorted(options)}; "
                        f"phantom parameters belong to `pneumoloc phantom` (generation)")
    root_p = Path(root).resolve()
    if not root_p.is_dir():
        raise _missing(root_p, "folder does not exist")
    if not (root_p / "images.csv").exists():
        raise _missing(root_p, "images.csv is missing")
    if not (root_p / "phantom.json").exists():
        raise _missing(root_p, "phantom.json is missing (generation did not finish)")
    meta = load_json(root_p / "phantom.json")
    images = pd.read_csv(root_p / "images.csv", dtype={"image_id": str, "patient_id": str})
    boxes = pd.read_csv(root_p / "boxes.csv", dtype={"image_id": str})
    for col in ("path", "mask_path"):
        images[col] = [str(root_p / p) for p in images[col]]
    exists = images["path"].map(lambda p: Path(p).exists()) & images["mask_path"].map(
        lambda p: Path(p).exists())
    skipped = pd.DataFrame({"path": images.loc[~exists, "path"],
                            "reason": "image or lung mask file missing"}).reset_index(drop=True)
    images = images[exists].reset_index(drop=True)
    boxes = boxes[boxes["image_id"].isin(images["image_id"])].reset_index(drop=True)
    return DatasetTables(images=images, boxes=boxes, name="phantom", root=str(root_p),
                         findings=[], options={"config": meta.get("config", {}),
                                               "fingerprint": meta.get("fingerprint")},
                         skipped=skipped)
