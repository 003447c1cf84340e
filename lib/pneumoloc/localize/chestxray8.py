"""The ChestX-ray8 box protocol: heatmap boxes scored by IoU and IoBB, accuracy per finding.

Wang et al., "ChestX-ray8: Hospital-scale Chest X-ray Database and Benchmarks on
Weakly-Supervised Classification and Localization of Common Thorax Diseases", CVPR 2017
(arXiv 1705.02315 v5 adds the supplement and the ChestX-ray14 appendix). The paper's words:

* section 3, "Bounding Box Generation": the heatmap intensities "are first normalized to
  [0, 255] and then thresholded by {60, 180} individually. Finally, B-Boxes are generated to
  cover the isolated regions in the resulting binary maps" (the supplement calls it "a simple
  two-level thresholding based bounding box generator", about 1-3 boxes per heatmap);
* section 4, "Disease Localization": IoU, or IoBB, "the Intersection over the detected B-Box
  area ratio"; "we define a correct localization by requiring either IoU > T(IoU) or
  IoBB > T(IoBB)"; Table 4 gives the accuracy (Acc.) per disease at T(IoBB) in {0.1, 0.25,
  0.5, 0.75, 0.9}, supplement Table 7 at T(IoU) in {0.1, ..., 0.7}.

What is implemented, step by step:

1. Each map is min-max normalised to [0, 255]: ``s = 255 (m - min) / (max - min)``. A constant
   map (all-zero included) and a map holding NaN or inf give no box.
2. For each level L in (60, 180) the binary map is ``s > L`` (strict; the paper says
   "thresholded by"), and every 8-connected component (the paper does not name the
   connectivity; 8 as in :mod:`pneumoloc.localize.boxes`) gives one box, its bounding
   rectangle of map cells rescaled to original pixels (``x * width / M``). The boxes of both
   levels are pooled: a 180-component lies inside a 60-component, and both are candidates.
3. A ground-truth box G of a finding is correctly localized at T when some generated box B
   of the same image has ``IoU(B, G) > T`` (resp. ``IoBB = |B n G| / |B| > T``: the
   generated box's area is the denominator), strict as in the paper; areas are continuous
   (``x, y, w, h`` in pixels).
4. ``Acc@T`` = correctly localized ground-truth boxes / ground-truth boxes of the finding,
   over the scored images that hold boxes of that finding, each scored with the map of that
   finding. The paper's accuracies are such box counts: BBox_List_2017.csv holds 120
   Pneumonia and 146 Cardiomegaly boxes, and Table 4 reads 0.3833 = 46/120 (Pneumonia,
   IoBB 0.5) and 0.9931 = 145/146 (Cardiomegaly, IoBB 0.1).

Not implemented: the paper's average false positives (AFP), and any gating of boxes by the
classifier's probability (every box image is scored, as the paper's denominators show).
Each accuracy gets a 95% patient-bootstrap CI (:mod:`pneumoloc.evaluate.bootstrap`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..evaluate.bootstrap import bootstrap_ci
from .arrays import as_maps
from .boxes import component_boxes
from .metrics import boxes_by_image, finite_maps
from .tables import format_table

__all__ = ["LEVELS", "THRESHOLDS", "PUBLISHED", "heatmap_boxes", "box_overlaps", "best_overlaps",
           "localized", "accuracy", "metric_names", "ChestXray8Report", "chestxray8_report", "chestxray8_table",
           "published_lines"]

LEVELS = (60, 180)  # thresholds on the [0, 255] heatmap (Wang et al. 2017, section 3)
THRESHOLDS = (0.1, 0.25, 0.5, 0.75)  # T(IoU) and T(IoBB) reported here
_MEASURES = {"iou": "IoU", "iobb": "IoBB"}
_SOURCE_X8 = "Wang et al. 2017, ChestX-ray8 (CVPR, Table 4)"
_SOURCE_X8_IOU = "Wang et al. 2017, ChestX-ray8 (arXiv 1705.02315 v5, supplement Table 7)"
_SOURCE_X14 = "Wang et al. 2017, ChestX-ray14 (arXiv 1705.02315 v5, appendix Table 19)"
# Pneumonia accuracy of the paper's heatmap boxes (120 ground-truth boxes). The IoU table
# reports T(IoU) = 0.1, 0.2, ..., 0.7 (not 0.25 or 0.75); the ChestX-ray14 appendix IoBB only.
PUBLISHED = pd.DataFrame(
    [(_SOURCE_X8, "Pneumonia", "iobb", t, v) for t, v in
     ((0.1, 0.7500), (0.25, 0.5583), (0.5, 0.3833), (0.75, 0.2583), (0.9, 0.2416))]
    + [(_SOURCE_X8_IOU, "Pneumonia", "iou", t, v) for t, v in
       ((0.1, 0.6333), (0.2, 0.3500), (0.3, 0.1666), (0.4, 0.0750), (0.5, 0.0333), (0.6, 0.0166),
        (0.7, 0.0083))]
    + [(_SOURCE_X14, "Pneumonia", "iobb", t, v) for t, v in
       ((0.1, 0.8583), (0.25, 0.7083), (0.5, 0.4833), (0.75, 0.2917), (0.9, 0.2333))],
    columns=["source", "finding", "measure", "threshold", "accuracy"])


def heatmap_boxes(maps, widths: Sequence[float] | None = None, heights: Sequence[float] | None = None,
                  levels: Sequence[float] = LEVELS) -> list[np.ndarray]:
    """The paper's boxes (steps 1-2 of the module docstring): ``[k, 4]`` ``x, y, w, h`` per map.

    Args:
        maps: ``[N, M, M]`` heatmaps (any range: each is min-max normalised to [0, 255] here).
        widths, heights: original image sizes; boxes in original pixels (map cells when omitted).
        levels: thresholds on the [0, 255] scale; a cell is in when its value exceeds the level.

    Returns:
        Per map, the boxes of every level, level by level, each level's in raster order of
        the components' first cells.
    """
    m = finite_maps(as_maps(maps))[0].astype(np.float32)
    n = len(m)
    flat = m.reshape(n, -1)
    lo, hi = flat.min(1), flat.max(1)
    spread = hi - lo
    scale = np.divide(np.float32(255), spread, out=np.zeros_like(spread), where=spread > 0)
    s = (m - lo[:, None, None]) * scale[:, None, None]  # a constant map stays 0: no cell exceeds a level
    per_level = [component_boxes(s, float(level), widths, heights) for level in levels]
    return [np.concatenate([boxes[i][:, :4] for boxes in per_level]) if per_level else np.zeros((0, 4))
            for i in range(n)]


def _overlaps(gt: np.ndarray, det: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IoU and IoBB of boxes ``x, y, w, h`` (last axis), broadcast over the leading axes;
    IoBB divides by the detected box's area. Zero where a denominator is zero."""
    iw = np.minimum(gt[..., 0] + gt[..., 2], det[..., 0] + det[..., 2]) - np.maximum(gt[..., 0], det[..., 0])
    ih = np.minimum(gt[..., 1] + gt[..., 3], det[..., 1] + det[..., 3]) - np.maximum(gt[..., 1], det[..., 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    det_area = det[..., 2] * det[..., 3]
    union = gt[..., 2] * gt[..., 3] + det_area - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    iobb = np.divide(inter, det_area, out=np.zeros_like(inter), where=det_area > 0)
    return iou, iobb


def box_overlaps(gt, detected) -> tuple[np.ndarray, np.ndarray]:
    """IoU and IoBB matrices ``[len(gt), len(detected)]`` of one image's boxes ``x, y, w, h``."""
    g = np.asarray(gt, float).reshape(-1, 4)
    d = np.asarray(detected, float).reshape(-1, 4)
    return _overlaps(g[:, None], d[None])


def _rows4(boxes) -> np.ndarray:
    """``[k, 4]`` float rows from ``[k, >=4]`` boxes (an empty input gives ``[0, 4]``)."""
    b = np.asarray(boxes, float)
    return b.reshape(-1, b.shape[-1])[:, :4] if b.size else np.zeros((0, 4))


def best_overlaps(gt_boxes: Sequence[np.ndarray],
                  detected: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per ground-truth box, the best IoU and the best IoBB over its image's detected boxes.

    Args:
        gt_boxes: per image, ``[g, 4]`` ground-truth boxes.
        detected: per image (row-aligned), ``[k, >=4]`` detected boxes (first four columns used).

    Returns:
        ``(image, iou, iobb)`` over the ground-truth boxes concatenated in image order:
        the image index of each box and its best overlaps (0 when its image has no detection).
    """
    if len(gt_boxes) != len(detected):
        raise ValueError(f"{len(gt_boxes)} ground-truth entries vs {len(detected)} detection entries")
    gt = [np.asarray(g, float).reshape(-1, 4) for g in gt_boxes]
    det = [_rows4(d) for d in detected]
    image = np.repeat(np.arange(len(gt)), [len(g) for g in gt])
    g_all = np.concatenate(gt) if gt else np.zeros((0, 4))
    d_all = np.concatenate(det) if det else np.zeros((0, 4))
    counts = np.array([len(d) for d in det], np.int64)
    starts = np.cumsum(counts) - counts
    per_gt = counts[image]  # every (ground-truth box, detection of the same image) pair
    gi = np.repeat(np.arange(len(g_all)), per_gt)
    within = np.arange(per_gt.sum()) - np.repeat(np.cumsum(per_gt) - per_gt, per_gt)
    di = np.repeat(starts[image], per_gt) + within
    iou, iobb = _overlaps(g_all[gi], d_all[di])
    best_iou, best_iobb = np.zeros(len(g_all)), np.zeros(len(g_all))
    np.maximum.at(best_iou, gi, iou)
    np.maximum.at(best_iobb, gi, iobb)
    return image, best_iou, best_iobb


def localized(best: np.ndarray, thresholds: Sequence[float] = THRESHOLDS) -> np.ndarray:
    """bool ``[G, T]``: ground-truth box correctly localized at each T (best overlap > T,
    strict, as the paper)."""
    return np.asarray(best, float)[:, None] > np.asarray(thresholds, float)[None]


def accuracy(best: np.ndarray, thresholds: Sequence[float] = THRESHOLDS) -> np.ndarray:
    """Share of ground-truth boxes correctly localized at each T (:func:`localized`)."""
    if np.size(best) == 0:
        raise ValueError("no ground-truth box: accuracy undefined")
    return localized(best, thresholds).mean(0)


def metric_names(thresholds: Sequence[float] = THRESHOLDS) -> list[str]:
    """Column names of the accuracies: ``acc_iou@T`` then ``acc_iobb@T``."""
    return [f"acc_{k}@{t:g}" for k in ("iou", "iobb") for t in thresholds]


@dataclass
class ChestXray8Report:
    """``metrics``: long table finding x model x method x metric (value, 95% CI, n boxes);
    ``per_box``: one row per scored ground-truth box with its best IoU and IoBB;
    ``dataset``: the reader's name; ``findings``: findings with scored boxes."""

    metrics: pd.DataFrame
    per_box: pd.DataFrame
    dataset: str
    findings: list

    def save(self, folder) -> None:
        """``chestxray8.csv`` and ``chestxray8_boxes.csv`` in ``folder``."""
        from ..storage import save_table

        save_table(Path(folder) / "chestxray8.csv", self.metrics)
        save_table(Path(folder) / "chestxray8_boxes.csv", self.per_box)

    def context_lines(self) -> list[str]:
        """What was scored (boxes and images per finding, the most any map set scored), then
        the published figures of the findings scored (NIH only)."""
        if self.per_box.empty:
            return ["ChestX-ray8 protocol: no ground-truth box among the scored images"]
        systems = self.per_box.groupby(["finding", "model", "method"])["image_id"]
        n = pd.DataFrame({"boxes": systems.size(), "images": systems.nunique()}).groupby("finding").max()
        head = "; ".join(f"{f}: {r.boxes} boxes on {r.images} images" for f, r in n.iterrows())
        return [f"ChestX-ray8 protocol (levels {LEVELS} of 255, correct when > T): {head}",
                *published_lines(self.dataset, self.findings)]


def published_lines(dataset: str, findings: Sequence[str] = ("Pneumonia",)) -> list[str]:
    """Context lines with :data:`PUBLISHED`'s accuracies for ``findings``; only for NIH
    ChestX-ray14 (``dataset == "nih"``), whose boxes the published figures were measured on."""
    if dataset != "nih":
        return []
    lines = []
    for (source, finding, measure), g in PUBLISHED.groupby(["source", "finding", "measure"], sort=False):
        if finding in findings:
            cells = ", ".join(f"@{t:g} {v:.4f}" for t, v in zip(g["threshold"], g["accuracy"]))
            lines.append(f"published, {source}: {finding} Acc {_MEASURES[measure]}{cells}")
    return lines


def _finding_of(method: str, findings: set[str], label_finding: str) -> str:
    """``<method>@<finding>`` maps explain that finding; any other map explains the label."""
    suffix = method.rpartition("@")[2] if "@" in method else ""
    return suffix if suffix in findings else label_finding


def _system_rows(ms, tables, ids: np.ndarray, finding: str, thresholds, n_boot: int,
                 seed: int) -> tuple[list[dict], pd.DataFrame]:
    """Metric rows and per-box rows of one stored map set against ``finding``'s boxes."""
    boxes = tables.boxes
    if "finding" in boxes:
        boxes = boxes[boxes["finding"] == finding]
    gt = boxes_by_image(boxes, ids)
    has = np.array([len(g) > 0 for g in gt], bool)
    if not has.any():
        return [], pd.DataFrame()
    images = tables.images.set_index("image_id").loc[list(ids[has])]
    w, h = images["width"].to_numpy(float), images["height"].to_numpy(float)
    image, iou, iobb = best_overlaps([gt[i] for i in np.flatnonzero(has)],
                                     heatmap_boxes(ms.take(ids[has]), w, h))
    patients = images["patient_id"].astype(str).to_numpy()[image]
    per_box = pd.DataFrame({"finding": finding, "image_id": ids[has][image], "patient_id": patients,
                            "iou": iou, "iobb": iobb})
    info = {"finding": finding, "variant": "maps", "target_layer": ms.meta.get("target_layer", ""),
            "feature_size": ms.meta.get("feature_size", ""), "map_size": ms.map_size}
    hits = np.hstack([localized(iou, thresholds), localized(iobb, thresholds)]).astype(float)
    rows = []
    for name, hit in zip(metric_names(thresholds), hits.T):
        est = bootstrap_ci(np.mean, hit, groups=patients, n_boot=n_boot, seed=seed)
        rows.append({**info, "metric": name, "n": len(hit), "value": est.value, "low": est.low,
                     "high": est.high})
    return rows, per_box


def chestxray8_report(run, split: str = "test", models: Sequence[str] = (), methods: Sequence[str] = (),
                      label_finding: str = "Pneumonia", thresholds: Sequence[float] = THRESHOLDS,
                      n_boot: int = 200, seed: int = 0, progress: bool = True) -> ChestXray8Report:
    """Score every stored map of ``run`` on ``split`` with the ChestX-ray8 protocol.

    Args:
        run: the run's :class:`pneumoloc.environment.RunPaths`.
        split: images scored (those holding boxes of the map's finding).
        models, methods: stored maps to score (empty = all).
        label_finding: the finding the binary label names, explained by maps whose method is
            not ``<method>@<finding>``; boxes without a ``finding`` column all belong to it.
        thresholds: T(IoU) and T(IoBB).
        n_boot, seed: patient bootstrap of each accuracy.
        progress: show a progress bar over the map sets.
    """
    from tqdm.auto import tqdm

    from ..data.tables import load_tables
    from ..explain.stored import list_maps, load_maps

    tables = load_tables(run)
    known = set(tables.findings) | (set(tables.boxes["finding"]) if "finding" in tables.boxes else set())
    listing = list_maps(run)
    keep = np.ones(len(listing), bool)
    if models:
        keep &= listing["model"].isin(models).to_numpy()
    if methods:
        keep &= listing["method"].isin(methods).to_numpy()
    listing = listing[keep]
    split_ids = set(tables.images.loc[tables.images["split"] == split, "image_id"].astype(str))
    rows, per_box = [], []
    for model, method in tqdm(listing[["model", "method"]].values.tolist(), desc="ChestX-ray8 protocol",
                              disable=not progress):
        ms = load_maps(run, model, method)
        ids = np.array([i for i in ms.image_ids.astype(str) if i in split_ids], dtype=object)
        r, pb = _system_rows(ms, tables, ids, _finding_of(method, known, label_finding), thresholds,
                             n_boot, seed)
        rows += [{"model": model, "method": method, **x} for x in r]
        if len(pb):
            per_box.append(pb.assign(model=model, method=method))
    metrics = pd.DataFrame(rows, columns=["model", "method", "finding", "variant", "target_layer",
                                          "feature_size", "map_size", "metric", "n", "value", "low", "high"])
    boxes = pd.concat(per_box, ignore_index=True) if per_box else pd.DataFrame(
        columns=["finding", "image_id", "patient_id", "iou", "iobb", "model", "method"])
    return ChestXray8Report(metrics, boxes, tables.name, sorted(metrics["finding"].unique()))


def chestxray8_table(metrics: pd.DataFrame, thresholds: Sequence[float] = THRESHOLDS) -> pd.DataFrame:
    """Wide table: one row per finding x model x method, ``value [low, high]`` per accuracy
    (:func:`pneumoloc.localize.tables.format_table` within each finding)."""
    parts = [format_table(g, metric_names(thresholds)).assign(finding=f)
             for f, g in metrics.groupby("finding", sort=True)]
    if not parts:
        return pd.DataFrame()
    wide = pd.concat(parts, ignore_index=True)
    return wide[["finding", *[c for c in wide.columns if c != "finding"]]]
