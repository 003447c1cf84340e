"""Metrics and thresholds checked against scikit-learn and hand-worked cases."""
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from pneumoloc.evaluate.classification import (average_precision, best_f1_threshold, binary_metrics, confusion,
                                               evaluate_binary, evaluate_multilabel, metrics_with_ci, pr_curve,
                                               roc_auc, roc_curve, threshold_for_specificity)


def _data(n=200, seed=0, ties=False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(0.3 * y + rng.normal(0.35, 0.25, n), 0, 1)
    return y, (np.round(p, 1) if ties else p)


@pytest.mark.parametrize("ties", [False, True])
def test_curves_and_aucs_match_sklearn(ties):
    y, p = _data(ties=ties)
    assert roc_auc(y, p) == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
    assert average_precision(y, p) == pytest.approx(skm.average_precision_score(y, p), abs=1e-12)
    fpr, tpr, thr = roc_curve(y, p)
    rf, rt, rth = skm.roc_curve(y, p, drop_intermediate=False)
    np.testing.assert_allclose(fpr, rf)
    np.testing.assert_allclose(tpr, rt)
    np.testing.assert_allclose(thr[1:], rth[1:])
    prec, rec, pthr = pr_curve(y, p)
    sp, sr, st_ = skm.precision_recall_curve(y, p)
    # scikit-learn >= 1.1 keeps thresholds past full recall; compare the common tail
    n = len(pthr)
    np.testing.assert_allclose(prec[-n - 1:], sp[-n - 1:])
    np.testing.assert_allclose(rec[-n - 1:], sr[-n - 1:])


@pytest.mark.parametrize("threshold", [0.2, 0.5, 0.7])
def test_binary_metrics_match_sklearn(threshold):
    y, p = _data()
    m = binary_metrics(y, p, threshold)
    pred = (p >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred).ravel()
    assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (tn, fp, fn, tp)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["precision"] == pytest.approx(skm.precision_score(y, pred, zero_division=0))
    assert m["recall"] == pytest.approx(skm.recall_score(y, pred))
    assert m["specificity"] == pytest.approx(skm.recall_score(1 - y, 1 - pred))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(y, p))


def test_hand_worked_case():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.6, 0.4, 0.8])
    m = binary_metrics(y, p, 0.5)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (1, 1, 1, 1)
    assert m["roc_auc"] == 0.75  # 3 of 4 positive-negative pairs ordered correctly
    assert confusion(y, p >= 0.5).tolist() == [[1, 1], [1, 1]]
    assert threshold_for_specificity(y, p, 1.0) == 0.8  # lowest observed p above every negative
    assert threshold_for_specificity(y, p, 0.5) == 0.4  # lowest t with 1 of 2 negatives below it
    assert best_f1_threshold(y, p) == 0.4  # F1 = 0.8 at t = 0.4 (tp 2, fp 1)


def test_degenerate_inputs():
    m = binary_metrics([1, 1, 1], [0.2, 0.6, 0.9], 0.5)
    assert np.isnan(m["roc_auc"]) and m["specificity"] == 0.0
    assert binary_metrics([0, 1, np.nan], [0.1, 0.9, 0.5])["n"] == 2  # NaN label = not scored
    with pytest.raises(ValueError, match="negative"):
        threshold_for_specificity([1, 1], [0.1, 0.2], 0.9)
    with pytest.raises(ValueError, match="positive"):
        best_f1_threshold([0, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="length"):
        binary_metrics([0, 1], [0.1])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 20)), min_size=4, max_size=40),
       st.floats(0.0, 1.0))
def test_thresholds_against_brute_force_with_sklearn(pairs, target):
    y = np.array([a for a, _ in pairs])
    p = np.array([b / 20 for _, b in pairs])
    if y.min() == y.max():
        return
    t = threshold_for_specificity(y, p, target)
    spec = lambda th: skm.recall_score(1 - y, (p < th).astype(int))  # noqa: E731
    assert spec(t) >= target - 1e-12
    lower = [c for c in np.unique(p) if c < t]
    assert all(spec(c) < target - 1e-12 for c in lower)  # t is the lowest that reaches the target
    f1 = lambda th: skm.f1_score(y, (p >= th).astype(int), zero_division=0)  # noqa: E731
    best = best_f1_threshold(y, p)
    assert f1(best) == pytest.approx(max(f1(c) for c in np.unique(p)))


def _pred(seed=0, n_pat=60):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_pat):
        lab = int(rng.random() < 0.6)
        for j in range(rng.integers(1, 4)):
            rows.append({"image_id": f"{i}_{j}", "patient_id": str(i), "label": lab,
                         "prob": float(np.clip(0.4 * lab + rng.normal(0.3, 0.2), 0, 1)),
                         "split": "val" if i % 2 else "test"})
    return pd.DataFrame(rows)


def test_evaluate_binary_uses_validation_thresholds_on_test():
    pred = _pred()
    out = evaluate_binary(pred, spec_target=0.9, n_boot=100)
    val = pred[pred.split == "val"]
    test = pred[pred.split == "test"]
    sp = out["operating_points"]["specificity"]
    assert sp["threshold"] == threshold_for_specificity(val.label, val.prob, 0.9)
    assert sp["f1"] == binary_metrics(test.label, test.prob, sp["threshold"])["f1"]
    assert out["operating_points"]["best_f1"]["threshold"] == best_f1_threshold(val.label, val.prob)
    lo, hi = sp["ci95"]["roc_auc"]
    assert lo <= sp["roc_auc"] <= hi and hi - lo > 0


def test_ci_table_brackets_point_and_is_seeded():
    pred = _pred(1)
    a = metrics_with_ci(pred.label, pred.prob, pred.patient_id, 0.5, n_boot=200, seed=3)
    b = metrics_with_ci(pred.label, pred.prob, pred.patient_id, 0.5, n_boot=200, seed=3)
    pd.testing.assert_frame_equal(a, b)
    assert ((a.low <= a.value + 1e-12) & (a.value <= a.high + 1e-12)).all()


def test_evaluate_multilabel_per_finding_matches_sklearn_and_masks_nan():
    rng = np.random.default_rng(0)
    n = 120
    df = pd.DataFrame({"image_id": [str(i) for i in range(n)], "patient_id": [str(i // 2) for i in range(n)],
                       "split": np.where(np.arange(n) % 3 == 0, "val", "test")})
    for f in ("A", "B"):
        y = rng.integers(0, 2, n).astype(float)
        df[f"label_{f}"] = y
        df[f"prob_{f}"] = np.clip(0.3 * y + rng.random(n) * 0.7, 0, 1)
    df.loc[::5, "label_B"] = np.nan
    out = evaluate_multilabel(df, ["A", "B"], n_boot=50)
    test = df[df.split == "test"]
    keep = test.label_B.notna()
    assert out["findings"]["B"]["roc_auc"] == pytest.approx(skm.roc_auc_score(test.label_B[keep], test.prob_B[keep]))
    assert out["findings"]["A"]["n"] == len(test)
    assert out["mean_roc_auc"] == pytest.approx(np.mean([out["findings"][f]["roc_auc"] for f in "AB"]))


def test_jsonable_replaces_nan_for_strict_json():
    import json

    from pneumoloc.evaluate.classification import jsonable
    out = jsonable({"a": float("nan"), "b": [np.float32(0.5), np.int64(3)], "c": {"d": float("inf")}})
    assert json.loads(json.dumps(out, allow_nan=False)) == {"a": None, "b": [0.5, 3], "c": {"d": None}}


def test_scores_table_has_one_row_per_operating_point_or_finding():
    import pandas as pd

    from pneumoloc.evaluate.classification import CI_METRICS, scores_table

    op = {k: 0.5 for k in ["threshold", *CI_METRICS]}
    table = scores_table({"operating_points": {"0.5": op, "best_f1": {**op, "extra": 1}}})
    assert list(table.index) == ["0.5", "best_f1"] and list(table.columns) == ["threshold", *CI_METRICS]
    per = scores_table({"findings": {"Effusion": {"roc_auc": 0.7, "f1": 0.4}}})
    assert isinstance(per, pd.DataFrame) and per.loc["Effusion", "roc_auc"] == 0.7
