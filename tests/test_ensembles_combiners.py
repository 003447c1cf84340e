"""Ensembles: one member = that member, identical members = each, one non-zero weight = that member."""
import numpy as np
import pytest
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from pneumoloc.ensembles.combiners import (COMBINERS, best_single, ensemble_map, fit_ensemble, normalize_maps,
                                           weighted_average)

RNG = np.random.default_rng(7)
N = 120
Y_VAL, Y_TEST = RNG.integers(0, 2, N), RNG.integers(0, 2, N)


def members(y, quality=(1.5, 0.8, 0.3)):
    """Probabilities of three synthetic members of decreasing quality."""
    z = np.stack([q * (2 * y - 1) + RNG.normal(size=y.size) for q in quality], axis=1)
    return 1 / (1 + np.exp(-z))


VAL, TEST = members(Y_VAL), members(Y_TEST)
NAMES = ("strong", "medium", "weak")

# Combiners that output a probability (vote outputs a share of votes; stacking a re-fit).
PROB_PRESERVING = ("mean", "auto_auc", "greedy")


@pytest.mark.parametrize("name", list(COMBINERS))
def test_single_member_equals_that_member(name):
    ens = fit_ensemble(name, VAL[:, :1], Y_VAL, NAMES[:1])
    out = ens.predict(TEST[:, :1])
    if name in PROB_PRESERVING:
        np.testing.assert_allclose(out, TEST[:, 0], atol=1e-9)
    elif name == "vote":
        np.testing.assert_array_equal(out, (TEST[:, 0] >= 0.5).astype(float))
    else:  # stacking: a monotone recalibration of the member -> identical ranking
        np.testing.assert_array_equal(rankdata(out), rankdata(TEST[:, 0]))
    np.testing.assert_allclose(ens.weights, [1.0])


@pytest.mark.parametrize("name", list(COMBINERS))
def test_identical_members_equal_each(name):
    val3, test3 = np.repeat(VAL[:, 1:2], 3, axis=1), np.repeat(TEST[:, 1:2], 3, axis=1)
    out = fit_ensemble(name, val3, Y_VAL, ("a", "b", "c")).predict(test3)
    if name == "vote":
        np.testing.assert_array_equal(out, (TEST[:, 1] >= 0.5).astype(float))
    elif name == "stacking":
        np.testing.assert_array_equal(rankdata(out), rankdata(TEST[:, 1]))
    else:
        np.testing.assert_allclose(out, TEST[:, 1], atol=1e-9)


@pytest.mark.parametrize("space", ["prob", "logit"])
@pytest.mark.parametrize("k", [0, 1, 2])
def test_one_nonzero_weight_equals_that_member(space, k):
    w = np.zeros(3)
    w[k] = 0.7
    np.testing.assert_allclose(weighted_average(TEST, w, space), TEST[:, k], atol=1e-9)


def test_mean_and_auto_auc_by_hand():
    p = np.array([[0.2, 0.6], [0.9, 0.5]])
    np.testing.assert_allclose(fit_ensemble("mean", p, [0, 1], "ab").predict(p), [0.4, 0.7])
    # auto_auc: weights AUC/sum AUC on validation, on logits (the paper's ensemble_eval.py)
    ens = fit_ensemble("auto_auc", VAL, Y_VAL, NAMES)
    aucs = np.array([roc_auc_score(Y_VAL, VAL[:, k]) for k in range(3)])
    np.testing.assert_allclose(ens.weights, aucs / aucs.sum())
    logit = np.log(TEST / (1 - TEST))
    np.testing.assert_allclose(ens.predict(TEST), 1 / (1 + np.exp(-(logit @ (aucs / aucs.sum())))))


def test_vote_share_and_thresholds():
    p = np.array([[0.6, 0.4, 0.7], [0.1, 0.2, 0.55]])
    ens = fit_ensemble("vote", p, [1, 0], "abc")
    np.testing.assert_allclose(ens.predict(p), [2 / 3, 1 / 3])
    ens = fit_ensemble("vote", p, [1, 0], "abc", threshold=[0.5, 0.3, 0.6])
    np.testing.assert_allclose(ens.predict(p), [1.0, 0.0])


def test_stacking_matches_sklearn_fit_on_logits():
    from sklearn.linear_model import LogisticRegression

    ens = fit_ensemble("stacking", VAL, Y_VAL, NAMES)
    lv, lt = np.log(VAL / (1 - VAL)), np.log(TEST / (1 - TEST))
    ref = LogisticRegression(C=1.0, max_iter=1000).fit(lv, Y_VAL).predict_proba(lt)[:, 1]
    np.testing.assert_allclose(ens.predict(TEST), ref, atol=1e-9)


def test_greedy_picks_best_single_first_and_never_loses_on_validation():
    # Put the strongest member last so "first" is not an accident of column order.
    order = [2, 1, 0]
    names = [NAMES[k] for k in order]
    ens = fit_ensemble("greedy", VAL[:, order], Y_VAL, names)
    assert ens.params["picks"][0] == best_single(VAL[:, order], Y_VAL, names) == "strong"
    best_auc = max(roc_auc_score(Y_VAL, VAL[:, k]) for k in range(3))
    assert ens.params["val_auc"] >= best_auc - 1e-12
    assert roc_auc_score(Y_VAL, ens.predict(VAL[:, order])) == pytest.approx(ens.params["val_auc"])
    assert ens.weights.sum() == pytest.approx(1) and (ens.weights >= 0).all()


def test_unknown_combiner_lists_known_and_shapes_are_checked():
    with pytest.raises(KeyError, match="mean"):
        fit_ensemble("median", VAL, Y_VAL, NAMES)
    with pytest.raises(ValueError, match=r"\[n, 3\]"):
        fit_ensemble("mean", VAL[:, :2], Y_VAL, NAMES)
    with pytest.raises(ValueError, match="non-negative"):
        weighted_average(TEST, [1, -1, 0])


def test_ensemble_map_is_mean_of_members_then_renormalized():
    maps = RNG.random((3, 4, 5, 5)).astype(np.float32)
    maps = normalize_maps(maps.reshape(12, 5, 5)).reshape(3, 4, 5, 5)
    np.testing.assert_allclose(ensemble_map(maps[:1]), maps[0], atol=1e-6)  # one member
    np.testing.assert_allclose(ensemble_map(np.stack([maps[1]] * 3)), maps[1], atol=1e-6)
    np.testing.assert_allclose(ensemble_map(maps, weights=[0, 2, 0]), maps[1], atol=1e-6)
    raw = ensemble_map(maps, renormalize=False)
    np.testing.assert_allclose(raw, maps.mean(axis=0), atol=1e-6)
    norm = ensemble_map(maps)
    assert norm.min(axis=(1, 2)) == pytest.approx(0) and norm.max(axis=(1, 2)) == pytest.approx(1)
    assert (normalize_maps(np.zeros((2, 3, 3))) == 0).all()  # an all-zero map stays 0


# -- reading stored predictions and comparing systems (pneumoloc.ensembles.report) -----------

import pandas as pd  # noqa: E402

from pneumoloc.ensembles.report import compare_systems, load_predictions, trained_models  # noqa: E402
from pneumoloc.environment import RunPaths  # noqa: E402
from pneumoloc.storage import save_table  # noqa: E402


def synthetic_run(tmp_path, n=40, names=("m1", "m2")):
    """A run folder with stored predictions.csv of two members (as notebook 02 writes them)."""
    run = RunPaths(root=tmp_path / "run", figures=tmp_path / "fig")
    rng = np.random.default_rng(0)
    ids = [f"img{i:03d}" for i in range(n)]
    base = pd.DataFrame({"image_id": ids, "patient_id": [f"p{i // 2}" for i in range(n)],
                         "split": ["val"] * (n // 2) + ["test"] * (n - n // 2),
                         "label": rng.integers(0, 2, n)})
    for k, name in enumerate(names):
        df = base.assign(prob=np.clip(0.3 * base["label"] + rng.random(n) * 0.7, 0, 1))
        save_table(run.model_dir(name) / "predictions.csv", df.sample(frac=1, random_state=k))
    return run, base


def test_load_predictions_aligns_members_and_counts_dropped(tmp_path):
    run, base = synthetic_run(tmp_path)
    assert trained_models(run) == ["m1", "m2"]
    # m2 lacks one test image: dropped and counted, not misaligned
    p2 = pd.read_csv(run.model_dir("m2") / "predictions.csv", dtype={"image_id": str, "patient_id": str})
    save_table(run.model_dir("m2") / "predictions.csv", p2[p2["image_id"] != "img039"])
    ps = load_predictions(run, ["m1", "m2"])
    assert ps.dropped == {"val": 0, "test": 1}
    assert ps.probs("test").shape == (19, 2) and "img039" not in ps.image_ids("test")
    for name in ("m1", "m2"):
        stored = pd.read_csv(run.model_dir(name) / "predictions.csv", dtype={"image_id": str}).set_index("image_id")
        np.testing.assert_allclose(ps.frames["val"][name], stored.loc[ps.image_ids("val"), "prob"])
    np.testing.assert_array_equal(ps.labels("val"), base.set_index("image_id").loc[ps.image_ids("val"), "label"])


def test_load_predictions_errors_name_the_file(tmp_path):
    run, _ = synthetic_run(tmp_path)
    with pytest.raises(FileNotFoundError, match="notebook 02"):
        load_predictions(run, ["m1", "nope"])
    df = pd.read_csv(run.model_dir("m2") / "predictions.csv")
    save_table(run.model_dir("m2") / "predictions.csv", df.assign(label=1 - df["label"]))
    with pytest.raises(ValueError, match="disagree on the label"):
        load_predictions(run, ["m1", "m2"])
    save_table(run.model_dir("m2") / "predictions.csv", df.drop(columns="prob"))
    with pytest.raises(ValueError, match="lacks columns"):
        load_predictions(run, ["m2"])


def test_compare_systems_reference_row_is_zero_and_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    groups = np.repeat(np.arange(N // 2), 2)
    systems = {"strong": TEST[:, 0], "weak": TEST[:, 2]}
    t = compare_systems(Y_TEST, groups, systems, "strong", n_boot=50).set_index("system")
    assert t.loc["strong", "d_roc_auc"] == 0 and t.loc["strong", "delong_p"] == 1
    assert t.loc["weak", "roc_auc"] == pytest.approx(roc_auc_score(Y_TEST, TEST[:, 2]))
    assert t.loc["weak", "d_roc_auc"] == pytest.approx(t.loc["weak", "roc_auc"] - t.loc["strong", "roc_auc"])
    assert t.loc["weak", "d_roc_auc_low"] <= t.loc["weak", "d_roc_auc"] <= t.loc["weak", "d_roc_auc_high"]
    with pytest.raises(KeyError, match="reference"):
        compare_systems(Y_TEST, groups, systems, "missing", n_boot=5)


def test_compare_systems_intervals_equal_the_bootstrap_module():
    from pneumoloc.evaluate.bootstrap import bootstrap_ci, paired_bootstrap
    from pneumoloc.evaluate.classification import binary_metrics

    groups = np.repeat(np.arange(N // 2), 2)
    systems = {"strong": TEST[:, 0], "weak": TEST[:, 2]}
    t = compare_systems(Y_TEST, groups, systems, "strong", n_boot=40, seed=3).set_index("system")
    for m in ("roc_auc", "f1"):
        def stat(a, b, m=m):
            return binary_metrics(a, b, 0.5)[m]
        est = bootstrap_ci(stat, Y_TEST, TEST[:, 2], groups=groups, n_boot=40, seed=3)
        d = paired_bootstrap(stat, (Y_TEST, TEST[:, 2]), (Y_TEST, TEST[:, 0]), groups, n_boot=40, seed=3)
        assert (t.loc["weak", m], t.loc["weak", f"{m}_low"], t.loc["weak", f"{m}_high"]) == pytest.approx(
            (est.value, est.low, est.high), abs=1e-12)
        assert (t.loc["weak", f"d_{m}"], t.loc["weak", f"d_{m}_low"], t.loc["weak", f"d_{m}_high"]) == pytest.approx(
            (d.value, d.low, d.high), abs=1e-12)


def test_compare_localization_equals_bootstrap_module_and_respects_exclusions():
    from pneumoloc.evaluate.bootstrap import bootstrap_ci, paired_bootstrap
    from pneumoloc.ensembles.report import compare_localization
    from pneumoloc.localize.metrics import Scores

    rng = np.random.default_rng(5)
    groups = np.repeat(np.arange(15), 2)
    a, b = rng.random(30), rng.random(30)
    ok = np.ones(30, bool)
    scores = {"ref": {"hit": Scores(b, ok, {})}, "ens": {"hit": Scores(a, ok, {})}}
    t = compare_localization(scores, groups, "ref", n_boot=60, seed=2).set_index("system")
    est = bootstrap_ci(np.mean, a, groups=groups, n_boot=60, seed=2)
    d = paired_bootstrap(np.mean, (a,), (b,), groups, n_boot=60, seed=2)
    assert (t.loc["ens", "value"], t.loc["ens", "low"], t.loc["ens", "high"]) == pytest.approx((est.value, est.low, est.high))
    assert (t.loc["ens", "d"], t.loc["ens", "d_low"], t.loc["ens", "d_high"]) == pytest.approx((d.value, d.low, d.high))
    # an image excluded for either system is left out of both
    va = ok.copy()
    va[:10] = False
    scores["ens"]["hit"] = Scores(np.where(va, a, 0.0), va, {"no_box": 10})
    t = compare_localization(scores, groups, "ref", n_boot=20).set_index("system")
    assert t.loc["ens", "n"] == 20 and t.loc["ens", "excluded"] == 10
    assert t.loc["ens", "value"] == pytest.approx(a[10:].mean())
    assert t.loc["ens", "d"] == pytest.approx(a[10:].mean() - b[10:].mean())
    assert t.loc["ref", "n"] == 30 and t.loc["ref", "d"] == 0


def test_every_ensemble_figure_is_returned():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from pneumoloc.plots import ensembles as ep
    from pneumoloc.evaluate.calibration import reliability_table

    groups = np.repeat(np.arange(N // 2), 2)
    cls = compare_systems(Y_TEST, groups, {"a": TEST[:, 0], "b": TEST[:, 1]}, "a", n_boot=5)
    mat = pd.DataFrame(np.eye(2), index=["a", "b"], columns=["a", "b"])
    maps = RNG.random((2, 3, 4, 4))
    loc = pd.DataFrame({"system": ["a", "b"], "metric": "hit", "n": 3, "value": [0.5, 0.6],
                        "low": [0.4, 0.5], "high": [0.6, 0.7]})
    eff = pd.DataFrame({"system": ["a", "b"], "params": [1e6, 2e6], "roc_auc": [0.8, 0.9]})
    figs = [ep.plot_differences(cls, "roc_auc", "a"), ep.plot_matrix(mat, "m"),
            ep.plot_reliability({"a": reliability_table(Y_TEST, TEST[:, 0])}, {"a": 0.1}),
            ep.plot_frontier(eff, ["params"], ["roc_auc"], label="system", highlight=["a"]),
            ep.plot_map_cases(maps, ["a", "b"], maps[0], maps.std(0), ["x", "y", "z"],
                              images=RNG.random((3, 4, 4)), boxes=[np.array([[0, 0, 2, 2]])] * 3),
            ep.plot_localization(loc, "a"), ep.plot_table(cls[["system", "roc_auc"]].round(3))]
    assert all(isinstance(f, Figure) for f in figs)


def test_localization_scores_use_notebook_04_metrics():
    from pneumoloc.ensembles.report import localization_scores
    from pneumoloc.localize.ground_truth import GroundTruth
    from pneumoloc.localize.lung_sources import LungMasks

    boxes = np.zeros((3, 8, 8), bool)
    boxes[0, 2:4, 2:5] = True
    boxes[1, 5:7, 1:3] = True  # image 2 has no box
    lungs = np.zeros_like(boxes)
    lungs[:, 1:7, 1:7] = True
    images = pd.DataFrame({"image_id": ["a", "b", "c"], "patient_id": ["p", "q", "r"], "width": 8, "height": 8})
    gt = GroundTruth(images, [np.zeros((0, 4))] * 3, boxes, LungMasks(lungs, "test", False, 0))
    maps = boxes.astype(float)  # maps equal to the box masks; image 2: a peak but no box
    maps[2, 3, 3] = 1
    s = localization_scores(maps, gt)
    assert s["hit"].values[:2].tolist() == [1, 1] and s["hit"].excluded["no_box"] == 1
    np.testing.assert_allclose(s["energy"].values[:2], 1)
    np.testing.assert_allclose(s["auprc"].values[:2], 1)
    np.testing.assert_allclose(s["iou@otsu"].values[:2], 1)
    assert s["lar"].values[:2] == pytest.approx([1, 1])


def test_load_member_maps_aligns_stored_maps(tmp_path):
    from pneumoloc.ensembles.report import load_member_maps
    from pneumoloc.explain.stored import map_file, save_maps

    run = RunPaths(root=tmp_path / "run", figures=tmp_path / "fig")
    maps = RNG.random((2, 4, 3, 3)).astype(np.float16)
    ids = {"m1": ["a", "b", "c", "d"], "m2": ["d", "c", "b", "x"]}
    for k, name in enumerate(["m1", "m2"]):
        path = map_file(run, name, "gradcam")
        save_maps(path, maps[k], np.array(ids[name]), {"model": name, "method": "gradcam", "map_size": 3})
    got_ids, got = load_member_maps(run, ["m1", "m2"], "gradcam", ["d", "a", "b"])
    assert got_ids.tolist() == ["d", "b"]  # "a" lacks an m2 map
    np.testing.assert_array_equal(got[0], maps[0][[3, 1]].astype(np.float32))
    np.testing.assert_array_equal(got[1], maps[1][[0, 2]].astype(np.float32))
    save_maps(map_file(run, "m2", "gradcam"), RNG.random((4, 5, 5)).astype(np.float16), np.array(ids["m2"]),
              {"model": "m2", "method": "gradcam", "map_size": 5})
    with pytest.raises(ValueError, match="differ in size"):
        load_member_maps(run, ["m1", "m2"], "gradcam")


def test_member_auc_is_the_projects_roc_auc_and_nan_for_one_class():
    from pneumoloc.ensembles.combiners import member_auc

    assert member_auc(Y_VAL, VAL[:, 0]) == pytest.approx(roc_auc_score(Y_VAL, VAL[:, 0]), abs=1e-12)
    assert np.isnan(member_auc(np.zeros(4), np.linspace(0, 1, 4)))
