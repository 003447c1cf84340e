"""Figures of notebooks 02-05 readable printed in a paper: line plots, bars, scatter and tables
one column wide (3.5 in), image grids at most two columns (7.16 in) and 9 in tall, no text under
6 pt, no text over text (checked through the renderer, :mod:`figure_checks`), on inputs as large
as the demo's (seven backbones, five ensembles, five methods)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from figure_checks import assert_readable
from pneumoloc.plots.style import COLUMN_IN, TWO_COLUMN_IN

SEVEN = ["resnet18", "resnet50", "densenet121", "efficientnet_b0", "mobilenet_v2", "mobilenet_v3", "vit_b_16"]
ENSEMBLES = ["ens_mean", "ens_auto_auc", "ens_vote", "ens_stacking", "ens_greedy"]
SYSTEMS = SEVEN + ENSEMBLES
RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


# --- notebook 02 -----------------------------------------------------------------------------

def _predictions(n=120):
    y = RNG.integers(0, 2, n)
    return pd.DataFrame({"label": y, "prob": np.clip(0.3 * y + RNG.uniform(0, 0.7, n), 0, 1),
                         "patient_id": np.arange(n) // 2})


def test_learning_curves_are_one_column():
    from pneumoloc.plots.training import learning_curves

    hist = pd.DataFrame({"epoch": np.arange(1, 16), "train_loss": np.linspace(0.7, 0.1, 15),
                         "val_loss": np.linspace(0.7, 0.3, 15), "val_roc_auc": np.linspace(0.6, 0.97, 15),
                         "lr": np.r_[np.linspace(1e-4, 3e-3, 3), np.linspace(3e-3, 1e-5, 12)]})
    assert_readable(learning_curves(hist, title="efficientnet_b0"), COLUMN_IN)


@pytest.mark.parametrize("kind", ["roc", "pr"])
def test_roc_and_pr_curves_are_one_column(kind):
    from pneumoloc.plots.training import pr_figure, roc_figure

    draw = roc_figure if kind == "roc" else pr_figure
    assert_readable(draw({"val": _predictions(), "test": _predictions()}, n_boot=20,
                          title="efficientnet_b0 " + kind), COLUMN_IN)


def test_confusion_matrix_is_one_column():
    from pneumoloc.plots.training import confusion_figure

    d = _predictions()
    assert_readable(confusion_figure(d.label, d.prob, 0.512, title="efficientnet_b0 test, specificity (t=0.512)"),
                     COLUMN_IN)


# --- notebook 05 -----------------------------------------------------------------------------

def _frontier() -> pd.DataFrame:
    params = dict(zip(SEVEN, [11.2e6, 23.5e6, 6.9e6, 4.0e6, 2.2e6, 4.2e6, 85.3e6]))
    lat = dict(zip(SEVEN, [17.0, 28.5, 31.0, 13.6, 8.6, 8.4, 76.4]))
    rows = [{"system": m, "params": params[m], "latency_ms": lat[m], "roc_auc": RNG.uniform(0.55, 0.97),
             "hit": RNG.uniform(0, 0.3), "auprc": RNG.uniform(0.08, 0.27), "lar": RNG.uniform(0.1, 0.4)} for m in SEVEN]
    same = {"roc_auc": 0.972, "hit": 0.109, "auprc": 0.157, "lar": 0.316}  # ensembles of the same members coincide
    rows += [{"system": e, "params": 137.3e6, "latency_ms": 183.4, **same} for e in ENSEMBLES[:4]]
    rows += [{"system": "ens_greedy", "params": 18.1e6, "latency_ms": 47.9, "roc_auc": 0.972, "hit": 0.299,
              "auprc": 0.268, "lar": 0.367}]
    return pd.DataFrame(rows)


def test_efficiency_frontier_is_one_column_without_label_overlaps():
    from pneumoloc.plots.ensembles import plot_frontier

    fig = plot_frontier(_frontier(), ["params", "latency_ms"], ["roc_auc", "hit", "auprc", "lar"], label="system",
                        highlight=["mobilenet_v2", "mobilenet_v3"],
                        note="latency on cpu (Intel(R) Xeon(R) Processor), 1 torch thread (batch-1 median forward pass)")
    assert_readable(fig, COLUMN_IN)


def test_efficiency_frontier_log_axes_label_decades_only_on_a_narrow_span():
    """The demo's members span under two decades of parameters (2.2M-57M), where matplotlib would
    label the log axis's minor ticks (2x10^6, 3x10^6, ...) on top of each other."""
    from pneumoloc.plots.ensembles import plot_frontier

    t = _frontier()
    t.loc[t.system.str.startswith("ens_"), ["params", "latency_ms"]] = [57.5e6, 167.2]
    t.loc[t.system == "vit_b_16", ["params", "latency_ms"]] = [5.4e6, 11.5]
    fig = plot_frontier(t, ["params", "latency_ms"], ["roc_auc", "hit", "auprc", "lar"], label="system",
                        highlight=["mobilenet_v2", "mobilenet_v3"], note="latency on cpu, 1 torch thread")
    assert_readable(fig, COLUMN_IN)


def _ci(v):
    return f"{v:.3f} [{v - 0.03:.3f}, {v + 0.02:.3f}]"


def _summary_pretty() -> pd.DataFrame:
    rows = {}
    for s in SYSTEMS:
        member = not s.startswith("ens_")
        rows[s] = {"kind": "member" if member else "ensemble",
                   "recipe": "r-5f2ec6" if member else "mixed: r-5f2ec6 + r-9ec144 + r-782bb3 + r-cfcc48 + r-cd5ef0",
                   "undertrained": ("yes" if s in SEVEN[3:] else "") if member else
                   "members efficientnet_b0, mobilenet_v2, mobilenet_v3, resnet50, vit_b_16",
                   "ROC-AUC": _ci(0.97), "Δ vs resnet18": _ci(-0.415), "DeLong p": "0.002", "PR-AUC": _ci(0.966),
                   "F1": _ci(0.64), "ECE": "0.287", "params (M)": "137.327", "latency (ms)": "183.377",
                   "hit rate": _ci(0.312), "loc. AUPRC": _ci(0.274)}
    return pd.DataFrame.from_dict(rows, orient="index")


def test_summary_table_is_one_column():
    from pneumoloc.plots.ensembles import plot_summary_table

    fig = plot_summary_table(_summary_pretty(), "demo: ensembles vs members (test); latency on cpu "
                                                 "(Intel(R) Xeon(R) Processor), 1 torch thread")
    assert_readable(fig, COLUMN_IN)


def test_localization_of_twelve_systems_in_six_metrics_is_one_column():
    from pneumoloc.plots.ensembles import plot_localization

    rows = [{"system": s, "metric": m, "n": 117, "value": v, "low": v - 0.05, "high": v + 0.05}
            for m in ["hit", "energy", "auprc", "lung_energy", "lar", "iou@otsu"] for s in SYSTEMS
            for v in [RNG.uniform(0.05, 0.4)]]
    assert_readable(plot_localization(pd.DataFrame(rows), "resnet18"), COLUMN_IN)


def test_forest_plot_of_twelve_systems_is_one_column():
    from pneumoloc.plots.ensembles import plot_differences

    d = RNG.uniform(-0.4, 0.01, len(SYSTEMS))
    cls = pd.DataFrame({"system": SYSTEMS, "d_roc_auc": d, "d_roc_auc_low": d - 0.05, "d_roc_auc_high": d + 0.04,
                        "delong_p": RNG.uniform(0, 1, len(SYSTEMS))})
    assert_readable(plot_differences(cls, "roc_auc", "resnet18"), COLUMN_IN)


def test_member_matrix_is_one_column():
    from pneumoloc.plots.ensembles import plot_matrix

    mat = pd.DataFrame(RNG.uniform(-1, 1, (7, 7)), index=SEVEN, columns=SEVEN)
    assert_readable(plot_matrix(mat, "map agreement: mean per-image Spearman (gradcam)"), COLUMN_IN)


def test_reliability_of_twelve_systems_is_one_column():
    from pneumoloc.evaluate.calibration import reliability_table
    from pneumoloc.plots.ensembles import plot_reliability

    d = _predictions(200)
    tables = {s: reliability_table(d.label.to_numpy(), d.prob.to_numpy(), 10) for s in SYSTEMS}
    assert_readable(plot_reliability(tables, {s: 0.287 for s in SYSTEMS}), COLUMN_IN)


def test_map_cases_of_seven_members_are_at_most_two_columns():
    from pneumoloc.plots.ensembles import plot_map_cases

    maps = RNG.random((7, 4, 16, 16))
    titles = [f"PH00{k}55_3\nlabel 1\nagreement 0.{k}2" for k in range(4)]
    fig = plot_map_cases(maps, SEVEN, maps.mean(0), maps.std(0), titles, images=RNG.random((4, 64, 64)),
                         boxes=[np.array([[2, 2, 5, 5]])] * 4)
    assert_readable(fig, TWO_COLUMN_IN)


# --- notebook 03 and 04's image grids ---------------------------------------------------------

class _Maps:
    """A stored-maps stand-in: ``take(ids)`` returns one map per id."""

    def __init__(self, size=16):
        self.size = size

    def take(self, ids):
        return RNG.random((len(ids), self.size, self.size))


def _cases(n_per_outcome=2):
    from pneumoloc.plots.gallery import CaseData

    outcomes = np.repeat(["TP", "FP", "FN", "TN"], n_per_outcome)
    ids = [f"PH00{k:03d}_{k % 4}" for k in range(len(outcomes))]
    cases = pd.DataFrame({"image_id": ids, "outcome": outcomes, "label": np.isin(outcomes, ["TP", "FN"]).astype(int),
                          "prob": RNG.uniform(0, 1, len(ids))})
    lungs = np.zeros((len(ids), 48, 48), bool)
    lungs[:, 8:40, 6:20] = lungs[:, 8:40, 28:42] = True
    data = CaseData(np.asarray(ids), RNG.integers(0, 255, (len(ids), 48, 48), dtype=np.uint8),
                    [np.array([[8.0, 10, 10, 12]])] * len(ids), lungs)
    return cases, data


@pytest.mark.parametrize("columns", [
    ["gradcam", "gradcam++", "hirescam", "gradient", "guided_gradcam", "gradcam@layer3", "gradcam@layer3+4"], SEVEN])
def test_gallery_of_seven_columns_and_eight_cases_is_at_most_two_columns_and_nine_inches(columns):
    from pneumoloc.plots.gallery import gallery_figure

    cases, data = _cases()
    probs = {c: dict(zip(cases.image_id, cases.prob)) for c in columns}
    fig = gallery_figure(cases, {c: _Maps() for c in columns}, data, probs=probs, contour=0.5,
                         title="resnet18: test cases by outcome (columns: methods)")
    assert_readable(fig, TWO_COLUMN_IN)


def test_worst_cases_of_35_systems_are_at_most_two_columns_and_say_how_many_are_shown():
    from pneumoloc.plots.localization import failure_gallery

    systems = [(m, k) for m in SEVEN for k in ["gradcam", "gradcam++", "hirescam", "gradient", "guided_gradcam"]]
    rows = pd.DataFrame([{"model": m, "method": k, "image_id": f"PH{i:05d}_0", "value": 0.01 * i, "prob": 0.9}
                         for i, (m, k) in enumerate(systems * 4)])
    n = len(rows)
    masks = np.zeros((n, 16, 16), bool)
    masks[:, 4:9, 4:9] = True
    fig = failure_gallery(rows, RNG.random((n, 48, 48)), RNG.random((n, 16, 16)), masks, masks, metric="energy")
    assert_readable(fig, TWO_COLUMN_IN)
    assert f"of {n}" in fig._suptitle.get_text()


def test_lar_distribution_of_35_systems_is_one_column():
    from pneumoloc.plots.localization import lar_distribution

    rows = [{"model": m, "method": k, "variant": "maps", "metric": "lar", "value": v}
            for m in SEVEN for k in ["gradcam", "gradcam++", "hirescam", "gradient", "guided_gradcam"]
            for v in RNG.uniform(0, 1, 30)]
    assert_readable(lar_distribution(pd.DataFrame(rows)), COLUMN_IN)


def test_member_matrices_follow_the_one_model_order():
    from pneumoloc.plots.ensembles import plot_matrix
    from pneumoloc.plots.style import model_label, model_order

    names = sorted(SEVEN)  # e.g. a correlation computed over alphabetically sorted members
    values = RNG.uniform(-1, 1, (7, 7))
    fig = plot_matrix(pd.DataFrame(values, index=names, columns=names), "error correlation (test)")
    ax = fig.axes[0]
    shown = [t.get_text() for t in ax.get_yticklabels()]
    assert shown == [model_label(m) for m in model_order(names)] != [model_label(m) for m in names]
    i, j = model_order(names)[0], model_order(names)[1]
    cell = ax.images[0].get_array()[0, 1]
    assert cell == values[names.index(i), names.index(j)]  # the values moved with their labels

