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

    from pneumoloc.ensembles.report import EnsembleMaps
    from pneumoloc.localize.ground_truth import GroundTruth
    from pneumoloc.localize.metrics import boxes_by_image
    from pneumoloc.plots.ensembles import plot_contrast_cases

    ids = [f"i{k}" for k in range(4)]
    for i in ids:
        Image.fromarray(np.full((20, 30), 90, np.uint8)).save(tmp_path / f"{i}.png")
    images = pd.DataFrame({"image_id": ids, "patient_id": ids, "path": [str(tmp_path / f"{i}.png") for i in ids],
                           "label": [1, 0, 1, 0], "width": 30, "height": 20})
    boxes = pd.DataFrame({"image_id": ["i0", "i2"], "x": [3.0, 6.0], "y": [2.0, 4.0], "w": [9.0, 6.0], "h": [8.0, 4.0]})
    gt = GroundTruth(images, boxes_by_image(boxes, ids), np.zeros((4, 8, 8), bool), None)
    maps = np.random.default_rng(0).random((2, 4, 8, 8))

    def ensemble_maps(agreement):
        return EnsembleMaps(method="gradcam", split="test", members=["a", "b"], image_ids=np.array(ids),
                            member_maps=maps, ensemble_maps={"ens_mean": maps.mean(0)},
                            weights={"mean": np.ones(2) / 2},
                            agreement=pd.DataFrame(), spread=maps.std(0), per_image_agreement=agreement, gt=gt,
                            n_requested=4)

    fig = plot_contrast_cases(ensemble_maps(np.array([0.2, 0.9, 0.7, 0.1])), "ens_mean", 2)
    titles = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]  # one row per case, labelled by its id
    assert any("i0" in t for t in titles) and any("i2" in t for t in titles)  # boxed images first
    assert [" ".join(ax.get_title().split()) for ax in fig.axes[:4]] == ["a", "b", "ensemble", "spread (sd)"]
    assert plot_contrast_cases(ensemble_maps(np.full(4, np.nan)), "ens_mean", 2) is None


def test_efficiency_frontier_figure_has_a_panel_per_cost_and_score():
    import matplotlib

    matplotlib.use("Agg")
    from pneumoloc.plots.ensembles import plot_efficiency_frontier

    frontier = pd.DataFrame({"params": [1e6, 2e6, 3e6], "latency_ms": [1.0, 3.0, 4.0], "roc_auc": [0.7, 0.8, 0.9],
                             "hit": [0.5, 0.4, 0.6], "kind": "member", "device": "cpu", "threads": 1, "hardware": "x"},
                            index=["mobilenet_v3", "resnet18", "ens_mean"])
    fig = plot_efficiency_frontier(frontier, highlight=["mobilenet_v3"])
    labels = [(ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes]  # costs label the bottom row, scores the left column
    assert labels == [("", "ROC-AUC"), ("", ""), ("parameters", "hit rate"), ("latency (ms)", "")]
    legend = [t.get_text() for lg in fig.legends for t in lg.get_texts()]  # one legend names every system
    assert {"ResNet-18", "MobileNet-V3", "ensemble: mean", "Pareto frontier", "highlighted"} <= set(legend)


def test_describe_names_the_reference_and_the_greedy_picks(fit):
    preds, sy = fit
    assert sy.describe() == (f"best single model on validation: {sy.reference} "
                             f"(val ROC-AUC {sy.val_auc[sy.reference]:.3f})")
    greedy = summary.fit_systems(preds, ["greedy"])
    picks = greedy.fitted["greedy"].params["picks"][: greedy.fitted["greedy"].params["n_selected"]]
    assert greedy.describe().splitlines()[1] == f"greedy picks (in order): {picks}"


def test_save_systems_writes_every_systems_predictions_and_the_fit(fit, tmp_path):
    import json

    preds, sy = fit
    summary.save_systems(tmp_path / "ens", preds, sy, {"n_boot": 5})
    table = pd.read_csv(tmp_path / "ens" / "predictions.csv")
    assert len(table) == 7 * (len(preds.labels("val")) + len(preds.labels("test")))
    stored = json.loads((tmp_path / "ens" / "ensembles.json").read_text())
    assert stored["members"] == ["m1", "m2", "m3"] and stored["reference"] == sy.reference
    assert stored["val_roc_auc"] == pytest.approx(sy.val_auc.to_dict())
    assert stored["combiners"]["auto_auc"]["weights"] == pytest.approx(sy.fitted["auto_auc"].weights.tolist())
    assert stored["parameters"] == {"n_boot": 5} and stored["provenance"]["git_commit"]
    assert set(stored["member_checkpoints"]) == {"m1", "m2", "m3"}


def test_mobilenet_claim_counts_frontiers_or_says_there_is_none():
    frontier = pd.DataFrame({"front_params_roc_auc": [True, False], "front_latency_ms_roc_auc": [True, True]},
                            index=["mobilenet_v3", "resnet18"])
    assert summary.mobilenet_claim(frontier, ["mobilenet_v3"]) == \
        "MobileNet claim: {'mobilenet_v3': 'on 2 of 2 frontiers'}"
    assert summary.mobilenet_claim(frontier, []) == "MobileNet claim: no MobileNet among the members of this run"


def test_save_summary_writes_the_numbers_and_the_captioned_latex(tmp_path):
    table = pd.DataFrame({"roc_auc": [0.8, 0.9]}, index=["a", "ens_mean"])
    pretty = pd.DataFrame({"ROC-AUC": ["0.800 [0.700, 0.900]", "0.900"], "Δ vs a": ["0.000", "0.100"]},
                          index=["a", "ens_mean"])
    caption = summary.summary_caption("tiny_run", "gradcam", 50)
    assert caption.startswith("Ensembles vs members on test (tiny_run, maps: gradcam); 95\\% CIs")
    assert "(50 resamples)" in caption
    timed = summary.summary_caption("tiny_run", "gradcam", 50, "latency on cpu (x86), 1 torch thread")
    assert timed.endswith("validation; latency on cpu (x86), 1 torch thread.")
    summary.save_summary(tmp_path, table, pretty, caption)
    assert pd.read_csv(tmp_path / "summary.csv")["system"].tolist() == ["a", "ens_mean"]
    assert (tmp_path / "summary.tex").read_text() == summary.summary_latex(pretty, caption)
    assert "tiny\\_run" in (tmp_path / "summary.tex").read_text()
