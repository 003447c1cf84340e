"""CheXmask decoding on real CSVs: each decoded lung against the polygon of its own landmarks.

CheXmask ships, beside every run-length-coded mask, the HybridGNet landmarks the mask was
drawn from (``Landmarks``: x,y pairs; right lung = points 0-43, left lung = 44-93, as in the
authors' ``how_we_saved_annotations.py``). Filling those polygons is an independent route to
the same masks, so it checks the decoder's conventions on real files: 1-based starts,
row-major order (the transposed polygon must score far lower) and which column is which
lung (the right lung lies on the image's left). Prints, per file, the rows kept and dropped,
IoU (mean, worst) per lung, the IoU against the transposed polygon, and ms per decoded lung.

Any CheXmask CSV works, e.g. the 50-row samples in the authors' repository
(``TechnicalValidation/PhysicianAnnotations/DataSubsets/*.csv``) or the PhysioNet files:

    .venv/bin/python bench/bench_chexmask.py data/chexmask/OriginalResolution/ChestX-Ray8.csv [...] [--rows 200]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from pneumoloc.data.chexmask import read_chexmask


def polygon_mask(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """bool ``[height, width]``: the filled polygon through ``points`` (x, y)."""
    img = Image.new("1", (width, height), 0)
    ImageDraw.Draw(img).polygon([tuple(p) for p in points], fill=1, outline=1)
    return np.asarray(img)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def check_file(path: str, n_rows: int) -> str:
    """One line of results for the first ``n_rows`` rows of ``path`` (every row is kept: min_dice=0)."""
    head = pd.read_csv(path, nrows=n_rows)
    rows = read_chexmask(path, ids=head.iloc[:, 0].astype(str), min_dice=0.0, id_column=str(head.columns[0]))
    landmarks = pd.Series(head["Landmarks"].to_numpy(), index=head.iloc[:, 0].astype(str))
    scores, seconds = [], 0.0
    for key in rows.rows.index:
        h, w = rows.frame(key)
        pts = np.array(str(landmarks[key]).split(","), float).reshape(-1, 2)
        t0 = time.perf_counter()
        right, left = rows.mask(key, ("Right Lung",)), rows.mask(key, ("Left Lung",))
        seconds += time.perf_counter() - t0
        rp, lp = polygon_mask(pts[:44], h, w), polygon_mask(pts[44:94], h, w)
        scores.append((iou(right, rp), iou(left, lp), iou(right, rp.T) if h == w else np.nan,
                       right[:, : w // 2].sum() > right[:, w // 2:].sum()))
    s = np.array(scores, float)
    return (f"{path}: id {rows.id_column!r}, kept {len(s)}, dropped {rows.dropped}; IoU with the landmark polygon: "
            f"right {s[:, 0].mean():.3f} (worst {s[:, 0].min():.3f}), left {s[:, 1].mean():.3f} "
            f"(worst {s[:, 1].min():.3f}); transposed polygon {np.nanmean(s[:, 2]):.2f}; right lung on the "
            f"image's left in {s[:, 3].mean():.0%}; {1e3 * seconds / max(2 * len(s), 1):.1f} ms per lung")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", nargs="+", help="CheXmask CSV files")
    ap.add_argument("--rows", type=int, default=200, help="rows checked per file (from the top)")
    args = ap.parse_args()
    for path in args.csv:
        print(check_file(path, args.rows))


if __name__ == "__main__":
    main()
