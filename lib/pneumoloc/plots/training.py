"""Figures of notebook 02: learning curves, ROC and PR curves with CI bands, confusion matrix.

Each function returns a matplotlib figure; the notebook shows it and saves it
through :func:`pneumoloc.plots.save.save_figure`. Bands are pointwise 95% percentile
bands over patient bootstrap resamples (:func:`pneumoloc.evaluate.bootstrap.patient_resamples`):
each resample's curve is interpolated on a fixed grid of false-positive rate (ROC)
or recall (PR), and the 2.5th and 97.5th percentiles are shaded.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..evaluate.bootstrap import patient_resamples, percentile_interval
from ..evaluate.classification import average_precision, binary_metrics, pr_curve, roc_auc, roc_curve
from .style import COLUMN_IN, model_label

__all__ = ["learning_curves", "roc_figure", "pr_figure", "confusion_figure", "finding_auroc_figure",
           "curve_band"]

GRID = np.linspace(0, 1, 101)


def _plt():
    import matplotlib.pyplot as plt

    return plt


def learning_curves(history: pd.DataFrame, title: str = "") -> "object":
    """One column wide: train/validation loss above, validation ROC-AUC with the learning rate
    (right axis) below, sharing the epoch axis."""
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(COLUMN_IN, 3.6), sharex=True, layout="constrained")
    ax1.plot(history["epoch"], history["train_loss"], "o-", ms=3, label="train")
    ax1.plot(history["epoch"], history["val_loss"], "s-", ms=3, label="validation")
    ax1.set_ylabel("loss", fontsize=8)
    ax1.legend(frameon=False, fontsize=7)
    ax2.plot(history["epoch"], history["val_roc_auc"], "o-", ms=3, color="C2", label="validation ROC-AUC")
    ax2.set_xlabel("epoch", fontsize=8)
    ax2.set_ylabel("validation ROC-AUC", fontsize=8)
    best = history["val_roc_auc"].idxmax() if history["val_roc_auc"].notna().any() else None
    if best is not None:
        ax2.axvline(history.loc[best, "epoch"], color="grey", ls=":", label="best epoch")
    lr = ax2.twinx()
    lr.plot(history["epoch"], history["lr"], color="C3", alpha=0.5, label="learning rate")
    lr.set_ylabel("learning rate", fontsize=8)
    lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    lr.yaxis.get_offset_text().set_fontsize(7)
    handles = ax2.get_legend_handles_labels()[0] + lr.get_legend_handles_labels()[0]
    # below the panels: inside, no spot is free of both the ROC-AUC curve and the twin axis' learning rate
    fig.legend(handles=handles, frameon=False, loc="outside lower center", ncols=3, fontsize=7)
    for ax in (ax1, ax2, lr):
        ax.tick_params(labelsize=7)
    fig.suptitle(model_label(title), fontsize=9)
    return fig


def curve_band(y, p, groups: Sequence, kind: str = "roc", n_boot: int = 200, seed: int = 0,
               level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pointwise percentile band of a ROC (TPR at FPR grid) or PR (precision at recall grid) curve.

    Returns:
        ``grid, low, high``; resamples with one class only are skipped.
    """
    y, p = np.asarray(y, float), np.asarray(p, float)
    curves = []
    for idx in patient_resamples(groups, n_boot, seed):
        yb, pb = y[idx], p[idx]
        if yb.min() == yb.max():
            continue
        if kind == "roc":
            fpr, tpr, _ = roc_curve(yb, pb)
            curves.append(np.interp(GRID, fpr, tpr))
        else:
            prec, rec, _ = pr_curve(yb, pb)
            curves.append(np.interp(GRID, rec[::-1], prec[::-1]))
    if not curves:
        return GRID, np.full_like(GRID, np.nan), np.full_like(GRID, np.nan)
    low, high = percentile_interval(np.array(curves), level, axis=0)
    return GRID, low, high


def _curve_figure(kind: str, curves: dict[str, pd.DataFrame], n_boot: int, seed: int, title: str):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(COLUMN_IN, 3.3), layout="constrained")
    for i, (name, df) in enumerate(curves.items()):
        y, p, g = df["label"].to_numpy(float), df["prob"].to_numpy(float), df["patient_id"].to_numpy()
        if kind == "roc":
            x, yy, _ = roc_curve(y, p)
            label = f"{name} (AUC {roc_auc(y, p):.3f})"
        else:
            yy, x, _ = pr_curve(y, p)
            label = f"{name} (AP {average_precision(y, p):.3f})"
        ax.step(x, yy, where="post", color=f"C{i}", label=label)
        grid, low, high = curve_band(y, p, g, kind, n_boot, seed)
        ax.fill_between(grid, low, high, color=f"C{i}", alpha=0.2, lw=0)
    if kind == "roc":
        ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1)
        ax.set(xlabel="false-positive rate (1 - specificity)", ylabel="true-positive rate (sensitivity)")
    else:
        ax.set(xlabel="recall (sensitivity)", ylabel="precision")
    ax.set(xlim=(0, 1), ylim=(0, 1.02))
    ax.set_title(title, fontsize=9)
    ax.xaxis.label.set_fontsize(8), ax.yaxis.label.set_fontsize(8)
    ax.tick_params(labelsize=7)
    ax.legend(frameon=False, loc="lower right" if kind == "roc" else "lower left", fontsize=7)
    return fig


def roc_figure(curves: dict[str, pd.DataFrame], n_boot: int = 200, seed: int = 0, title: str = "ROC"):
    """ROC curves with 95% patient-bootstrap bands; ``curves`` maps a name to rows with label, prob, patient_id."""
    return _curve_figure("roc", curves, n_boot, seed, title)


def pr_figure(curves: dict[str, pd.DataFrame], n_boot: int = 200, seed: int = 0,
              title: str = "precision-recall"):
    """Precision-recall curves with 95% patient-bootstrap bands."""
    return _curve_figure("pr", curves, n_boot, seed, title)


def confusion_figure(y, p, threshold: float, title: str = "", labels: tuple[str, str] = ("normal", "pneumonia")):
    """2x2 confusion matrix (counts and row percentages) at ``threshold``."""
    plt = _plt()
    m = binary_metrics(y, p, threshold)
    cm = np.array([[m["tn"], m["fp"]], [m["fn"], m["tp"]]])
    share = cm / cm.sum(1, keepdims=True).clip(min=1)
    fig, ax = plt.subplots(figsize=(COLUMN_IN, 2.8), layout="constrained")
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (i, j), c in np.ndenumerate(cm):
        ax.text(j, i, f"{c}\n{share[i, j]:.0%}", ha="center", va="center", fontsize=8,
                color="white" if share[i, j] > 0.5 else "black")
    ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=labels, yticklabels=labels)
    ax.set_xlabel("predicted", fontsize=8), ax.set_ylabel("true", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_title(title or f"threshold {threshold:.3f}", fontsize=8, wrap=True)
    return fig


def finding_auroc_figure(per_finding: dict[str, dict], title: str = "per-finding test AUROC"):
    """Horizontal bars of per-finding AUROC with CI whiskers (from ``evaluate_multilabel``)."""
    plt = _plt()
    names = sorted(per_finding, key=lambda f: np.nan_to_num(per_finding[f]["roc_auc"]))
    auc = np.array([per_finding[f]["roc_auc"] for f in names], float)
    ci = np.array([per_finding[f]["roc_auc_ci95"] for f in names], float).reshape(-1, 2)
    fig, ax = plt.subplots(figsize=(COLUMN_IN, 0.2 * len(names) + 1.0), layout="constrained")
    err = np.abs(np.vstack([auc - ci[:, 0], ci[:, 1] - auc]))
    ax.barh(names, auc, xerr=np.nan_to_num(err), color="C0", alpha=0.8, capsize=2)
    ax.axvline(0.5, color="grey", ls=":")
    ax.set(xlim=(0, 1))
    ax.set_xlabel("ROC-AUC (95% CI by patient)", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    return fig
