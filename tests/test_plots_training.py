"""Notebook 02 figures: bands bracket the point curve; every figure function returns a figure."""
import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from pneumoloc.evaluate.classification import roc_curve  # noqa: E402
from pneumoloc.plots.training import (GRID, confusion_figure, curve_band, finding_auroc_figure, learning_curves,
                                      pr_figure, roc_figure)


def _pred(n=120, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return pd.DataFrame({"label": y, "prob": np.clip(0.3 * y + rng.random(n) * 0.7, 0, 1),
                         "patient_id": [str(i // 2) for i in range(n)]})


def test_roc_band_brackets_most_of_the_point_curve_and_is_seeded():
    d = _pred()
    grid, low, high = curve_band(d.label, d.prob, d.patient_id, "roc", n_boot=200, seed=1)
    fpr, tpr, _ = roc_curve(d.label, d.prob)
    point = np.interp(GRID, fpr, tpr)
    inside = (low - 1e-9 <= point) & (point <= high + 1e-9)
    assert inside.mean() > 0.9 and (high >= low).all()
    again = curve_band(d.label, d.prob, d.patient_id, "roc", n_boot=200, seed=1)
    np.testing.assert_array_equal(low, again[1])


@pytest.mark.parametrize("kind", ["roc", "pr"])
def test_band_is_within_unit_interval(kind):
    d = _pred(seed=2)
    _, low, high = curve_band(d.label, d.prob, d.patient_id, kind, n_boot=50)
    assert (low >= 0).all() and (high <= 1).all()


def test_figures_render():
    d = _pred()
    hist = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [0.5, 0.4, 0.3], "val_loss": [0.6, 0.5, 0.5],
                         "val_roc_auc": [0.7, 0.8, 0.79], "lr": [1e-3, 1e-3, 5e-4]})
    figs = [learning_curves(hist, "x"), roc_figure({"test": d}, n_boot=20), pr_figure({"test": d}, n_boot=20),
            confusion_figure(d.label, d.prob, 0.5),
            finding_auroc_figure({"A": {"roc_auc": 0.7, "roc_auc_ci95": [0.6, 0.8]},
                                  "B": {"roc_auc": float("nan"), "roc_auc_ci95": [float("nan")] * 2}})]
    assert all(hasattr(f, "savefig") for f in figs)
    texts = [t.get_text() for t in figs[3].axes[0].texts]
    tn = int(((d.label == 0) & (d.prob < 0.5)).sum())
    assert texts[0].startswith(str(tn))
