"""Notebook 05's reading of a run: the members chosen, the ensemble maps and their ground truth."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from test_ensembles_combiners import synthetic_run

from pneumoloc.data.tables import DatasetTables, save_tables
from pneumoloc.ensembles import report
from pneumoloc.ensembles.combiners import ensemble_map, fit_ensemble
from pneumoloc.ensembles.diversity import map_agreement_matrix, per_image_agreement, pixel_spread
from pneumoloc.explain.stored import map_file, save_maps

SIZE = 8  # side of the stored maps


def test_ensemble_members_default_to_every_trained_model_and_need_two(tmp_path):
    run, _ = synthetic_run(tmp_path / "three", names=("m1", "m2", "m3"))
    assert report.ensemble_members(run) == ["m1", "m2", "m3"]
    assert report.ensemble_members(run, ["m3", "m1"]) == ["m3", "m1"]
    with pytest.raises(ValueError, match=r"needs >= 2 trained models.*'m1', 'm2', 'm3'"):
        report.ensemble_members(run, ["m2"])
    one, _ = synthetic_run(tmp_path / "one", names=("m1",))
    with pytest.raises(ValueError, match="train more with notebook 02"):
        report.ensemble_members(one, [])


def test_classification_headers_name_compare_systems_columns():
    rng = np.random.default_rng(1)
    y = np.tile([0, 1], 20)
    systems = {"a": np.clip(0.4 * y + 0.6 * rng.random(40), 0, 1), "b": rng.random(40)}
    cls = report.compare_systems(y, np.arange(40) // 2, systems, "a", n_boot=20)
    shown = report.format_ci(cls.set_index("system"), report.CLASSIFICATION_HEADERS)
    assert list(shown.columns) == list(report.CLASSIFICATION_HEADERS.values())
    r = cls.set_index("system").loc["b"]
    assert shown.loc["b", "ROC-AUC"] == f"{r.roc_auc:.3f} [{r.roc_auc_low:.3f}, {r.roc_auc_high:.3f}]"
    assert shown.loc["b", "DeLong p"] == f"{r.delong_p:.3f}"  # no interval: a plain number


def test_compare_systems_on_a_test_split_with_one_negative():
    """A tiny test split (one negative image, as RSNA's Normal class in a small subset gives) has an
    ROC-AUC but no DeLong variance (it needs two images per class): the test is NaN, the table stays."""
    from sklearn.metrics import roc_auc_score

    y = np.array([0, 1, 1, 1])
    systems = {"a": np.array([0.1, 0.9, 0.8, 0.3]), "b": np.array([0.5, 0.6, 0.2, 0.7])}
    cls = report.compare_systems(y, np.arange(4), systems, "a", n_boot=20).set_index("system")
    assert cls.loc["b", "roc_auc"] == pytest.approx(roc_auc_score(y, systems["b"]))
    assert cls[["delong_z", "delong_p"]].isna().all().all()
    shown = report.format_ci(cls, report.CLASSIFICATION_HEADERS)
    assert shown.loc["b", "DeLong p"] == "–"


def run_with_maps(tmp_path):
    """A synthetic run (stored predictions of m1, m2; test images img020..img039) with dataset tables
    (image and lung-mask files, one box on every other image) and stored gradcam maps; m2 lacks
    a map of the first test image."""
    run, base = synthetic_run(tmp_path)
    files = tmp_path / "images"
    files.mkdir()
    lungs = np.zeros((20, 30), np.uint8)
    lungs[4:16, 3:27] = 255
    Image.fromarray(lungs).save(files / "lungs.png")
    for i in base["image_id"]:
        Image.fromarray(np.full((20, 30), 90, np.uint8)).save(files / f"{i}.png")
    images = base.assign(path=[str(files / f"{i}.png") for i in base["image_id"]], width=30, height=20,
                         mask_path=str(files / "lungs.png"))
    boxed = images["image_id"].iloc[::2]
    boxes = pd.DataFrame({"image_id": boxed, "x": 6.0, "y": 5.0, "w": 9.0, "h": 6.0})
    save_tables(run, DatasetTables(images.drop(columns="split"), boxes, name="synthetic", root=str(files)), images)
    rng = np.random.default_rng(3)
    test_ids = base.loc[base["split"] == "test", "image_id"].to_numpy()
    stored = {}
    for name, ids in {"m1": test_ids, "m2": test_ids[1:]}.items():
        stored[name] = pd.Series(list(rng.random((len(ids), SIZE, SIZE)).astype(np.float16)), index=ids)
        save_maps(map_file(run, name, "gradcam"), np.stack(stored[name].to_list()), ids,
                  {"model": name, "method": "gradcam", "map_size": SIZE})
    return run, stored


def test_load_ensemble_maps_aligns_members_ensembles_and_ground_truth(tmp_path):
    run, stored = run_with_maps(tmp_path)
    preds = report.load_predictions(run, ["m1", "m2"])
    p_val, y_val = preds.probs("val"), preds.labels("val")
    fitted = {c: fit_ensemble(c, p_val, y_val, preds.members) for c in ("mean", "auto_auc")}
    maps = report.load_ensemble_maps(run, preds, "gradcam", fitted)

    expected_ids = [i for i in preds.image_ids("test") if i in stored["m2"].index]
    assert maps.image_ids.tolist() == expected_ids and maps.n_requested == 20 and maps.size == SIZE
    for k, name in enumerate(["m1", "m2"]):
        np.testing.assert_array_equal(maps.member_maps[k], np.stack(stored[name].loc[expected_ids].to_list()))
    assert list(maps.ensemble_maps) == ["ens_mean", "ens_auto_auc"]
    np.testing.assert_array_equal(maps.ensemble_maps["ens_auto_auc"],
                                  ensemble_map(maps.member_maps, fitted["auto_auc"].weights))
    assert maps.agreement.equals(map_agreement_matrix(maps.member_maps, ["m1", "m2"]))
    np.testing.assert_array_equal(maps.spread, pixel_spread(maps.member_maps))
    np.testing.assert_array_equal(maps.per_image_agreement, per_image_agreement(maps.member_maps))
    # ground truth row-aligned with the maps, at map size: boxes on the even-numbered images only
    assert maps.gt.images["image_id"].tolist() == expected_ids
    assert maps.gt.box_masks.shape == (19, SIZE, SIZE) and maps.gt.lungs.source == "dataset"
    assert maps.gt.has_box.tolist() == [int(i[3:]) % 2 == 0 for i in expected_ids]
    lines = maps.describe().splitlines()
    assert lines[0] == "19 of 20 test images have 'gradcam' maps from all members (map size 8)"
    assert lines[1] == f"member weights of each ensemble map: {{'mean': [0.5, 0.5], 'auto_auc': " \
                       f"{np.round(fitted['auto_auc'].weights, 3).tolist()}}}"
    assert lines[2].startswith(f"mean pixel spread {maps.spread.mean():.3f}; per-image agreement median ")


def test_compare_map_localization_scores_members_and_ensembles_on_the_same_images(tmp_path):
    run, _ = run_with_maps(tmp_path)
    preds = report.load_predictions(run, ["m1", "m2"])
    fitted = {"mean": fit_ensemble("mean", preds.probs("val"), preds.labels("val"), preds.members)}
    maps = report.load_ensemble_maps(run, preds, "gradcam", fitted)
    loc = report.compare_map_localization(maps, "m2", n_boot=10, seed=1)
    assert list(dict.fromkeys(loc["system"])) == ["m1", "m2", "ens_mean"]
    hit = loc[loc["metric"] == "hit"].set_index("system")
    scores = report.localization_scores(maps.ensemble_maps["ens_mean"], maps.gt)["hit"]
    assert hit.loc["ens_mean", "value"] == pytest.approx(scores.values[scores.valid].mean())
    assert hit.loc["ens_mean", "n"] == maps.gt.has_box.sum() and hit.loc["m2", "d"] == 0


def test_all_zero_maps_give_an_empty_localization_table_with_its_columns():
    """Every member's map all zero (a dead Grad-CAM, e.g. after one epoch on a tiny set): no metric
    is defined, so the table is empty but keeps its columns, and the figure, the frontier and the
    summary of notebook 05 still come out (without localization)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from pneumoloc.ensembles import summary
    from pneumoloc.localize.metrics import Scores
    from pneumoloc.plots.ensembles import plot_localization

    dead = Scores(np.zeros(4), np.zeros(4, bool), {"zero_map": 4})
    loc = report.compare_localization({"a": {"hit": dead}, "b": {"hit": dead}}, np.arange(4), "a", n_boot=10)
    assert loc.empty
    assert {"system", "metric", "n", "value", "low", "high", "d", "d_low", "d_high"} <= set(loc.columns)
    assert loc.pivot(index="system", columns="metric", values="value").empty
    assert isinstance(plot_localization(loc, "a"), Figure)
    y = np.array([0, 1, 0, 1])
    cls = report.compare_systems(y, np.arange(4), {"a": np.array([.2, .8, .3, .7]), "b": np.array([.4, .6, .5, .9])},
                                 "a", n_boot=10)
    costs = pd.DataFrame({"params": [1e6, 2e6], "latency_ms": [1.0, 2.0], "ms_per_image_batched": [.5, 1.]},
                         index=["a", "b"])
    frontier = summary.efficiency_frontier(costs, {}, ["a", "b"], cls, loc)
    assert {"roc_auc", "front_params_roc_auc"} <= set(frontier.columns)
