"""Notebook 06's computation: energy and pointing on marker vs lesion boxes, reliance, the summary."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from pneumoloc.localize.shortcut import (conclusion_markdown, marker_reliance, reveals_shortcut, shortcut_scores,
                                         shortcut_summary, stored_name)


def _images(n: int) -> pd.DataFrame:
    return pd.DataFrame({"image_id": [f"i{k}" for k in range(n)], "patient_id": [f"p{k}" for k in range(n)],
                         "label": [1] * n, "width": 100, "height": 100})


def test_energy_and_pointing_on_hand_made_maps():
    """10 x 10 maps of 100 px images: a cell is 10 px; a box covers the cells whose centre it holds."""
    images = _images(3)
    marker = pd.DataFrame({"image_id": ["i0", "i2"], "x": [0, 0], "y": [0, 0], "w": [20, 20], "h": [20, 20]})
    lesion = pd.DataFrame({"image_id": ["i0"], "x": [50], "y": [50], "w": [30], "h": [30]})
    maps = np.zeros((3, 10, 10), np.float32)
    maps[0, :2, :2] = 1.0  # 4 marker cells
    maps[0, 5:8, 5:8] = 0.5  # 9 lesion cells
    maps[1] = 0.3  # no box of either kind
    out = shortcut_scores(maps, images, lesion, marker)  # i2: an all-zero map
    assert out["marker"].tolist() == [1, 0, 1]
    assert out.loc[0, "energy_marker"] == pytest.approx(4 / 8.5, abs=1e-12)
    assert out.loc[0, "energy_lesion"] == pytest.approx(4.5 / 8.5, abs=1e-12)
    assert (out.loc[0, "point_marker"], out.loc[0, "point_lesion"]) == (1.0, 0.0)
    assert out.loc[[1, 2], ["energy_marker", "energy_lesion", "point_marker", "point_lesion"]].isna().all().all()


def _study_inputs(reliance_shortcut: float, marker_energy: dict[str, float], n: int = 60, seed: int = 0):
    """Synthetic predictions, scores and reliance of both models on n test (and n val) patients."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n // 2, int), np.zeros(n - n // 2, int)]
    ids = [f"i{k}" for k in range(n)]
    preds = []
    for model in ("shortcut", "clean"):
        for split in ("val", "test"):
            # clean model separates the classes; shortcut model only on val (its marker holds there)
            good = model == "clean" or split == "val"
            p = np.clip(0.5 + (0.3 if good else 0.0) * (2 * y - 1) + 0.2 * rng.standard_normal(n), 0, 1)
            for images in ("shortcut", "clean"):  # the same image with or without marker: the same output
                preds.append(pd.DataFrame({"model": model, "images": images, "split": split, "image_id": ids,
                                           "patient_id": [f"p{k}" for k in range(n)], "label": y, "prob": p}))
    predictions = pd.concat(preds, ignore_index=True)
    marked = ids[::2]
    test = predictions["split"] == "test"
    bump = (predictions["images"] == "shortcut") & (predictions["model"] == "shortcut") & test \
        & predictions["image_id"].isin(marked)
    predictions.loc[bump, "prob"] = np.clip(predictions.loc[bump, "prob"] + reliance_shortcut, 0, 1)
    scores = []
    for model, e in marker_energy.items():
        scores.append(pd.DataFrame({
            "image_id": ids, "patient_id": [f"p{k}" for k in range(n)], "label": y,
            "marker": [int(i in marked) for i in ids],
            "energy_marker": [e + 0.02 * rng.standard_normal() if i in marked else np.nan for i in ids],
            "energy_lesion": np.where(y == 1, 0.3, np.nan),
            "point_marker": [1.0 if i in marked else np.nan for i in ids],
            "point_lesion": np.where(y == 1, 0.5, np.nan), "model": model}))
    scores = pd.concat(scores, ignore_index=True)
    return predictions, scores, marker_reliance(predictions, marked)


def test_summary_numbers_match_independent_computations_and_the_verdict_follows_them():
    predictions, scores, reliance = _study_inputs(0.3, {"shortcut": 0.4, "clean": 0.05})
    summary = shortcut_summary(predictions, scores, reliance, n_boot=100, seed=0)
    def row(quantity: str, model: str | None = None) -> pd.Series:
        sel = (summary["quantity"] == quantity) & ((summary["model"] == model) if model else True)
        return summary[sel & summary["images"].isin([model, "own", "both"])].iloc[0]

    own = {v: predictions[(predictions["model"] == v) & (predictions["images"] == v)
                          & (predictions["split"] == "test")] for v in ("shortcut", "clean")}
    for v in ("shortcut", "clean"):
        assert row("test_roc_auc", v)["value"] == pytest.approx(roc_auc_score(own[v]["label"], own[v]["prob"]))
    assert row("test_roc_auc_drop (clean - shortcut)")["value"] == pytest.approx(
        roc_auc_score(own["clean"]["label"], own["clean"]["prob"])
        - roc_auc_score(own["shortcut"]["label"], own["shortcut"]["prob"]))
    marked = scores[(scores["marker"] == 1)]
    expected = (marked[marked["model"] == "shortcut"]["energy_marker"].mean()
                - marked[marked["model"] == "clean"]["energy_marker"].mean())
    assert row("energy_on_marker (shortcut - clean)")["value"] == pytest.approx(expected)
    assert row("marker_reliance", "clean")["value"] == pytest.approx(0.0, abs=1e-12)
    assert row("marker_reliance", "shortcut")["value"] > 0.2
    assert row("marker_reliance (shortcut - clean)")["value"] == pytest.approx(
        reliance.groupby("model")["reliance"].mean().pipe(lambda m: m["shortcut"] - m["clean"]))
    assert ((summary["low"] <= summary["value"]) & (summary["value"] <= summary["high"])).all()
    assert reveals_shortcut(summary) == {"model_uses_marker": True, "map_reveals_marker": True}
    text = conclusion_markdown(summary, {"shortcut": False, "clean": False})
    assert text.startswith("**Does the map reveal the shortcut? Yes.**") and "flags neither model" in text
    assert f"{100 * row('energy_on_marker', 'shortcut')['value']:.1f}%" in text


def test_no_reliance_and_equal_marker_energy_give_no():
    predictions, scores, reliance = _study_inputs(0.0, {"shortcut": 0.05, "clean": 0.05})
    summary = shortcut_summary(predictions, scores, reliance, n_boot=100, seed=0)
    assert reveals_shortcut(summary) == {"model_uses_marker": False, "map_reveals_marker": False}
    assert conclusion_markdown(summary).startswith("**Does the map reveal the shortcut? No.**")


def test_reliance_is_marked_minus_unmarked_on_marked_test_images_only():
    predictions = pd.DataFrame({
        "model": ["shortcut"] * 4, "images": ["shortcut", "clean"] * 2, "split": ["test"] * 4,
        "image_id": ["a", "a", "b", "b"], "patient_id": ["p", "p", "q", "q"], "label": [1, 1, 0, 0],
        "prob": [0.9, 0.4, 0.7, 0.6]})
    out = marker_reliance(predictions, ["a"])
    assert out["image_id"].tolist() == ["a"] and out["reliance"].iloc[0] == pytest.approx(0.5)


def test_maps_of_another_layer_are_stored_under_their_own_name():
    assert stored_name("gradcam") == "gradcam"
    assert stored_name("gradcam", "backbone.layer3") == "gradcam@layer3"
    assert stored_name("gradcam", "backbone.layer3+backbone.layer4") == "gradcam@layer3+layer4"
