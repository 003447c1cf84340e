"""Classical lung fallback: the Otsu/morphology baseline vs the atlas fusion, IoU and Dice.

Prints, side by side in one run, IoU and Dice (mean, median, worst) of both methods
against the phantom's exact lung masks, images/s, and "lesion kept": the share of lung
pixels inside lesion boxes that the mask keeps (opacities are bright; a mask that carves
them out would make LAR count attention on a lesion as outside the lungs). The atlas is rebuilt
without the v7labs masks the evaluated phantom images were drawn from (held out), so the
shape prior never saw the shapes it is scored on. The torchxrayvision zip holds lung
masks only (no radiographs), so there is no real-image check here.

    .venv/bin/python bench/bench_lung_fallback.py [--n-images 60] [--size 256] [--seed 7]
"""
from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
from references import otsu_lung_mask  # bench/references.py (this folder is on sys.path when run)

from pneumoloc.data.images import read_grayscale
from pneumoloc.data.readers import read_dataset
from pneumoloc.localize.lung_atlas import lung_atlas
from pneumoloc.localize.lung_sources import classical_lung_mask
from pneumoloc.localize.metrics import box_masks, boxes_by_image
from pneumoloc.phantom.writer import generate_phantom


def overlap(pred: np.ndarray, truth: np.ndarray, lesion: np.ndarray) -> tuple[float, float, float]:
    """IoU, Dice, and the share of lung pixels inside lesion boxes that ``pred`` keeps (NaN: none)."""
    inter = float((pred & truth).sum())
    sick = truth & lesion
    kept = float((pred & sick).sum()) / sick.sum() if sick.any() else np.nan
    return inter / max(float((pred | truth).sum()), 1.0), 2 * inter / max(float(pred.sum() + truth.sum()), 1.0), kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-images", type=int, default=60, help="phantom images to score")
    ap.add_argument("--size", type=int, default=256, help="phantom image side in pixels")
    ap.add_argument("--seed", type=int, default=7, help="phantom seed")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = generate_phantom(f"{tmp}/ph", n_images=args.n_images, size=args.size, seed=args.seed, workers=1)
        ds = read_dataset("phantom", str(root))
        images = ds.images
        pairs = [(read_grayscale(p), read_grayscale(m) > 0) for p, m in zip(images["path"], images["mask_path"])]
        side = pairs[0][1].shape[0]  # phantom images are square: the map frame is the image
        lesions = list(box_masks(boxes_by_image(ds.boxes, images["image_id"]), images["width"],
                                 images["height"], side))
    held_out = frozenset(images["lung_source"])
    t = time.perf_counter()
    atlas = lung_atlas(held_out)
    print(f"atlas: mean of the v7labs masks minus {len(held_out)} held out, built in {time.perf_counter() - t:.1f} s")
    rows = {}
    for name, fn in (("otsu (before)", otsu_lung_mask), ("atlas fusion (after)", lambda im: classical_lung_mask(im, atlas))):
        t = time.perf_counter()
        scores = np.array([overlap(fn(img), truth, sick) for (img, truth), sick in zip(pairs, lesions)])
        rows[name] = (scores, len(pairs) / (time.perf_counter() - t))
    print(f"{args.n_images} phantom images, {args.size} px, seed {args.seed}")
    print(f"{'method':<22}{'IoU mean':>9}{'median':>8}{'worst':>7}{'Dice mean':>11}{'median':>8}{'worst':>7}{'img/s':>8}{'lesion kept':>13}")
    for name, (s, speed) in rows.items():
        print(f"{name:<22}{s[:, 0].mean():9.3f}{np.median(s[:, 0]):8.3f}{s[:, 0].min():7.3f}"
              f"{s[:, 1].mean():11.3f}{np.median(s[:, 1]):8.3f}{s[:, 1].min():7.3f}{speed:8.1f}{np.nanmean(s[:, 2]):13.3f}")
    (before, v0), (after, v1) = rows.values()
    print(f"ratio after/before: IoU {after[:, 0].mean() / before[:, 0].mean():.2f}x, speed {v1 / v0:.2f}x")


if __name__ == "__main__":
    main()
