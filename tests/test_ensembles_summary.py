"""Notebook 05's tables: systems, the efficiency frontier and the paper's summary."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_ensembles_combiners import synthetic_run

from pneumoloc.ensembles import summary
from pneumoloc.ensembles.combiners import best_single, fit_ensemble, member_auc
from pneumoloc.ensembles.report import load_predictions


@pytest.fixture
def fit(tmp_path):
    run, _ = synthetic_run(tmp_path, names=("m1", "m2", "m3"))
    preds = load_predictions(run, ["m1", "m2", "m3"])
    return preds, summary.fit_systems(preds, ["mean", "auto_auc", "vote", "stacking"])


def test_fit_systems_fits_on_validation_and_applies_to_test(fit):
    preds, sy = fit
    p_val, y_val = preds.probs("val"), preds.labels("val")
    assert sy.reference == best_single(p_val, y_val, ["m1", "m2", "m3"])
    assert sy.val_auc["m2"] == member_auc(y_val, p_val[:, 1])
    assert list(sy.test) == ["m1", "m2", "m3", "ens_mean", "ens_auto_auc", "ens_vote", "ens_stacking"]
    again = fit_ensemble("auto_auc", p_val, y_val, ["m1", "m2", "m3"]).predict(preds.probs("test"))
    np.testing.assert_array_equal(sy.test["ens_auto_auc"], again)
    table = summary.predictions_table(preds, {"val": sy.val, "test": sy.test})
    assert len(table) == 7 * (len(p_val) + len(preds.probs("test")))
    assert set(table.columns) == {"image_id", "patient_id", "label", "split", "system", "prob"}


def test_members_used_and_the_summed_cost_of_an_ensemble(fit):
    _, sy = fit
    used = summary.members_used(sy.fitted, sy.members)
    assert used["ens_vote"] == used["ens_stacking"] == ["m1", "m2", "m3"]
    costs = pd.DataFrame({"params": [1.0, 2.0, 4.0], "latency_ms": [1.0, 1.0, 1.0],
                          "ms_per_image_batched": [0.5, 0.5, 0.5]}, index=["m1", "m2", "m3"])
    cls = pd.DataFrame({"system": ["m1", "m2", "m3", *[f"ens_{c}" for c in sy.fitted]],
                        "roc_auc": [0.7, 0.8, 0.6, 0.85, 0.85, 0.8, 0.9]})
    loc = pd.DataFrame({"system": cls["system"], "metric": "hit", "value": np.linspace(0.1, 0.7, 7)})
    frontier = summary.efficiency_frontier(costs, sy.fitted, sy.members, cls, loc)
    assert frontier.loc["ens_vote", "params"] == 7.0 and frontier.loc["ens_mean", "params"] == 7.0
    assert frontier.loc["m1", "kind"] == "member" and frontier.loc["ens_mean", "kind"] == "ensemble"
    # m1 is the cheapest: always on the params frontier; m3 (costly, worst ROC-AUC) never on ROC-AUC's
    assert frontier.loc["m1", "front_params_roc_auc"] and not frontier.loc["m3", "front_params_roc_auc"]
    assert "front_latency_ms_hit" in frontier and "auprc" not in frontier
    assert summary.frontier_counts(frontier, ["m1"]) == {"m1": f"on {int(frontier.loc['m1', [c for c in frontier if c.startswith('front_')]].sum())} of 4 frontiers"}


def test_summary_table_joins_and_latex_escapes():
    systems = ["a", "ens_mean"]
    cls = pd.DataFrame({"system": systems, "roc_auc": [0.8, 0.9], "roc_auc_low": [0.7, 0.8],
                        "roc_auc_high": [0.9, 0.95], "d_roc_auc": [0.0, 0.1], "delong_p": [1.0, 0.04],
                        "pr_auc": [0.7, 0.8], "f1": [0.6, 0.7]})
    cal = pd.DataFrame({"ece": [0.1, 0.05]}, index=systems)
    frontier = pd.DataFrame({"kind": ["member", "ensemble"], "params": [2e6, 4e6], "latency_ms": [3.0, 6.0],
                             "hit": [0.5, 0.6]}, index=systems)
    loc = pd.DataFrame({"system": systems, "metric": "hit", "value": [0.5, 0.6], "low": [0.4, 0.5],
                        "high": [0.6, 0.7]})
    table, pretty = summary.summary_table(cls, cal, frontier, loc, reference="a")
    assert table.loc["ens_mean", "params"] == 4.0 and table.loc["a", "hit_low"] == 0.4
    assert list(pretty.columns) == ["kind", "ROC-AUC", "Δ vs a", "DeLong p", "PR-AUC", "F1", "ECE", "params (M)",
                                    "latency (ms)", "hit rate"]
    assert pretty.loc["a", "ROC-AUC"] == "0.800 [0.700, 0.900]"
    latex = summary.summary_latex(pretty, "run_x: test")
    assert "run\\_x" in latex and "diff. vs a" in latex and "\\label{tab:ensembles}" in latex


def test_contrast_case_figure_draws_the_chosen_images_or_nothing(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from PIL import Image

    from pneumoloc.data.tables import DatasetTables
    from pneumoloc.plots.ensembles import plot_contrast_cases

    ids = [f"i{k}" for k in range(4)]
    for i in ids:
        Image.fromarray(np.full((20, 30), 90, np.uint8)).save(tmp_path / f"{i}.png")
    images = pd.DataFrame({"image_id": ids, "patient_id": ids, "path": [str(tmp_path / f"{i}.png") for i in ids],
                           "label": [1, 0, 1, 0], "width": 30, "height": 20})
    boxes = pd.DataFrame({"image_id": ["i0", "i2"], "x": [3.0, 6.0], "y": [2.0, 4.0], "w": [9.0, 6.0], "h": [8.0, 4.0]})
    tables = DatasetTables(images, boxes, name="t", root=str(tmp_path))
    maps = np.random.default_rng(0).random((2, 4, 8, 8))
    fig = plot_contrast_cases(tables, np.array(ids), maps, ["a", "b"], maps.mean(0), maps.std(0),
                              np.array([0.2, 0.9, 0.7, 0.1]), 2)
    titles = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]  # one row per case, labelled by its id
    assert any("i0" in t for t in titles) and any("i2" in t for t in titles)  # boxed images first
    assert plot_contrast_cases(tables, np.array(ids), maps, ["a", "b"], maps.mean(0), maps.std(0),
                               np.full(4, np.nan), 2) is None
