"""Classification metrics on the held-out patient split, with thresholds chosen on validation.

Pure numpy functions on arrays: ``roc_auc``/``average_precision`` (the paper's
ROC-AUC and PR-AUC), ``binary_metrics`` at one threshold (accuracy, precision,
recall = sensitivity, specificity, F1, ROC-AUC, PR-AUC, confusion counts), and the
two operating points Shahi & Bagale report: the threshold reaching a specificity
target and the best-F1 threshold. Thresholds are always chosen on the VALIDATION
split and applied unchanged to test (choosing them on test would report an
optimistic, unattainable operating point).

A prediction is positive when ``prob >= threshold`` (the convention of
scikit-learn's ``roc_curve``/``precision_recall_curve``, against which the tests
check every function). Confidence intervals resample patients
(:mod:`pneumoloc.evaluate.bootstrap`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from .bootstrap import bootstrap_ci

__all__ = [
    "roc_curve", "roc_auc", "pr_curve", "average_precision", "confusion", "binary_metrics",
    "threshold_for_specificity", "best_f1_threshold", "operating_points", "metrics_with_ci",
    "evaluate_binary", "evaluate_multilabel", "scores_table", "jsonable", "CI_METRICS",
]

CI_METRICS = ("accuracy", "precision", "recall", "specificity", "f1", "roc_auc", "pr_auc")


def _clean(y, p) -> tuple[np.ndarray, np.ndarray]:
    y, p = np.asarray(y, dtype=float).ravel(), np.asarray(p, dtype=float).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels ({y.size}) and probabilities ({p.size}) differ in length")
    keep = ~np.isnan(y)  # masked (uncertain) multi-label targets are not scored
    return y[keep].astype(int), p[keep]


def _counts(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct thresholds (descending) and cumulative TP, FP at ``prob >= threshold``."""
    order = np.argsort(-p, kind="mergesort")
    p, y = p[order], y[order]
    last = np.r_[np.nonzero(np.diff(p))[0], p.size - 1]  # last index of each tied block
    return p[last], np.cumsum(y)[last], (1 + last) - np.cumsum(y)[last]


def roc_curve(y, p) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FPR, TPR and thresholds, starting at (0, 0) with threshold +inf."""
    y, p = _clean(y, p)
    thr, tp, fp = _counts(y, p)
    npos, nneg = y.sum(), y.size - y.sum()
    if npos == 0 or nneg == 0:
        raise ValueError("ROC needs both classes")
    return np.r_[0, fp / nneg], np.r_[0, tp / npos], np.r_[np.inf, thr]


def roc_auc(y, p) -> float:
    """Area under the ROC curve (trapezoids; ties count one half, as Mann-Whitney U)."""
    fpr, tpr, _ = roc_curve(y, p)
    return float(np.trapezoid(tpr, fpr))


def pr_curve(y, p) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall (ending at recall 0, precision 1) and thresholds, as scikit-learn."""
    y, p = _clean(y, p)
    thr, tp, fp = _counts(y, p)
    if y.sum() == 0:
        raise ValueError("precision-recall needs positives")
    precision, recall = tp / (tp + fp), tp / y.sum()
    stop = np.searchsorted(tp, tp[-1]) + 1  # drop thresholds after full recall
    return (np.r_[precision[:stop][::-1], 1.0], np.r_[recall[:stop][::-1], 0.0], thr[:stop][::-1])


def average_precision(y, p) -> float:
    """PR-AUC as average precision: sum over thresholds of (R_n - R_{n-1}) P_n (no interpolation)."""
    precision, recall, _ = pr_curve(y, p)
    return float(-np.sum(np.diff(recall) * precision[:-1]))


def confusion(y, pred) -> np.ndarray:
    """2x2 ``[[tn, fp], [fn, tp]]`` (scikit-learn's layout: rows truth, columns prediction)."""
    y, pred = np.asarray(y).astype(int).ravel(), np.asarray(pred).astype(int).ravel()
    return np.bincount(2 * y + pred, minlength=4).reshape(2, 2)


def _div(a: float, b: float) -> float:
    return float(a / b) if b else 0.0  # scikit-learn's zero_division=0


def binary_metrics(y_true, prob, threshold: float = 0.5) -> dict:
    """All threshold metrics plus ROC-AUC and PR-AUC for binary labels.

    Returns:
        dict with ``accuracy, precision, recall, specificity, f1, roc_auc, pr_auc,
        threshold, tn, fp, fn, tp, n, n_pos``; AUCs are NaN when a class is absent.
    """
    y, p = _clean(y_true, prob)
    (tn, fp), (fn, tp) = confusion(y, p >= threshold)
    precision, recall = _div(tp, tp + fp), _div(tp, tp + fn)
    both = 0 < y.sum() < y.size
    return {
        "accuracy": _div(tp + tn, y.size), "precision": precision, "recall": recall,
        "specificity": _div(tn, tn + fp), "f1": _div(2 * precision * recall, precision + recall),
        "roc_auc": roc_auc(y, p) if both else float("nan"),
        "pr_auc": average_precision(y, p) if y.sum() else float("nan"),
        "threshold": float(threshold), "tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp),
        "n": int(y.size), "n_pos": int(y.sum()),
    }


def threshold_for_specificity(y, p, target: float = 0.95) -> float:
    """Lowest threshold whose specificity on ``(y, p)`` is at least ``target``.

    The lowest such threshold keeps the most sensitivity; returned thresholds are
    observed probabilities (or just above the maximum when only "all negative"
    reaches the target).
    """
    if not 0 <= target <= 1:
        raise ValueError(f"specificity target must lie in [0, 1], got {target}")
    y, p = _clean(y, p)
    neg = np.sort(p[y == 0])
    if neg.size == 0:
        raise ValueError("threshold_for_specificity needs negative examples")
    cand = np.unique(np.r_[p, np.nextafter(p.max(), np.inf)])
    # specificity(t) = share of negatives with p < t, nondecreasing in t
    spec = np.searchsorted(neg, cand, side="left") / neg.size
    return float(cand[np.argmax(spec >= target - 1e-12)])


def best_f1_threshold(y, p) -> float:
    """Threshold (an observed probability) that maximizes F1; ties -> the highest threshold."""
    y, p = _clean(y, p)
    if y.sum() == 0:
        raise ValueError("best_f1_threshold needs positive examples")
    thr, tp, fp = _counts(y, p)
    f1 = 2 * tp / (tp + fp + y.sum())
    return float(thr[np.argmax(f1)])


def operating_points(y_val, p_val, spec_target: float = 0.95) -> dict[str, float]:
    """The thresholds reported for every model, chosen on validation.

    Keys (also used in figure names, so free of dots): ``default`` (0.5),
    ``specificity`` (lowest threshold reaching ``spec_target`` on validation), ``best_f1``.
    """
    return {"default": 0.5,
            "specificity": threshold_for_specificity(y_val, p_val, spec_target),
            "best_f1": best_f1_threshold(y_val, p_val)}


def metrics_with_ci(y, p, groups: Sequence, threshold: float, n_boot: int = 1000, seed: int = 0,
                    metrics: Sequence[str] = CI_METRICS) -> pd.DataFrame:
    """Table ``metric, value, low, high`` with 95% CIs resampling patients (``groups``)."""
    rows = []
    for name in metrics:
        est = bootstrap_ci(lambda a, b, name=name: binary_metrics(a, b, threshold)[name],
                           np.asarray(y, float), np.asarray(p, float), groups=groups,
                           n_boot=n_boot, seed=seed)
        rows.append({"metric": name, "value": est.value, "low": est.low, "high": est.high})
    return pd.DataFrame(rows)


def evaluate_binary(pred: pd.DataFrame, spec_target: float = 0.95, n_boot: int = 1000,
                    seed: int = 0) -> dict:
    """Test metrics at each validation-chosen threshold, with patient-bootstrap CIs.

    Args:
        pred: predictions table with ``split`` (val and test rows), ``label``, ``prob``, ``patient_id``.
    """
    val, test = pred[pred["split"] == "val"], pred[pred["split"] == "test"]
    if val.empty or test.empty:
        raise ValueError("evaluation needs val and test rows in the predictions table")
    out = {"n_val": len(val), "n_test": len(test), "spec_target": spec_target, "n_boot": n_boot,
           "val_roc_auc": binary_metrics(val["label"], val["prob"])["roc_auc"], "operating_points": {}}
    for name, t in operating_points(val["label"], val["prob"], spec_target).items():
        point = binary_metrics(test["label"], test["prob"], t)
        ci = metrics_with_ci(test["label"], test["prob"], test["patient_id"], t, n_boot, seed)
        point["ci95"] = {r.metric: [r.low, r.high] for r in ci.itertuples()}
        out["operating_points"][name] = point
    return out


def evaluate_multilabel(pred: pd.DataFrame, findings: Sequence[str], n_boot: int = 1000,
                        seed: int = 0) -> dict:
    """Per-finding test AUROC (with patient CI) and F1 at the validation best-F1 threshold.

    ``pred`` holds ``label_<finding>`` (NaN = not scored) and ``prob_<finding>``.
    """
    val, test = pred[pred["split"] == "val"], pred[pred["split"] == "test"]
    per = {}
    for f in findings:
        yv, pv, yt, pt = val[f"label_{f}"], val[f"prob_{f}"], test[f"label_{f}"], test[f"prob_{f}"]
        has_val = (yv == 1).any()
        t = best_f1_threshold(yv, pv) if has_val else 0.5
        m = binary_metrics(yt, pt, t)
        auc = bootstrap_ci(roc_auc, np.asarray(yt, float), np.asarray(pt, float),
                           groups=test["patient_id"], n_boot=n_boot, seed=seed)
        per[f] = {"roc_auc": auc.value, "roc_auc_ci95": [auc.low, auc.high], "f1": m["f1"],
                  "threshold": t, "n_pos": m["n_pos"], "n": m["n"]}
    aucs = [v["roc_auc"] for v in per.values() if np.isfinite(v["roc_auc"])]
    return {"n_val": len(val), "n_test": len(test), "findings": per,
            "mean_roc_auc": float(np.mean(aucs)) if aucs else float("nan")}


def scores_table(scores: dict) -> pd.DataFrame:
    """One row per operating point (:func:`evaluate_binary`: threshold and :data:`CI_METRICS`)
    or per finding (:func:`evaluate_multilabel`)."""
    if "operating_points" in scores:
        return pd.DataFrame({name: {k: op[k] for k in ["threshold", *CI_METRICS]}
                             for name, op in scores["operating_points"].items()}).T
    return pd.DataFrame(scores["findings"]).T


def jsonable(obj):
    """``obj`` with NaN/inf floats replaced by None (``pneumoloc.storage.save_json`` refuses NaN, as JSON does)."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
