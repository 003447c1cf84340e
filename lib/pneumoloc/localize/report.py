"""Scoring every stored map of a run: a long table model x method x metric with patient CIs.

Metrics per image (see :mod:`pneumoloc.localize.metrics` for definitions and exclusions):
``lar``, ``hit``, ``energy``, ``lung_energy`` (lung-normalized), ``auprc``, and for each threshold
rule ``iou@<rule>``, ``dice@<rule>``, ``rsna@<rule>`` (challenge score of the map's connected
-component boxes; boxes are only predicted on images whose probability reaches ``rsna_gate``, as a
detector would, and an image with neither truth nor prediction is excluded). Over images:
``pointwise_map`` (WILDCAT pointwise detection AP). The rule ``tuned`` is a fraction of the
maximum chosen on the validation images of the same maps (skipped when none was stored, or
when every validation image with a box has an all-zero or non-finite map);
``iou_gated@<rule>`` (optional) applies CheXlocalize's probability gating over all images.

Each metric's mean gets a 95% percentile CI resampling patients (:mod:`pneumoloc.evaluate.bootstrap`).
Beside the maps, the table holds chance rows: ``chance/uniform_image`` (the LAR's chance level:
the lung-area fraction), ``chance/uniform_lung`` (box metrics earned by anatomy alone; no LAR row,
1.0 by construction), ``chance/box_prior`` and, for every map, ``variant == "shuffled_boxes"`` (:mod:`pneumoloc.localize.chance`) when the
split holds boxes of at least two patients.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..evaluate.bootstrap import bootstrap_ci
from . import metrics as L
from .boxes import component_boxes
from .chance import BASELINE_METRICS_SKIPPED, BASELINES, box_prior_map, shuffled_box_masks
from .ground_truth import GroundTruth, ground_truth
from .rsna import image_precision
from .tables import paired_comparisons
from .thresholds import binarize, fraction_thresholds, gated_iou, thresholds_for, tune_fraction, tune_gate

__all__ = ["score_maps", "summarize", "pointwise_stat",
           "score_run", "LocalizationReport"]


def _concat(parts: list[L.Scores]) -> L.Scores:
    excluded: dict[str, int] = {}
    for s in parts:
        for k, v in s.excluded.items():
            excluded[k] = excluded.get(k, 0) + v
    return L.Scores(np.concatenate([s.values for s in parts]), np.concatenate([s.valid for s in parts]), excluded)


def score_maps(maps: np.ndarray, gt: GroundTruth, probs: np.ndarray, rules: dict[str, np.ndarray],
               rsna_gate: float = 0.5, tolerance: float = 0.0, detection: bool = True,
               max_boxes: int = 4, chunk: int = 64) -> dict[str, L.Scores]:
    """All per-image metrics of ``maps`` (row-aligned with ``gt``); ``rules`` maps a rule name to
    per-image thresholds. ``probs`` may hold NaN (no predictions): RSNA boxes then use prob 1.
    ``detection=False`` skips the RSNA box metric (e.g. for shuffled boxes); ``max_boxes`` caps
    the predicted boxes per image (largest components; RSNA images hold at most 4). Maps are scored in
    blocks of ``chunk`` images converted to float32 once (cache-sized temporaries). A map holding
    NaN/inf is excluded (``nonfinite_map``) from the per-image metrics and predicts no box."""
    parts = []
    for a in range(0, len(maps), chunk):
        sl = slice(a, a + chunk)
        m16, b, lungs = np.ascontiguousarray(maps[sl]), gt.box_masks[sl], gt.lungs.masks[sl]
        # float32 copies made once per block (contiguous even when lungs are a broadcast view)
        m, bw, lw = (np.ascontiguousarray(x, dtype=np.float32) for x in (m16, b, lungs))
        d = {"lar": L.lung_attention_ratio(m, lw), "hit": L.pointing_game(m, b, tolerance),
             "energy": L.energy_in_boxes(m, bw), "lung_energy": L.lung_normalized_energy(m, bw, lw),
             "auprc": L.localization_auprc(m16, b)}
        for rule, t in rules.items():
            d[f"iou@{rule}"], d[f"dice@{rule}"] = L.iou_dice(m, b, np.asarray(t)[sl])
        parts.append(d)
    out = {k: _concat([p[k] for p in parts]) for k in parts[0]}
    if detection:
        clean = L.finite_maps(maps)[0]  # a NaN/inf map detects nothing, as an all-zero map
        p = np.where(np.isfinite(probs), probs, 1.0)
        w, h = gt.images["width"].to_numpy(float), gt.images["height"].to_numpy(float)
        called = np.flatnonzero(p >= rsna_gate)  # boxes only where the classifier calls pneumonia
        for rule, t in rules.items():
            preds = [np.zeros((0, 5))] * len(maps)
            for i, bx in zip(called, component_boxes(clean[called], np.asarray(t)[called], w[called],
                                                  h[called], p[called], max_boxes=max_boxes)):
                preds[i] = bx
            per = [image_precision(g, pr) for g, pr in zip(gt.boxes, preds)]
            skip = np.array([s is None for s in per])
            out[f"rsna@{rule}"] = L.Scores(np.array([0.0 if s is None else s for s in per]), ~skip,
                                           {"no_truth_no_prediction": int(skip.sum())})
    return out


def pointwise_stat(hit: np.ndarray, detects: np.ndarray, probs: np.ndarray, has_box: np.ndarray) -> float:
    """Pointwise detection AP from per-image arrays (so it can be bootstrapped by patient)."""
    n_pos = has_box.sum()
    if n_pos == 0:
        raise ValueError("no positive image in this resample")
    tp = hit.astype(bool)
    if not tp.any():
        return 0.0
    return L.average_precision(tp[detects], probs[detects]) * tp.sum() / n_pos


def summarize(scores: L.Scores, patients: np.ndarray, n_boot: int, seed: int) -> dict:
    """Mean over valid images with a patient-bootstrap CI and the exclusion counts."""
    row = {"n": scores.n, **{f"excluded_{k}": v for k, v in scores.excluded.items()}}
    if scores.n:
        est = bootstrap_ci(np.mean, scores.values[scores.valid], groups=patients[scores.valid],
                           n_boot=n_boot, seed=seed)
        row.update(value=est.value, low=est.low, high=est.high)
    return row


def _model_probs(run, model: str) -> pd.Series:
    """P(pneumonia) by image id from the model's checked ``predictions.csv``; empty when none is stored."""
    from ..models.outputs import load_predictions

    if not run.model_predictions(model).exists():
        return pd.Series(dtype=float)
    return load_predictions(run, model).drop_duplicates("image_id").set_index("image_id")["prob"]


def _probs(probs: pd.Series, ids: np.ndarray) -> np.ndarray:
    return probs.reindex(ids).to_numpy(float)


@dataclass
class LocalizationReport:
    """``metrics``: long table; ``per_image``: one row per valid (image, metric); ``paired``:
    differences with paired CIs; ``undefined``: metric rows with no valid image (with counts)."""

    metrics: pd.DataFrame
    per_image: pd.DataFrame
    paired: pd.DataFrame
    undefined: pd.DataFrame

    def save(self, folder) -> None:
        """The four tables as ``metrics.csv``, ``per_image.csv``, ``paired.csv``, ``undefined.csv``."""
        from ..storage import save_table

        for name in ("metrics", "per_image", "paired", "undefined"):
            save_table(Path(folder) / f"{name}.csv", getattr(self, name))

    def describe(self) -> str:
        """One line: systems scored, images, lung source (flagged when approximate), undefined rows."""
        m = self.metrics
        systems = m[m.model != "chance"][["model", "method"]].drop_duplicates().shape[0]
        approximate = " (APPROXIMATE classical fallback)" if m.lungs_approximate.any() else ""
        return (f"{systems} model x method scored on {self.per_image.image_id.nunique()} images; lungs from "
                f"{m.lung_source.iloc[0]!r}{approximate}; {len(self.undefined)} metric rows undefined "
                "(no valid image)")


def _rows(model, method, variant, info, scores, gt, probs, n_boot, seed, nonzero=None):
    pats = gt.images["patient_id"].astype(str).to_numpy()
    rows, pi = [], []
    for metric, s in scores.items():
        rows.append({"model": model, "method": method, "variant": variant, **info, "metric": metric,
                     **summarize(s, pats, n_boot, seed)})
        v = s.valid
        pi.append(pd.DataFrame({"model": model, "method": method, "variant": variant, "metric": metric,
                                "image_id": gt.images["image_id"].to_numpy()[v], "patient_id": pats[v],
                                "label": gt.images["label"].to_numpy()[v], "prob": probs[v],
                                "value": s.values[v]}))
    hit = scores["hit"]
    if nonzero is not None and np.isfinite(probs).all() and gt.has_box.any():
        # an all-zero map makes no detection; a positive image without one counts as missed
        arrays = ((hit.valid & (hit.values > 0.5)), nonzero, probs, gt.has_box)
        est = bootstrap_ci(pointwise_stat, *arrays, groups=pats, n_boot=n_boot, seed=seed)
        rows.append({"model": model, "method": method, "variant": variant, **info,
                     "metric": "pointwise_map", "n": len(pats), "value": est.value, "low": est.low,
                     "high": est.high})
    return rows, pi


def score_run(run, split: str = "test", models: Sequence[str] = (), methods: Sequence[str] = (),
              rules: Sequence[str] = ("otsu", "frac0.50"), tune: bool = True, lung_source: str = "auto",
              rsna_gate: float = 0.5, tolerance: float = 0.0, n_boot: int = 200, seed: int = 0,
              baselines: bool = True, gating: bool = False, progress: bool = True,
              **lung_options) -> LocalizationReport:
    """Score every stored map of ``run`` on ``split`` (``models``/``methods`` empty = all).

    ``gating=True`` adds ``iou_gated@<first rule>`` over all images (CheXlocalize): masks of
    images with probability below a gate are emptied, the gate tuned on validation maps when
    stored (else ``rsna_gate``); images without boxes score 1 for an empty mask, 0 otherwise.
    """
    from tqdm.auto import tqdm

    from ..data.tables import load_tables
    from ..explain.stored import load_maps, select_maps

    tables = load_tables(run)
    listing = select_maps(run, models, methods)
    split_of = tables.images.set_index("image_id")["split"]
    rows, per_image, gts, model_probs = [], [], {}, {}
    for model, method in tqdm(listing[["model", "method"]].values.tolist(), desc="scoring maps", disable=not progress):
        ms = load_maps(run, model, method)
        ids = ms.image_ids.astype(str)
        sp = split_of.reindex(ids).to_numpy()
        test = sp == split
        if not test.any():
            continue
        size = ms.map_size
        key = (size, tuple(ids[test]))
        if key not in gts:
            gts[key] = ground_truth(tables, ids[test], size, lung_source, **lung_options)
        gt, stored = gts[key], ms.maps[test]
        # a NaN/inf map is an all-zero map for thresholds, tuning and detection; score_maps gets
        # the stored maps so that its per-image metrics exclude and count it (nonfinite_map)
        maps, finite = L.finite_maps(stored)
        if model not in model_probs:  # one checked read (and checkpoint hash) per model
            model_probs[model] = _model_probs(run, model)
        probs = _probs(model_probs[model], ids[test])
        thr = {r: thresholds_for(r, maps) for r in rules}
        val = sp == "val"
        vmaps = L.finite_maps(ms.maps[val])[0]
        tuned = np.nan
        if tune and val.any():
            vgt = L.box_masks(L.boxes_by_image(tables.boxes, ids[val]),
                              *_sizes(tables, ids[val]), size)
            usable = vgt.reshape(len(vgt), -1).any(1) & (vmaps.reshape(len(vgt), -1).max(1) > 0)
            if usable.any():  # else no "tuned" rule for this model x method (tuned_fraction NaN)
                tuned = tune_fraction(vmaps, vgt)
                thr["tuned"] = fraction_thresholds(maps, tuned)
        info = {"target_layer": ms.meta.get("target_layer", ""), "feature_size": ms.meta.get("feature_size", ""),
                "map_size": size,
                "input_size": ms.meta.get("input_size", np.nan), "tuned_fraction": tuned,
                "lung_source": gt.lungs.source, "lungs_approximate": gt.lungs.approximate}
        nonzero = maps.reshape(len(maps), -1).max(1) > 0
        scores = score_maps(stored, gt, probs, thr, rsna_gate, tolerance)
        if gating and np.isfinite(probs).all():
            first = rules[0]
            gate_t = rsna_gate
            vprobs = _probs(model_probs[model], ids[val])
            if val.any() and np.isfinite(vprobs).all():
                vbox = L.box_masks(L.boxes_by_image(tables.boxes, ids[val]), *_sizes(tables, ids[val]), size)
                gate_t = tune_gate(binarize(vmaps, thresholds_for(first, vmaps)), vbox, vprobs)
            g = gated_iou(binarize(maps, thr[first]), gt.box_masks, probs, gate_t)
            scores[f"iou_gated@{first}"] = L.ratio_scores(g, np.ones(len(g)), {"nonfinite_map": ~finite,
                                                                               "zero_map": ~nonzero})
            info = {**info, "gate": gate_t}
        r, pi = _rows(model, method, "maps", info, scores, gt, probs, n_boot, seed, nonzero)
        rows += r
        per_image += pi
        if _shuffle_defined(gt):
            shuffled = replace(gt, box_masks=shuffled_box_masks(gt.box_masks, gt.images["patient_id"], seed))
            sc = score_maps(stored, shuffled, probs, thr, rsna_gate, tolerance, detection=False)
            sc.pop("lar")  # lungs are not shuffled: LAR is the same as for the real boxes
            rows += _rows(model, method, "shuffled_boxes", info, sc, shuffled, probs, n_boot, seed)[0]
    if baselines:
        rows += _chance_rows(tables, gts, rules, rsna_gate, n_boot, seed)
    metrics = pd.DataFrame(rows)
    excl = [c for c in metrics if c.startswith("excluded_")]
    metrics[excl] = metrics[excl].fillna(0).astype(int)
    undefined = metrics["value"].isna()  # no valid image: listed in ``undefined``, never a NaN row
    per_image = pd.concat(per_image, ignore_index=True) if per_image else pd.DataFrame()
    return LocalizationReport(metrics[~undefined].reset_index(drop=True), per_image,
                              paired_comparisons(per_image, n_boot, seed),
                              metrics[undefined].reset_index(drop=True))


def _shuffle_defined(gt: GroundTruth) -> bool:
    """Shuffled boxes need boxed images from two patients; a dataset without boxes (Kermany,
    CheXpert) or a split with one boxed patient has no such baseline, only LAR and the chance rows."""
    boxed = gt.images["patient_id"].to_numpy()[np.asarray(gt.has_box, bool)]
    return len(set(boxed.astype(str))) >= 2


def _sizes(tables, ids) -> tuple[np.ndarray, np.ndarray]:
    im = tables.images.set_index("image_id").loc[list(ids)]
    return im["width"].to_numpy(float), im["height"].to_numpy(float)


def _chance_rows(tables, gts: dict, rules, rsna_gate, n_boot, seed) -> list[dict]:
    train = tables.images[tables.images["split"] == "train"]
    rows = []
    for (size, _), gt in gts.items():
        try:
            prior = box_prior_map(L.boxes_by_image(tables.boxes, train["image_id"]),
                                  train["width"].to_numpy(float), train["height"].to_numpy(float), size)
        except ValueError:
            prior = None
        for name, build in BASELINES.items():
            if name == "box_prior" and prior is None:
                continue
            maps = np.ascontiguousarray(build(gt.lungs.masks, prior=prior))
            thr = {r: thresholds_for(r, maps) for r in rules}
            ones = np.ones(len(maps))
            info = {"target_layer": "", "feature_size": "", "map_size": size, "input_size": np.nan,
                    "tuned_fraction": np.nan,
                    "lung_source": gt.lungs.source, "lungs_approximate": gt.lungs.approximate}
            scores = score_maps(maps, gt, ones, thr, rsna_gate)
            for metric in BASELINE_METRICS_SKIPPED.get(name, ()):
                scores.pop(metric, None)
            rows += _rows("chance", name, "maps", info, scores, gt, np.full(len(maps), np.nan), n_boot, seed)[0]
    return rows
