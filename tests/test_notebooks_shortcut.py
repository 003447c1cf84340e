"""Notebook 06 on the tiny run (papermill_runs/tiny.yaml): its tables, figure and conclusion exist, numbers finite."""
import numpy as np
import pandas as pd
import pytest

pytestmark = [pytest.mark.notebooks, pytest.mark.xdist_group("notebooks")]


def test_notebook_06_writes_its_tables_figure_and_conclusion(tiny_run):
    root, manifest = tiny_run
    stage = [s for s in manifest["stages"] if s["notebook"].startswith("06_shortcut_study")]
    assert stage and stage[0]["status"] == "ok", stage
    study = root / "run" / "shortcut"
    summary = pd.read_csv(study / "summary.csv")
    expected = {"val_roc_auc", "test_roc_auc", "test_roc_auc_drop (clean - shortcut)", "marker_reliance",
                "marker_reliance (shortcut - clean)", "energy_on_marker", "energy_on_lesions", "pointing_on_marker",
                "pointing_on_lesions", "energy_on_marker (shortcut - clean)"}
    assert expected <= set(summary["quantity"])
    assert np.isfinite(summary[["value", "low", "high"]].to_numpy()).all()
    assert (summary["low"] <= summary["value"] + 1e-12).all() and (summary["value"] <= summary["high"] + 1e-12).all()
    for name in ("predictions.csv", "scores.csv", "reliance.csv", "sanity.csv", "shortcut/faithfulness.csv",
                 "clean/faithfulness.csv", "conclusion.md"):
        assert (study / name).exists(), name
    marked = pd.read_csv(study / "data" / "phantom_shortcut" / "markers.csv")
    assert len(marked) and not (study / "data" / "phantom_clean" / "markers.csv").exists()
    assert (study / "conclusion.md").read_text().startswith("**Does the map reveal the shortcut?")
    for ext in ("pdf", "png"):
        assert (root / "figures" / f"06_shortcut_map.{ext}").exists()
