"""What notebook 04 shows from a scored run: wide tables, paired comparisons, the failure review.

:func:`paired_comparisons` gives mean differences with paired patient-bootstrap CIs (backbone
vs backbone for a method, method vs method for a backbone, e.g. ``gradcam`` vs
``gradcam@layer3``); :func:`format_table` the ``value [low, high]`` table with target layer,
native feature size and map size beside every number; :func:`worst_localized` and
:func:`failure_inputs` the WILDCAT study's failure review; :func:`classifier_auc` the
classifier's ROC-AUC to set localization against; :func:`with_recipes` the ``recipe`` and
``undertrained`` columns every cross-backbone table carries; :func:`best_localizer` the best model x
method by a metric, chosen only among the models the recipe rule allows
(:func:`pneumoloc.training.recipe.selection_pool`), set against the highest chance line.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..evaluate.bootstrap import paired_bootstrap
from ..training.recipe import selection_pool

__all__ = ["paired_comparisons", "paired_subset", "depth_variants", "format_table", "with_recipes",
           "best_localizer", "worst_localized", "classifier_auc", "failure_inputs"]


def paired_comparisons(per_image: pd.DataFrame, n_boot: int = 200, seed: int = 0) -> pd.DataFrame:
    """Mean difference a - b with a paired patient-bootstrap CI on the images valid for both:
    every backbone pair for the same method, and every method pair for the same backbone."""
    if per_image.empty:
        return pd.DataFrame()
    df = per_image[per_image["variant"] == "maps"]
    systems = df[["model", "method"]].drop_duplicates().values.tolist()
    pairs = [(a, b) for i, a in enumerate(systems) for b in systems[i + 1:]
             if (a[0] == b[0]) != (a[1] == b[1])]
    rows = []
    for metric, dm in df.groupby("metric"):
        by = {k: (pd.Index(g["image_id"]), g["value"].to_numpy(), g["patient_id"].astype(str).to_numpy())
              for k, g in dm.groupby(["model", "method"])}
        for a, b in pairs:
            if tuple(a) not in by or tuple(b) not in by:
                continue
            (ids_a, va, pa), (ids_b, vb, _) = by[tuple(a)], by[tuple(b)]
            in_b = ids_b.get_indexer(ids_a)  # a's images in a's order, and where b holds them
            common = np.flatnonzero(in_b >= 0)
            if len(common) < 2:
                continue
            est = paired_bootstrap(np.mean, [va[common]], [vb[in_b[common]]], groups=pa[common], n_boot=n_boot,
                                   seed=seed)
            rows.append({"metric": metric, "comparison": "backbone" if a[1] == b[1] else "method",
                         "model_a": a[0], "method_a": a[1], "model_b": b[0], "method_b": b[1], "n": len(common),
                         "diff": est.value, "low": est.low, "high": est.high})
    return pd.DataFrame(rows)


def paired_subset(paired: pd.DataFrame, metrics: Sequence[str], model: str | None = None,
                  methods: Sequence[str] | None = None) -> pd.DataFrame:
    """Rows of :func:`paired_comparisons` for ``metrics``, optionally of one model against itself
    across ``methods`` (e.g. its CAM depths), with ``excludes_0``: the CI excludes zero."""
    if paired.empty:
        return paired
    keep = paired.metric.isin(list(metrics))
    if model is not None:
        keep &= (paired.model_a == model) & (paired.model_b == model)
    if methods is not None:
        keep &= paired.method_a.isin(list(methods)) & paired.method_b.isin(list(methods))
    out = paired[keep].copy()
    out["excludes_0"] = (out.low > 0) | (out.high < 0)
    return out


def depth_variants(metrics: pd.DataFrame, model: str, method: str) -> pd.DataFrame:
    """Metric rows of ``model``'s maps by ``method`` at its default layer and at every stored
    layer variant ``<method>@<label>`` (notebook 03's ``layer_variants``)."""
    m = metrics
    same = (m.method == method) | m.method.str.startswith(f"{method}@")
    return m[(m.model == model) & (m.variant == "maps") & same]


def format_table(metrics: pd.DataFrame, names: Sequence[str], variant: str = "maps") -> pd.DataFrame:
    """Wide table: one row per model x method (with target layer, its native feature size and
    the stored map size beside every number), one column per metric holding ``value [low, high]``
    ("–" where the row has no such metric)."""
    df = metrics[(metrics["variant"] == variant) & metrics["metric"].isin(names)].copy()
    df["cell"] = [f"{v:.3f} [{lo:.3f}, {hi:.3f}]" for v, lo, hi in zip(df["value"], df["low"], df["high"])]
    keys = ["model", "method", "target_layer", "feature_size", "map_size"]
    df["feature_size"] = df.get("feature_size", pd.Series("", index=df.index)).fillna("")
    wide = df.pivot_table(index=keys, columns="metric", values="cell", aggfunc="first")
    # a metric a row does not define (e.g. no LAR for a chance map that knows the lungs) prints as "–"
    return wide[[n for n in names if n in wide.columns]].fillna("–").reset_index()


def with_recipes(table: pd.DataFrame, recipes: pd.DataFrame) -> pd.DataFrame:
    """``table`` (with a ``model`` column) with ``recipe`` and ``undertrained`` inserted after it,
    from :func:`pneumoloc.training.recipe.model_recipes`; chance rows get the recipe "chance"."""
    out = table.copy()
    known = out["model"].isin(recipes.index)
    recipe = out["model"].map(recipes["recipe"]).where(known, "chance")
    under = out["model"].map(recipes["undertrained"]).where(known, False).astype(bool)
    at = list(out.columns).index("model") + 1
    out.insert(at, "recipe", recipe)
    out.insert(at + 1, "undertrained", np.where(under, "yes", ""))
    return out


def best_localizer(metrics: pd.DataFrame, recipes: pd.DataFrame, metric: str = "hit",
                   compare_recipes: bool = False) -> str:
    """One sentence: the best model x method by ``metric`` (higher is better) with its CI, among
    the models :func:`~pneumoloc.training.recipe.selection_pool` allows, against the highest chance
    line for that metric (model ``chance`` and the same maps on shuffled boxes): whether its CI lies
    above, overlaps or lies below that line's CI. When the models split evenly between recipes the
    sentence says that no best is named (and how to compare recipes) instead of raising."""
    m = metrics[metrics["metric"] == metric]
    maps = m[(m["variant"] == "maps") & m["model"].isin(recipes.index)]
    if maps.empty:
        return f"no model x method has a defined {metric}"
    try:
        pick = selection_pool(recipes.loc[list(dict.fromkeys(maps["model"]))], compare_recipes)
    except ValueError as tie:  # recipes tied: no best is named, the table still stands
        return f"no best model x method by {metric}: {tie}"
    best = maps[maps["model"].isin(pick.pool)].sort_values("value", ascending=False, kind="stable").iloc[0]
    chance = m[(m["model"] == "chance") | ((m["variant"] == "shuffled_boxes") & (m["model"] == best.model)
                                           & (m["method"] == best.method))]
    head = (f"{'best' if pick.claim else 'highest (no best-model claim)'} model x method by {metric}: "
            f"{best.model} {best.method} {best.value:.3f} [{best.low:.3f}, {best.high:.3f}]")
    if chance.empty:
        return f"{head}; no chance line for {metric}"
    line = chance.sort_values("value", ascending=False, kind="stable").iloc[0]
    name = f"{line.method} chance" if line.model == "chance" else "the same maps on shuffled boxes"
    verdict = ("its CI lies above" if best.low > line.high else "its CI lies below" if best.high < line.low
               else "its CI overlaps")
    return (f"{head}; {verdict} the highest chance line, {name} {line.value:.3f} [{line.low:.3f}, {line.high:.3f}]"
            f" ({pick.message})")


def worst_localized(per_image: pd.DataFrame, metric: str = "energy", n: int = 8,
                    prob_threshold: float = 0.5) -> pd.DataFrame:
    """The true positives (label 1, prob >= threshold) with the lowest ``metric`` per model x
    method: the WILDCAT study's failure review (where does the attention go instead?)."""
    df = per_image[(per_image["variant"] == "maps") & (per_image["metric"] == metric)
                   & (per_image["label"] == 1) & (per_image["prob"] >= prob_threshold)]
    return (df.sort_values("value").groupby(["model", "method"], sort=False).head(n)
            .sort_values(["model", "method", "value"]).reset_index(drop=True))


def classifier_auc(run, model: str, split: str = "test") -> float:
    """Test ROC-AUC of ``model``: from ``metrics.json`` (``operating_points.*.roc_auc``, the
    training notebook's format), else computed from ``predictions.csv``; NaN when neither exists.
    Either file is refused when made by another checkpoint than the model's ``best.pt``."""
    from ..evaluate.classification import roc_auc
    from ..models.outputs import load_metrics, load_predictions

    if run.model_metrics(model).exists():
        ops = load_metrics(run, model).get("operating_points", {})
        for point in ops.values():
            if "roc_auc" in point:
                return float(point["roc_auc"])
    if not run.model_predictions(model).exists():
        return float("nan")
    pred = load_predictions(run, model)
    pred = pred[pred["split"] == split]
    return roc_auc(pred["label"], pred["prob"]) if pred["label"].nunique() == 2 else float("nan")


def failure_inputs(run, rows: pd.DataFrame, image_size: int = 256, lung_source: str = "auto",
                   **lung_options) -> tuple[list, list, list, list]:
    """Images (squashed to ``image_size``), maps, box masks and lung masks of ``rows`` (from
    :func:`worst_localized`), as row-aligned lists for :func:`pneumoloc.plots.localization.failure_gallery`."""
    from ..data.cache import resize_square
    from ..data.tables import load_tables
    from .ground_truth import ground_truth
    from ..data.images import read_grayscale
    from ..explain.stored import load_maps

    tables = load_tables(run)
    paths = tables.images.set_index("image_id")["path"]
    per_system = {}
    for (model, method), g in rows.groupby(["model", "method"], sort=False):
        ms = load_maps(run, model, method)
        ids = g["image_id"].astype(str).tolist()
        per_system[model, method] = (ms, ids, ground_truth(tables, ids, ms.map_size, lung_source, **lung_options))
    images, maps, boxes, lungs = [], [], [], []
    for r in rows.itertuples():  # in the order of ``rows``
        ms, ids, gt = per_system[r.model, r.method]
        k = ids.index(str(r.image_id))
        images.append(resize_square(read_grayscale(paths[str(r.image_id)]), image_size))
        maps.append(ms.maps[ms.row(str(r.image_id))])
        boxes.append(gt.box_masks[k])
        lungs.append(gt.lungs.masks[k])
    return images, maps, boxes, lungs
