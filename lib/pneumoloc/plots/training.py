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

__all__ = ["learning_curves", "roc_figure", "pr_figure", "confusion_figure", "finding_auroc_figure",
           "curve_band"]

GRID = np.linspace(0, 1, 101)


def _plt():
    import matplotlib.pyplot as plt

    return plt


def learning_curves(history: pd.DataFrame, title: str = "") -> "object":
    """Train/val loss, validation ROC-AUC and learning rate per epoch."""
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
    ax1.plot(history["epoch"], history["train_loss"], "o-", label="train")
    ax1.plot(history["epoch"], history["val_loss"], "s-", label="validation")
    ax1.set(xlabel="epoch", ylabel="loss", title="loss")
    ax1.legend(frameon=False)
    ax2.plot(history["epoch"], history["val_roc_auc"], "o-", color="C2", label="val ROC-AUC")
    ax2.set(xlabel="epoch", ylabel="validation ROC-AUC", title="validation ROC-AUC")
    best = history["val_roc_auc"].idxmax() if history["val_roc_auc"].notna().any() else None
    if best is not None:
        ax2.axvline(history.loc[best, "epoch"], color="grey", ls=":", label="best epoch")
    lr = ax2.twinx()
    lr.plot(history["epoch"], history["lr"], color="C3", alpha=0.5, label="learning rate")
    lr.set_ylabel("learning rate")
    ax2.legend(frameon=False, loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
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
    fig, ax = plt.subplots(figsize=(4.4, 4.2))
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
    ax.set(xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.legend(frameon=False, loc="lower right" if kind == "roc" else "lower left", fontsize=8)
    fig.tight_layout()
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
    fig, ax = plt.subplots(figsize=(3.6, 3.3))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (i, j), c in np.ndenumerate(cm):
        ax.text(j, i, f"{c}\n{share[i, j]:.0%}", ha="center", va="center",
                color="white" if share[i, j] > 0.5 else "black")
    ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=labels, yticklabels=labels,
           xlabel="predicted", ylabel="true", title=title or f"threshold {threshold:.3f}")
    fig.tight_layout()
    return fig


def finding_auroc_figure(per_finding: dict[str, dict], title: str = "per-finding test AUROC"):
    """Horizontal bars of per-finding AUROC with CI whiskers (from ``evaluate_multilabel``)."""
    plt = _plt()
    names = sorted(per_finding, key=lambda f: np.nan_to_num(per_finding[f]["roc_auc"]))
    auc = np.array([per_finding[f]["roc_auc"] for f in names], float)
    ci = np.array([per_finding[f]["roc_auc_ci95"] for f in names], float).reshape(-1, 2)
    fig, ax = plt.subplots(figsize=(5, 0.3 * len(names) + 1.2))
    err = np.abs(np.vstack([auc - ci[:, 0], ci[:, 1] - auc]))
    ax.barh(names, auc, xerr=np.nan_to_num(err), color="C0", alpha=0.8, capsize=2)
    ax.axvline(0.5, color="grey", ls=":")
    ax.set(xlim=(0, 1), xlabel="ROC-AUC (95% CI by patient)", title=title)
    fig.tight_layout()
    return fig
