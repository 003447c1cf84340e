"""Notebook 05's tables: systems side by side, the efficiency frontier, the paper's summary.

A *system* is a member model or a fitted ensemble (``ens_<combiner>``), each a vector of
P(pneumonia) on the same images. The frontier joins each system's cost (parameters, measured
latency; an ensemble costs the sum of the members it uses) with its test ROC-AUC and map
localization (hit rate, localization AUPRC and the Lung Attention Ratio, Shahi & Bagale's
measure of where a map looks), and marks the Pareto-optimal ones per (cost, score) pair. It keeps
the device, threads and hardware the latency was measured on, so its figure can say them. The summary joins
classification (with paired differences to the reference), calibration, cost and localization
into one row per system, written as CSV, LaTeX and a figure.

The reference ("best single model") and the greedy selection follow the recipe rule of
:func:`pneumoloc.training.recipe.selection_pool`: undertrained members (validation ROC-AUC below
the bar) and members of another recipe than the run's are not candidates (unless
``compare_recipes``); the other combiners still use every member, and every table carries each
system's ``recipe`` and ``undertrained`` columns (:func:`system_recipes`).

Artifacts written here, into notebook 05's folder (``<run>/ensembles/``): ``predictions.csv`` and
``ensembles.json`` (:func:`save_systems`), ``summary.csv`` and ``summary.tex`` (:func:`save_summary`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..environment import provenance
from ..training.recipe import Selection, selection_pool
from ..storage import save_json, save_table, write_bytes
from .combiners import FittedEnsemble, best_single, fit_ensemble, member_auc, weighted_average
from .efficiency import SETTING_COLUMNS, pareto_front
from .report import PredictionSet, format_ci

__all__ = ["Systems", "fit_systems", "system_recipes", "systems", "predictions_table", "weights_table", "save_systems", "members_used",
           "efficiency_frontier", "frontier_counts", "mobilenet_claim", "summary_table", "summary_latex",
           "summary_caption", "save_summary", "COST_COLUMNS", "LOC_NAMES", "FRONTIER_LOC"]

COST_COLUMNS = ["params", "latency_ms", "ms_per_image_batched"]
# Localization metrics of the frontier and the summary, with their printed names.
LOC_NAMES = {"hit": "hit rate", "auprc": "loc. AUPRC"}
# Localization axes of the frontier (each a (cost, score) Pareto front): LOC_NAMES and the LAR.
FRONTIER_LOC = (*LOC_NAMES, "lar")
# Combiners whose weights are not a convex mix of members: every member counts as used.
_NOT_CONVEX = ("stacking", "vote")


@dataclass
class Systems:
    """Members and ensembles fitted on validation, with every system's probabilities per split."""

    members: list[str]
    fitted: dict  # combiner -> FittedEnsemble
    val_auc: pd.Series  # members' validation ROC-AUC
    reference: str  # the candidate member with the best validation ROC-AUC
    val: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    selection: Selection | None = None  # which members could be the reference or a greedy pick, and why

    def describe(self) -> str:
        """The reference and its validation ROC-AUC, the selection rule's verdict; with a greedy
        ensemble, the members it picked in order."""
        name = "best single model on validation" if self.selection is None or self.selection.claim else \
            "reference (no best-model claim: every member is undertrained)"
        lines = [f"{name}: {self.reference} (val ROC-AUC {self.val_auc[self.reference]:.3f})"]
        if self.selection is not None:
            lines.append(self.selection.message)
        if "greedy" in self.fitted:
            greedy = self.fitted["greedy"].params
            lines.append(f"greedy picks (in order): {greedy['picks'][: greedy['n_selected']]}")
        return "\n".join(lines)


def fit_systems(preds: PredictionSet, combiners: Sequence[str], recipes: pd.DataFrame | None = None,
                compare_recipes: bool = False) -> Systems:
    """Fit every combiner on the members' validation predictions; apply each unchanged to test.

    Args:
        preds: the members' stored predictions.
        combiners: combiner names.
        recipes: :func:`pneumoloc.training.recipe.model_recipes` of the members; when given, the
            reference and the greedy picks come from :func:`~pneumoloc.training.recipe.selection_pool`
            only (None: every member is a candidate).
        compare_recipes: let the reference and greedy choose across recipes.

    Raises:
        ValueError: members split evenly between recipes without ``compare_recipes`` (the message
            says how to choose).
    """
    members, y_val, p_val = list(preds.members), preds.labels("val"), preds.probs("val")
    val_auc = pd.Series({m: member_auc(y_val, p_val[:, k]) for k, m in enumerate(members)}, name="val ROC-AUC")
    selection = None if recipes is None else selection_pool(recipes.loc[members], compare_recipes)
    pool = members if selection is None else selection.pool
    cols = [members.index(m) for m in pool]
    fitted = {c: _fit_on_pool(c, p_val, y_val, members, cols) if c == "greedy" else fit_ensemble(c, p_val, y_val, members)
              for c in combiners}
    return Systems(members, fitted, val_auc, best_single(p_val[:, cols], y_val, pool),
                   systems(p_val, members, fitted), systems(preds.probs("test"), members, fitted), selection)


def _fit_on_pool(combiner: str, p_val: np.ndarray, y_val: np.ndarray, members: list[str],
                 cols: list[int]) -> FittedEnsemble:
    """``combiner`` fitted on the candidate members ``cols`` only, as an ensemble of all ``members``
    with weight 0 for the others (so it applies to the full probability matrix)."""
    sub = fit_ensemble(combiner, p_val[:, cols], y_val, [members[k] for k in cols])
    if len(cols) == len(members):
        return sub
    w = np.zeros(len(members))
    w[cols] = sub.weights
    return FittedEnsemble(combiner, tuple(members), w, lambda p: weighted_average(p, w),
                          {**sub.params, "candidates": [members[k] for k in cols]})


def system_recipes(recipes: pd.DataFrame, fitted: dict, members: Sequence[str]) -> pd.DataFrame:
    """``recipe`` and ``undertrained`` of every system (index): a member's own; an ensemble's
    recipe is its used members' one recipe, or ``"mixed: <ids>"``, and its ``undertrained`` lists
    the undertrained members it uses ('' when none)."""
    rows = {m: {"recipe": recipes.loc[m, "recipe"], "undertrained": "yes" if recipes.loc[m, "undertrained"] else ""}
            for m in members}
    for name, used in members_used(fitted, members).items():
        ids = list(dict.fromkeys(recipes.loc[used, "recipe"]))
        under = [m for m in used if recipes.loc[m, "undertrained"]]
        rows[name] = {"recipe": ids[0] if len(ids) == 1 else "mixed: " + " + ".join(ids),
                      "undertrained": ("members " + ", ".join(under)) if under else ""}
    return pd.DataFrame.from_dict(rows, orient="index")


def systems(probs: np.ndarray, members: Sequence[str], fitted: dict) -> dict[str, np.ndarray]:
    """Each member's column of ``probs`` ``[n, M]``, then ``ens_<combiner>`` for every fitted ensemble."""
    out = {m: probs[:, k] for k, m in enumerate(members)}
    out.update({f"ens_{c}": e.predict(probs) for c, e in fitted.items()})
    return out


def predictions_table(preds: PredictionSet, by_split: dict[str, dict[str, np.ndarray]]) -> pd.DataFrame:
    """Long table ``image_id, patient_id, label, split, system, prob`` of every system per split."""
    return pd.concat([preds.frames[s][["image_id", "patient_id", "label"]].assign(split=s, system=name, prob=p)
                      for s, d in by_split.items() for name, p in d.items()])


def weights_table(val_auc: pd.Series, fitted: dict, members: Sequence[str]) -> pd.DataFrame:
    """Members' validation ROC-AUC beside each combiner's member weights."""
    weights = pd.DataFrame({c: pd.Series(e.weights, index=list(members)) for c, e in fitted.items()})
    return pd.concat([val_auc, weights], axis=1)


def save_systems(folder: str | os.PathLike, preds: PredictionSet, fit: Systems, parameters: dict) -> None:
    """Write ``predictions.csv`` (:func:`predictions_table` of both splits) and ``ensembles.json``
    (members and the checkpoints behind their predictions, reference, members' validation ROC-AUC,
    each combiner's weights and fit, the notebook's parameters, provenance) into ``folder``."""
    folder = Path(folder)
    save_table(folder / "predictions.csv", predictions_table(preds, {"val": fit.val, "test": fit.test}))
    save_json(folder / "ensembles.json", {
        "members": fit.members, "member_checkpoints": preds.checkpoints, "reference": fit.reference,
        "val_roc_auc": fit.val_auc.to_dict(),
        "combiners": {c: {"weights": e.weights, "params": e.params} for c, e in fit.fitted.items()},
        "parameters": parameters, "provenance": provenance()})


def members_used(fitted: dict, members: Sequence[str]) -> dict[str, list[str]]:
    """Members each ensemble needs at prediction time (positive weight; all for stacking and vote)."""
    return {f"ens_{c}": [m for m, w in zip(members, e.weights if c not in _NOT_CONVEX else np.ones(len(members)))
                         if w > 0] for c, e in fitted.items()}


def _shared(values: pd.Series):
    """The one value of ``values``, or its distinct values joined with ``" + "``."""
    distinct = values.unique()
    return distinct[0] if len(distinct) == 1 else " + ".join(map(str, distinct))


def efficiency_frontier(costs: pd.DataFrame, fitted: dict, members: Sequence[str], classification: pd.DataFrame,
                        localization: pd.DataFrame) -> pd.DataFrame:
    """Cost and quality of every system, and ``front_<cost>_<score>`` Pareto flags.

    Scores are test ROC-AUC and each of :data:`FRONTIER_LOC` the localization table holds (LAR
    only when the run has lung masks). The latency setting columns (``device, threads, hardware``)
    of ``costs`` are kept; an ensemble gets its members' setting (joined with ``" + "`` if they differ).

    Args:
        costs: :func:`pneumoloc.ensembles.efficiency.efficiency_table` indexed by model.
        fitted: combiner -> fitted ensemble.
        classification: :func:`pneumoloc.ensembles.report.compare_systems` (``system``, ``roc_auc``).
        localization: :func:`pneumoloc.ensembles.report.compare_localization` (long: system, metric, value).
    """
    loc_value = localization.pivot(index="system", columns="metric", values="value")
    loc_metrics = [m for m in FRONTIER_LOC if m in loc_value]
    setting = [c for c in SETTING_COLUMNS if c in costs]
    used = members_used(fitted, members)
    ens_costs = pd.DataFrame({name: costs.loc[ms, COST_COLUMNS].sum() for name, ms in used.items()}).T
    for col in setting:
        ens_costs[col] = [_shared(costs.loc[used[name], col]) for name in ens_costs.index]
    frontier = pd.concat([costs[COST_COLUMNS + setting], ens_costs])
    frontier = frontier.join(classification.set_index("system")[["roc_auc"]]).join(loc_value[loc_metrics])
    frontier["kind"] = ["member" if s in members else "ensemble" for s in frontier.index]
    for cost in ("params", "latency_ms"):
        for score in ["roc_auc", *loc_metrics]:
            frontier[f"front_{cost}_{score}"] = pareto_front(frontier[cost], frontier[score])
    return frontier


def frontier_counts(frontier: pd.DataFrame, models: Sequence[str]) -> dict[str, str]:
    """For each of ``models``: on how many of the frontiers it sits (e.g. the MobileNet claim)."""
    fronts = [c for c in frontier if c.startswith("front_")]
    return {m: f"on {int(frontier.loc[m, fronts].sum())} of {len(fronts)} frontiers" for m in models}


def mobilenet_claim(frontier: pd.DataFrame, mobilenets: Sequence[str]) -> str:
    """The paper's claim that MobileNet is the efficient choice, checked: on how many frontiers
    each MobileNet member sits (:func:`frontier_counts`), or that the run has none."""
    counts = frontier_counts(frontier, mobilenets) if mobilenets else "no MobileNet among the members of this run"
    return f"MobileNet claim: {counts}"


def summary_table(classification: pd.DataFrame, calibration: pd.DataFrame, frontier: pd.DataFrame,
                  localization: pd.DataFrame, reference: str,
                  recipes: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per system: the numbers (``summary``) and the paper's strings (``pretty``), with
    ``recipe`` and ``undertrained`` from :func:`system_recipes` when given."""
    summary = classification.set_index("system").join(calibration).join(frontier[["kind", "params", "latency_ms"]])
    if recipes is not None:
        summary = summary.join(recipes[["recipe", "undertrained"]])
    loc_metrics = [m for m in LOC_NAMES if m in frontier]
    for metric in loc_metrics:
        summary = summary.join(localization[localization["metric"] == metric].set_index("system")
                               [["value", "low", "high"]]
                               .rename(columns=lambda c: metric + ("" if c == "value" else "_" + c)))
    summary["params"] = summary["params"] / 1e6
    columns = {"kind": "kind", **({"recipe": "recipe", "undertrained": "undertrained"} if recipes is not None else {}),
               "roc_auc": "ROC-AUC", "d_roc_auc": f"Δ vs {reference}", "delong_p": "DeLong p",
               "pr_auc": "PR-AUC", "f1": "F1", "ece": "ECE", "params": "params (M)", "latency_ms": "latency (ms)",
               **{m: LOC_NAMES[m] for m in loc_metrics}}
    return summary, format_ci(summary, columns)


def summary_latex(pretty: pd.DataFrame, caption: str, label: str = "tab:ensembles") -> str:
    """``pretty`` as a LaTeX table (``pandas.to_latex``); Δ printed as "diff.", underscores escaped."""
    return pretty.rename(columns=lambda c: c.replace("Δ", "diff.")).to_latex(
        escape=True, caption=caption.replace("_", "\\_"), label=label)


def summary_caption(run_name: str, map_method: str, n_boot: int, latency: str = "") -> str:
    """Caption of the paper's summary table (LaTeX: ``%`` escaped); ``latency`` says where its
    latency column was measured (:func:`pneumoloc.ensembles.efficiency.latency_setting`)."""
    return (f"Ensembles vs members on test ({run_name}, maps: {map_method}); 95\\% CIs by patient bootstrap "
            f"({n_boot} resamples); diff. = system minus the best single model on validation"
            + (f"; {latency}." if latency else "."))


def save_summary(folder: str | os.PathLike, table: pd.DataFrame, pretty: pd.DataFrame, caption: str) -> None:
    """Write :func:`summary_table`'s numbers as ``summary.csv`` and its strings as ``summary.tex``
    (:func:`summary_latex` with ``caption``) into ``folder``."""
    folder = Path(folder)
    save_table(folder / "summary.csv", table.reset_index(names="system"))
    write_bytes(folder / "summary.tex", summary_latex(pretty, caption).encode())
