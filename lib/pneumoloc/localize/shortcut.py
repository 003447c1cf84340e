"""Notebook 06: does the map reveal a known shortcut?

The phantom is drawn twice from one seed: with a burned-in laterality marker
(:mod:`pneumoloc.phantom.markers`; in train/val it marks most pneumonia images and few
normal ones, in test it is independent of the label) and without it. Both phantoms hold
the same patients, labels, lesions and pixels except inside the marker boxes, and both
are split by the same :func:`pneumoloc.data.splits.patient_split` call the marker rates
were drawn for. The same backbone is trained with the same recipe on each (variant
``shortcut`` and ``clean``), each in a sub-run of its own under ``<run>/shortcut/`` so the
library's run layout (tables, models, maps) serves both unchanged.

What is measured, each with a patient-bootstrap CI (:mod:`pneumoloc.evaluate.bootstrap`):

* **The ROC-AUC drop**: validation AUC (the marker predicts the label) and test AUC (it
  does not) of both models; the test drop is the paired difference clean - shortcut on the
  same test images (Zech et al. 2018 and DeGrave et al. 2021 saw exactly this: high internal,
  lower external performance).
* **Marker reliance** (ground truth for "the model uses the shortcut"): on marked test
  images, P(pneumonia) of the image minus P(pneumonia) of the same image without its marker
  (the clean phantom's pixels), per model. A model that ignores the marker scores ~0.
* **Where the map looks**: the share of map energy inside the marker box and inside the
  lesion boxes (:func:`pneumoloc.localize.metrics.energy_in_boxes`) and the pointing game on
  each (:func:`pneumoloc.localize.metrics.pointing_game`). The clean model, shown the same
  images, is the control: energy it puts in the marker box is what a model that never
  learned the marker puts there. The map *reveals* the shortcut when the shortcut model's
  marker-box energy exceeds the control's (paired difference, CI above 0).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..environment import RunPaths
from ..evaluate.bootstrap import Estimate, bootstrap_ci, paired_bootstrap
from ..evaluate.classification import roc_auc
from .metrics import box_masks, boxes_by_image, energy_in_boxes, pointing_game

__all__ = ["VARIANTS", "ShortcutStudy", "study_paths", "prepare_study", "marker_rates_table", "marked_test_ids",
           "train_variants", "cross_predictions", "stored_name", "variant_maps", "score_variants", "study_sanity",
           "shortcut_scores", "marker_reliance", "shortcut_summary", "reveals_shortcut", "sanity_flags",
           "faithfulness_sentence", "conclusion_markdown"]

VARIANTS = ("shortcut", "clean")  # trained on the marked phantom; on the same phantom without the marker


@dataclass(frozen=True)
class ShortcutStudy:
    """Where the study lives inside a run.

    Attributes:
        root: ``<run>/shortcut``; the study's own tables are written here.
        runs: variant -> its sub-run (tables, models, maps in the usual layout).
        phantoms: variant -> its phantom folder.
    """

    root: Path
    runs: dict[str, RunPaths]
    phantoms: dict[str, Path]


def study_paths(run: RunPaths) -> ShortcutStudy:
    """The study's folders in ``run`` (nothing is created)."""
    root = run.root / "shortcut"
    return ShortcutStudy(root=root, runs={v: RunPaths(root / v, run.figures) for v in VARIANTS},
                         phantoms={v: root / "data" / f"phantom_{v}" for v in VARIANTS})


def prepare_study(run: RunPaths, phantom_options: dict[str, Any], marker_options: dict[str, Any]) -> ShortcutStudy:
    """Generate both phantoms in the run, split them by patient, store each variant's tables.

    Args:
        run: the notebook's run.
        phantom_options: :class:`pneumoloc.phantom.config.PhantomConfig` fields shared by both.
        marker_options: the ``marker_*`` fields; the shortcut phantom only.

    Raises:
        ValueError: a marker option outside the marker fields, no marker rate above 0, or the
            split of the tables differs from the one the marker was drawn for.
    """
    from ..data.readers import read_dataset
    from ..data.splits import patient_split
    from ..data.tables import save_tables
    from ..phantom.config import PhantomConfig
    from ..phantom.writer import generate_phantom

    foreign = sorted(k for k in marker_options if not k.startswith("marker_"))
    cfg = PhantomConfig.from_overrides(**phantom_options, **marker_options)
    if foreign or not cfg.has_marker:
        raise ValueError(f"marker_options must set marker_* fields with a rate above 0, got {marker_options}")
    study = study_paths(run)
    for variant in VARIANTS:
        options = {**phantom_options, **(marker_options if variant == "shortcut" else {})}
        tables = read_dataset("phantom", str(generate_phantom(study.phantoms[variant], **options)))
        split = patient_split(tables.images, cfg.marker_split, cfg.marker_split_seed)
        if "marker_split" in tables.images and not (split == tables.images["marker_split"]).all():
            raise ValueError(f"{study.phantoms[variant]}: the patient split differs from the one its marker "
                             "rates were drawn for; regenerate the phantom")
        save_tables(study.runs[variant].ensure(), tables, tables.images.assign(split=split))
    return study


def marker_rates_table(study: ShortcutStudy) -> pd.DataFrame:
    """Per split and label of the shortcut phantom: images, marked images, realised and asked rate."""
    from ..data.tables import load_tables
    from ..phantom.config import PhantomConfig
    from ..phantom.markers import marker_rate
    from ..storage import load_json

    images = load_tables(study.runs["shortcut"]).images
    cfg = PhantomConfig(**load_json(study.phantoms["shortcut"] / "phantom.json")["config"])
    table = images.groupby(["split", "label"])["marker"].agg(images="size", marked="sum").reset_index()
    table["rate"] = table["marked"] / table["images"]
    table["asked"] = [marker_rate(cfg, s, int(k)) for s, k in zip(table["split"], table["label"])]
    return table


def marked_test_ids(study: ShortcutStudy) -> list[str]:
    """Ids of the shortcut phantom's test images that carry the marker."""
    from ..data.tables import load_tables

    images = load_tables(study.runs["shortcut"]).images
    return images.loc[(images["split"] == "test") & (images["marker"] == 1), "image_id"].astype(str).tolist()


def train_variants(study: ShortcutStudy, cfg, progress: bool = True) -> dict[str, Any]:
    """Train ``cfg`` (a :class:`pneumoloc.training.config.TrainConfig`) on each variant's split.

    Each model is trained by :func:`pneumoloc.training.distributed.train_on_devices` into its
    sub-run's model folder, and its val and test predictions stored as notebook 02 stores
    them. Returns variant -> :class:`pneumoloc.training.loop.TrainResult`.
    """
    from ..data.tables import load_tables
    from ..models.outputs import save_predictions
    from ..training.batches import predictions_table, prepare_data
    from ..training.distributed import train_on_devices

    results = {}
    for variant, sub in study.runs.items():
        data = prepare_data(load_tables(sub).images, cfg, progress=progress)
        result = train_on_devices(cfg, data, sub.model_dir(cfg.backbone), progress=progress)
        pred = predictions_table(result.model, data, device=result.device, batch_size=cfg.eval_batch_size)
        save_predictions(sub, cfg.backbone, pred)
        results[variant] = result
    return results


def cross_predictions(study: ShortcutStudy, results: dict[str, Any], cfg, progress: bool = True) -> pd.DataFrame:
    """Every model on every variant's val and test images.

    Returns:
        ``model, images, split, image_id, patient_id, label, prob``: ``model`` is the
        variant it was trained on, ``images`` the variant whose pixels it saw.
    """
    from ..data.tables import load_tables
    from ..training.batches import predictions_table, prepare_data

    parts = []
    for images_variant, sub in study.runs.items():
        data = prepare_data(load_tables(sub).images, cfg, progress=progress)
        for model_variant, result in results.items():
            pred = predictions_table(result.model, data, device=result.device, batch_size=cfg.eval_batch_size)
            parts.append(pred.assign(model=model_variant, images=images_variant))
    cols = ["model", "images", "split", "image_id", "patient_id", "label", "prob"]
    return pd.concat(parts, ignore_index=True)[cols]


def stored_name(method: str, target_layer: str = "") -> str:
    """Name the maps are stored under: ``method``, or ``method@<last part of each layer>`` for another layer."""
    if not target_layer:
        return method
    return f"{method}@" + "+".join(layer.split(".")[-1] for layer in target_layer.split("+"))


def variant_maps(study: ShortcutStudy, backbone: str, method: str, *, map_size: int, target_layer: str = "",
                 device: str = "cpu", progress: bool = True) -> dict[str, Any]:
    """Each model's stored test maps on its own images (:func:`pneumoloc.explain.stored.compute_maps`;
    ``target_layer`` "" = the backbone's default CAM layer, else stored as :func:`stored_name`)."""
    from ..explain.stored import compute_maps

    name = stored_name(method, target_layer)
    return {v: compute_maps(sub, backbone, method, split="test", map_size=map_size, target_layer=target_layer,
                            store_as=name, device=device, progress=progress)[name] for v, sub in study.runs.items()}


def score_variants(study: ShortcutStudy, maps: dict[str, Any]) -> pd.DataFrame:
    """:func:`shortcut_scores` of each model's test maps on its own images, with a ``model`` column.

    Both are scored against the shortcut phantom's marker boxes: on the clean images the box
    holds no marker, so the clean model's energy there is the control.
    """
    from ..data.tables import load_tables
    from ..phantom.markers import read_marker_boxes

    markers = read_marker_boxes(study.phantoms["shortcut"])
    parts = []
    for variant, mapset in maps.items():
        tables = load_tables(study.runs[variant])
        images = tables.images.set_index("image_id", drop=False).loc[list(mapset.image_ids)]
        parts.append(shortcut_scores(mapset.maps, images, tables.boxes, markers).assign(model=variant))
    return pd.concat(parts, ignore_index=True)


def study_sanity(study: ShortcutStudy, backbone: str, method: str, *, n_images: int = 4, max_groups: int = 6,
                 target_layer: str = "", device: str = "cpu", seed: int = 0) -> pd.DataFrame:
    """The cascading-randomization sanity check (:mod:`pneumoloc.explain.sanity`) of both models
    on the first ``n_images`` marked test images: :func:`sanity_summary` rows with ``variant``."""
    from ..data.tables import load_tables
    from ..environment import pick_device
    from ..explain.sanity import run_sanity, sanity_summary

    dev, parts = str(pick_device(device)), []
    for variant, sub in study.runs.items():
        images = load_tables(sub).images
        marked = load_tables(study.runs["shortcut"]).images
        ids = marked.loc[(marked["split"] == "test") & (marked["marker"] == 1), "image_id"][:n_images]
        table = run_sanity(sub, images[images["image_id"].isin(set(ids))], [backbone], [method], device=dev,
                           max_groups=max_groups, target_layer=target_layer, seed=seed)
        parts.append(sanity_summary(table).assign(variant=variant))
    return pd.concat(parts, ignore_index=True)


def shortcut_scores(maps: np.ndarray, images: pd.DataFrame, lesion_boxes: pd.DataFrame,
                    marker_boxes: pd.DataFrame) -> pd.DataFrame:
    """Per image: energy share and pointing game on the marker box and on the lesion boxes.

    Args:
        maps: ``[N, M, M]`` maps row-aligned with ``images`` (squashed frame, as stored).
        images: ``image_id, patient_id, label, width, height`` rows.
        lesion_boxes, marker_boxes: ``image_id, x, y, w, h`` in original pixels.

    Returns:
        ``image_id, patient_id, label, marker, energy_marker, energy_lesion, point_marker,
        point_lesion``; a score is NaN where it is undefined (no box of that kind, or a
        zero or non-finite map).
    """
    ids = images["image_id"].astype(str).tolist()
    size = np.asarray(maps).shape[-1]
    out = images[["image_id", "patient_id", "label"]].reset_index(drop=True).copy()
    out["marker"] = np.isin(ids, marker_boxes["image_id"].astype(str)).astype(int)
    for kind, table in (("marker", marker_boxes), ("lesion", lesion_boxes)):
        masks = box_masks(boxes_by_image(table, ids), images["width"], images["height"], size)
        for name, metric in (("energy", energy_in_boxes), ("point", pointing_game)):
            s = metric(maps, masks)
            out[f"{name}_{kind}"] = np.where(s.valid, s.values, np.nan)
    return out


def marker_reliance(predictions: pd.DataFrame, marked_ids) -> pd.DataFrame:
    """Per model and marked test image: P(marked image) - P(same image without the marker).

    Args:
        predictions: from :func:`cross_predictions`.
        marked_ids: image ids carrying the marker.

    Returns:
        ``model, image_id, patient_id, label, prob_marked, prob_unmarked, reliance``.
    """
    test = predictions[(predictions["split"] == "test") & predictions["image_id"].isin(set(map(str, marked_ids)))]
    keys = ["model", "image_id", "patient_id", "label"]
    wide = test.pivot_table(index=keys, columns="images", values="prob").reset_index()
    wide = wide.rename(columns={"shortcut": "prob_marked", "clean": "prob_unmarked"})
    wide["reliance"] = wide["prob_marked"] - wide["prob_unmarked"]
    return wide[keys + ["prob_marked", "prob_unmarked", "reliance"]]


def _row(quantity: str, model: str, images: str, est: Estimate, n: int) -> dict[str, Any]:
    return {"quantity": quantity, "model": model, "images": images, **est.as_dict(), "n": n}


def _mean_rows(scores: pd.DataFrame, columns: dict[str, str], n_boot: int, seed: int) -> list[dict]:
    """Bootstrap mean of each ``scores`` column per model over the images where it is defined."""
    rows = []
    for model, g in scores.groupby("model", sort=False):
        for column, quantity in columns.items():
            ok = g[column].notna().to_numpy()
            if ok.any():
                est = bootstrap_ci(np.mean, g[column].to_numpy(float)[ok], groups=g["patient_id"].to_numpy()[ok],
                                   n_boot=n_boot, seed=seed)
                rows.append(_row(quantity, model, g["images"].iloc[0], est, int(ok.sum())))
    return rows


def _paired_row(quantity: str, a: pd.DataFrame, b: pd.DataFrame, column: str, stat: Callable, n_boot: int,
                seed: int) -> dict[str, Any]:
    """``stat(a) - stat(b)`` on the same images (aligned by id; rows with a NaN dropped)."""
    keys = ["image_id", "patient_id"]
    both = a.merge(b, on=keys, suffixes=("_a", "_b")).dropna(subset=[f"{c}_{s}" for c in column for s in "ab"])
    arrays = [[both[f"{c}_{s}"].to_numpy(float) for c in column] for s in "ab"]
    est = paired_bootstrap(stat, arrays[0], arrays[1], both["patient_id"].to_numpy(), n_boot=n_boot, seed=seed)
    return _row(quantity, "paired", "own", est, len(both))


def _auc_rows(predictions: pd.DataFrame, n_boot: int, seed: int) -> list[dict]:
    rows = []
    for (model, images, split), g in predictions.groupby(["model", "images", "split"], sort=False):
        if model != images and split == "val":
            continue  # validation is only reported on a model's own images
        est = bootstrap_ci(roc_auc, g["label"].to_numpy(), g["prob"].to_numpy(), groups=g["patient_id"].to_numpy(),
                           n_boot=n_boot, seed=seed)
        rows.append(_row(f"{split}_roc_auc", model, images, est, len(g)))
    own = {v: predictions[(predictions["model"] == v) & (predictions["images"] == v)
                          & (predictions["split"] == "test")] for v in VARIANTS}
    rows.append(_paired_row("test_roc_auc_drop (clean - shortcut)", own["clean"], own["shortcut"],
                            ("label", "prob"), roc_auc, n_boot, seed))
    return rows


def shortcut_summary(predictions: pd.DataFrame, scores: pd.DataFrame, reliance: pd.DataFrame, n_boot: int = 200,
                     seed: int = 0) -> pd.DataFrame:
    """The study's numbers, one row each: ``quantity, model, images, value, low, high, n``.

    Args:
        predictions: :func:`cross_predictions`.
        scores: :func:`shortcut_scores` rows of both models with a ``model`` column (each on
            its own test images; the marker boxes are the shortcut phantom's for both).
        reliance: :func:`marker_reliance`.
    """
    rows = _auc_rows(predictions, n_boot, seed)
    rows += _mean_rows(reliance.assign(images="both"), {"reliance": "marker_reliance"}, n_boot, seed)
    rel = {v: reliance[reliance["model"] == v] for v in VARIANTS}
    rows.append(_paired_row("marker_reliance (shortcut - clean)", rel["shortcut"], rel["clean"], ("reliance",),
                            np.mean, n_boot, seed))
    own = scores.assign(images="own")
    marked = own[own["marker"] == 1]
    rows += _mean_rows(marked, {"energy_marker": "energy_on_marker", "point_marker": "pointing_on_marker"},
                       n_boot, seed)
    rows += _mean_rows(own, {"energy_lesion": "energy_on_lesions", "point_lesion": "pointing_on_lesions"},
                       n_boot, seed)
    by = {v: marked[marked["model"] == v] for v in VARIANTS}
    rows.append(_paired_row("energy_on_marker (shortcut - clean)", by["shortcut"], by["clean"], ("energy_marker",),
                            np.mean, n_boot, seed))
    return pd.DataFrame(rows)


def _get(summary: pd.DataFrame, quantity: str, model: str | None = None, images: str | None = None) -> pd.Series:
    sel = summary["quantity"] == quantity
    if model is not None:
        sel &= summary["model"] == model
    if images is not None:
        sel &= summary["images"] == images
    if not sel.any():
        raise KeyError(f"shortcut summary has no row {quantity!r} for model={model!r} images={images!r}")
    return summary[sel].iloc[0]


def reveals_shortcut(summary: pd.DataFrame) -> dict[str, bool]:
    """The two answers, each a paired difference shortcut - clean model on the same images whose
    CI lies above 0: the model relies on the marker (removing it lowers P(pneumonia) more than
    for the clean model, which any pixel change moves a little) and the map reveals it (more
    energy on the marker box than the control's)."""
    return {"model_uses_marker": bool(_get(summary, "marker_reliance (shortcut - clean)")["low"] > 0),
            "map_reveals_marker": bool(_get(summary, "energy_on_marker (shortcut - clean)")["low"] > 0)}


def sanity_flags(sanity: pd.DataFrame) -> dict[str, bool]:
    """Variant -> whether the randomization sanity check flagged any of its maps (:func:`study_sanity`)."""
    return {v: bool(g["flagged"].any()) for v, g in sanity.groupby("variant", sort=False)}


def faithfulness_sentence(summaries: dict[str, pd.DataFrame], metric: str = "deletion_auc") -> str:
    """One sentence on ``metric`` minus random maps per variant (faithfulness summaries of
    :func:`pneumoloc.explain.faithfulness.summarize_faithfulness`, method rows only)."""
    parts = []
    for variant, table in summaries.items():
        rows = table[(table["metric"] == metric) & (table["method"] != "random")]
        for _, r in rows.iterrows():
            diff = (f"; minus random {r['vs_random_value']:.3f} [{r['vs_random_low']:.3f}, {r['vs_random_high']:.3f}]"
                    if pd.notna(r.get("vs_random_value")) else "")
            parts.append(f"{variant} model {r['value']:.3f} [{r['low']:.3f}, {r['high']:.3f}]{diff}")
    if not parts:
        return ""
    better = {"deletion_auc": "lower", "insertion_auc": "higher"}.get(metric, "see notebook 04")
    return (f"Faithfulness, {metric} ({better} = more faithful) on pneumonia test images: " + "; ".join(parts)
            + ". Faithfulness asks whether the model uses what the map shows, not whether that is the disease: "
              "a map faithful to a shortcut model is faithful to its shortcut.")


def _ci(row: pd.Series, pct: bool = False) -> str:
    k = 100 if pct else 1
    unit = "%" if pct else ""
    return f"{k * row['value']:.{1 if pct else 3}f}{unit} [{k * row['low']:.{1 if pct else 3}f}, " \
           f"{k * row['high']:.{1 if pct else 3}f}]"


def conclusion_markdown(summary: pd.DataFrame, sanity_flagged: dict[str, bool] | None = None,
                        faithfulness: str = "") -> str:
    """The notebook's conclusion as Markdown, every number from ``summary`` (95% patient-bootstrap CIs).

    Args:
        summary: :func:`shortcut_summary`.
        sanity_flagged: variant -> whether the randomization sanity check flagged its maps.
        faithfulness: one sentence on the faithfulness metrics, when they were computed.
    """
    answer = reveals_shortcut(summary)
    g = lambda q, m=None, i=None: _get(summary, q, m, i)  # noqa: E731 (a local shorthand)
    lines = [
        f"**Does the map reveal the shortcut? {'Yes' if answer['map_reveals_marker'] else 'No'}.** "
        f"The shortcut model {'relies' if answer['model_uses_marker'] else 'does not measurably rely'} on the marker "
        f"(P(pneumonia) with minus without it on marked test images: "
        f"{_ci(g('marker_reliance', 'shortcut'))} vs clean model {_ci(g('marker_reliance', 'clean'))}, "
        f"difference {_ci(g('marker_reliance (shortcut - clean)'))}).",
        f"- ROC-AUC, shortcut model: validation {_ci(g('val_roc_auc', 'shortcut', 'shortcut'))} (marker predicts "
        f"the label) vs test {_ci(g('test_roc_auc', 'shortcut', 'shortcut'))} (it does not); clean model test "
        f"{_ci(g('test_roc_auc', 'clean', 'clean'))}; drop clean - shortcut "
        f"{_ci(g('test_roc_auc_drop (clean - shortcut)'))}.",
        f"- Map energy on the marker box (marked test images): shortcut model "
        f"{_ci(g('energy_on_marker', 'shortcut'), True)} vs clean model on the same images "
        f"{_ci(g('energy_on_marker', 'clean'), True)} "
        f"(paired difference on the images where both maps are non-zero "
        f"{_ci(g('energy_on_marker (shortcut - clean)'), True)}); "
        f"on the lesion boxes {_ci(g('energy_on_lesions', 'shortcut'), True)} vs "
        f"{_ci(g('energy_on_lesions', 'clean'), True)}.",
        f"- Pointing game: the shortcut model's peak falls on the marker in "
        f"{_ci(g('pointing_on_marker', 'shortcut'), True)} of marked images (clean model "
        f"{_ci(g('pointing_on_marker', 'clean'), True)}) and on a lesion in "
        f"{_ci(g('pointing_on_lesions', 'shortcut'), True)} of pneumonia images (clean model "
        f"{_ci(g('pointing_on_lesions', 'clean'), True)}).",
    ]
    if sanity_flagged is not None:
        flagged = [v for v, f in sanity_flagged.items() if f]
        verdict = "flags " + ", ".join(flagged) if flagged else "flags neither model"
        lines.append(f"- Randomization sanity check: {verdict} — it tests whether maps depend on the weights, "
                     "not what the weights learned, so it is not built to see a shortcut.")
    if faithfulness:
        lines.append(f"- {faithfulness}")
    return "\n".join(lines)
