"""The run-level report on a synthetic run written in the stored-maps format."""
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pneumoloc.data.tables import DatasetTables, save_tables
from pneumoloc.environment import RunPaths
from pneumoloc.explain.stored import save_maps
from pneumoloc.localize import metrics as L
from pneumoloc.storage import save_arrays

SIZE = 16  # map side M
IMG = 64   # original image side


def _synthetic_run(tmp_path, with_val_maps=True):
    run = RunPaths(tmp_path / "run", tmp_path / "figs").ensure()
    rng = np.random.default_rng(0)
    rows, boxes = [], []
    lung = np.zeros((IMG, IMG), np.uint8)
    lung[8:56, 6:28] = 255
    lung[8:56, 36:58] = 255
    Image.fromarray(lung).save(tmp_path / "lung.png")
    for p in range(16):
        split = ["train", "train", "val", "test", "test", "test"][p % 6]
        for k in range(2):
            iid, label = f"p{p}_{k}", int((p + k) % 2 == 0)
            rows.append({"image_id": iid, "patient_id": f"p{p}", "path": str(tmp_path / f"{iid}.png"),
                         "label": label, "width": IMG, "height": IMG * 2,
                         "mask_path": str(tmp_path / "lung.png"), "split": split})
            if label:
                x, y = 4 * rng.integers(2, 10), 8 * rng.integers(2, 10)  # on the map grid: exact boxes
                boxes.append({"image_id": iid, "x": x, "y": y, "w": 16, "h": 32})
    images, boxes = pd.DataFrame(rows), pd.DataFrame(boxes)
    Image.fromarray(lung).resize((IMG, IMG * 2)).save(tmp_path / "lung.png")
    save_tables(run, DatasetTables(images.drop(columns="split"), boxes, "synthetic", str(tmp_path)), images)
    keep = images[images["split"].isin(["test", "val"] if with_val_maps else ["test"])]
    ids = keep["image_id"].to_numpy()
    truth = L.box_masks(L.boxes_by_image(boxes, ids), keep["width"], keep["height"], SIZE)
    maps = {("good", "gradcam"): truth.astype(np.float16),
            ("bad", "gradcam"): rng.random(truth.shape).astype(np.float16),
            ("good", "gradcam@layer3"): np.clip(truth + 0.3 * rng.random(truth.shape), 0, 1).astype(np.float16)}
    for (model, method), m in maps.items():
        stem = method.replace("@", "_")
        save_maps(run.maps / model / f"{stem}.npz", m, ids, {"model": model, "method": method, "n": len(ids),
                  "map_size": SIZE, "input_size": 32, "target_layer": "backbone.layer4", "target": "pneumonia"})
    for model in ("good", "bad"):
        pred = keep[["image_id", "patient_id", "split", "label"]].assign(prob=0.2 + 0.6 * keep["label"])
        run.model_dir(model).mkdir(parents=True, exist_ok=True)
        pred.to_csv(run.model_dir(model) / "predictions.csv", index=False)
    return run, images, boxes


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    pytest.importorskip("pneumoloc.explain.stored")
    from pneumoloc.localize.report import score_run

    run, images, boxes = _synthetic_run(tmp_path_factory.mktemp("loc"))
    return run, images, boxes, score_run(run, n_boot=30, progress=False, gating=True)


def _value(metrics, model, method, metric, variant="maps"):
    row = metrics[(metrics.model == model) & (metrics.method == method) & (metrics.metric == metric)
                  & (metrics.variant == variant)]
    assert len(row) == 1, (model, method, metric, variant)
    return row.iloc[0]


def test_perfect_maps_score_one_and_random_maps_do_not(report):
    _, _, _, rep = report
    m = rep.metrics
    for metric in ("hit", "energy", "auprc", "iou@otsu", "dice@frac0.50", "iou@tuned", "rsna@otsu"):
        row = _value(m, "good", "gradcam", metric)
        assert row.value == pytest.approx(1.0), (metric, row.value)
        assert row.low <= row.value <= row.high
    assert _value(m, "good", "gradcam", "pointwise_map").value == pytest.approx(1.0)
    # gating on validation: negatives (prob 0.2) are emptied, positives (0.8) kept -> every image 1
    gated = _value(m, "bad", "gradcam", "iou_gated@otsu")
    assert 0.2 <= gated.gate < 0.8 and gated.n == 14
    assert _value(m, "bad", "gradcam", "energy").value < 0.5
    # every positive test image is scored, every negative one counted as excluded
    _, images, boxes, _ = report
    test = images[images.split == "test"]
    n_pos = int(test.image_id.isin(boxes.image_id).sum())
    assert _value(m, "good", "gradcam", "energy").n == n_pos
    good = _value(m, "good", "gradcam", "energy")  # its negatives' maps are all zero: first reason
    assert good.excluded_zero_map + good.excluded_no_box == len(test) - n_pos
    assert _value(m, "bad", "gradcam", "energy").excluded_no_box == len(test) - n_pos
    assert not m[["value", "low", "high"]].isna().any().any()


def test_chance_rows_and_shuffled_boxes_present(report):
    _, _, _, rep = report
    m = rep.metrics
    from pneumoloc.data.tables import load_tables
    from pneumoloc.localize.ground_truth import ground_truth

    run, images, _, _ = report
    gt = ground_truth(load_tables(run), images[images.split == "test"].image_id, SIZE, "dataset")
    lung_share = gt.lungs.masks.mean()  # uniform map over the image: LAR = share of lung cells
    assert 0.3 < lung_share < 0.7
    assert _value(m, "chance", "uniform_image", "lar").value == pytest.approx(lung_share, rel=1e-9)
    assert m[(m.model == "chance") & (m.method == "uniform_lung") & (m.metric == "lar")].empty
    assert {"uniform_image", "uniform_lung", "box_prior"} <= set(m[m.model == "chance"].method)
    assert _value(m, "good", "gradcam", "energy", "shuffled_boxes").value < 1.0
    assert (m.lung_source == "dataset").all() and not m.lungs_approximate.any()


def test_per_image_rows_match_the_metric_functions(report):
    run, images, boxes, rep = report
    from pneumoloc.explain.stored import load_maps

    ms = load_maps(run, "bad", "gradcam")
    test = images.set_index("image_id").loc[ms.image_ids, "split"].to_numpy() == "test"
    ids = ms.image_ids[test]
    sub = images.set_index("image_id").loc[ids]
    truth = L.box_masks(L.boxes_by_image(boxes, ids), sub["width"], sub["height"], SIZE)
    ref = L.localization_auprc(ms.maps[test], truth)
    pi = rep.per_image.query("model == 'bad' and method == 'gradcam' and metric == 'auprc' and variant == 'maps'")
    assert list(pi.image_id) == list(ids[ref.valid])
    assert np.allclose(pi.value, ref.values[ref.valid])


def test_paired_comparisons_backbone_and_method(report):
    _, _, _, rep = report
    p = rep.paired
    row = p[(p.metric == "energy") & (p.comparison == "backbone")].iloc[0]
    sign = 1 if row.model_a == "good" else -1
    assert sign * row["diff"] > 0 and sign * row.low > 0
    assert (p.comparison == "method").any()


def test_no_maps_is_a_clear_error(tmp_path):
    pytest.importorskip("pneumoloc.explain.stored")
    from pneumoloc.localize.report import score_run

    run, _, _ = _synthetic_run(tmp_path)
    with pytest.raises(ValueError, match="notebook 03"):
        score_run(run, models=["nope"], progress=False)


def test_tables_failures_auc_and_figures(report, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from pneumoloc.plots import localization as P
    from pneumoloc.localize.tables import classifier_auc, failure_inputs, format_table, worst_localized

    run, images, _, rep = report
    wide = format_table(rep.metrics, ["hit", "energy", "lar"])
    assert {"target_layer", "feature_size", "map_size", "hit", "energy"} <= set(wide.columns)
    assert wide.loc[wide.model == "good", "energy"].iloc[0].startswith("1.000 [")
    worst = worst_localized(rep.per_image, "energy", n=2)
    bad = worst[worst.model == "bad"]
    assert len(bad) == 2 and (bad.label == 1).all() and (bad.prob >= 0.5).all()
    assert bad.value.is_monotonic_increasing
    allbad = rep.per_image.query("model == 'bad' and method == 'gradcam' and metric == 'energy' and variant == 'maps'")
    assert bad.value.iloc[0] == allbad.value.min()
    assert classifier_auc(run, "good") == 1.0  # prob separates labels perfectly in the synthetic run
    assert np.isnan(classifier_auc(run, "nope"))
    for iid in worst.image_id:  # images for the gallery
        Image.fromarray(np.full((64, 128), 100, np.uint8)).save(images.set_index("image_id").loc[iid, "path"])
    arrays = failure_inputs(run, worst)
    assert len(arrays[0]) == len(worst) and arrays[2][0].shape == (SIZE, SIZE)
    figs = [P.metric_bars(rep.metrics, ["hit", "energy"]), P.lar_distribution(rep.per_image),
            P.localization_vs_auc(rep.metrics, pd.Series({"good": 1.0, "bad": 0.9})),
            P.failure_gallery(worst, *arrays)]
    assert all(len(f.axes) for f in figs)
    with pytest.raises(ValueError, match="none of the requested"):
        P.metric_bars(rep.metrics, ["nope"])


def test_system_label_names_every_layer_and_the_native_resolution():
    from pneumoloc.plots.localization import system_label

    row = {"model": "resnet18", "method": "gradcam@layer3+4", "target_layer": "backbone.layer3+backbone.layer4",
           "feature_size": "8x8+4x4", "map_size": 64}
    assert system_label(row) == "resnet18 / gradcam@layer3+4 (layer3+layer4, 8x8+4x4 -> 64px)"
    assert system_label({"model": "chance", "method": "uniform", "target_layer": "", "feature_size": "",
                         "map_size": 64}) == "chance / uniform (64px)"


def test_all_zero_validation_maps_skip_tuning_instead_of_failing(tmp_path):
    """A model whose validation maps are all zero (dead CAM) gets no 'tuned' rule; the run goes on."""
    from pneumoloc.localize.report import score_run
    from pneumoloc.storage import load_arrays

    run, images, _ = _synthetic_run(tmp_path)
    path = run.maps / "bad" / "gradcam.npz"
    arrays = load_arrays(path)
    val = np.isin(arrays["image_ids"], images.loc[images["split"] == "val", "image_id"])
    maps = arrays["maps"].copy()
    maps[val] = 0
    save_arrays(path, **{**arrays, "maps": maps})  # the metadata inside stays
    m = score_run(run, n_boot=20, progress=False, gating=True).metrics
    bad = m[(m.model == "bad") & (m.method == "gradcam") & (m.variant == "maps")]
    good = m[(m.model == "good") & (m.method == "gradcam") & (m.variant == "maps")]
    assert "iou@tuned" not in set(bad.metric) and bad.tuned_fraction.isna().all()
    assert "iou@tuned" in set(good.metric) and "hit" in set(bad.metric)


def test_nonfinite_maps_are_counted_like_zero_maps_in_the_report(tmp_path):
    """NaN/inf maps give the same numbers as all-zero maps; the exclusions say which were which."""
    from pneumoloc.localize.report import score_run
    from pneumoloc.storage import load_arrays

    run, images, _ = _synthetic_run(tmp_path)
    path = run.maps / "bad" / "gradcam.npz"
    arrays = load_arrays(path)
    rows = np.flatnonzero(np.isin(arrays["image_ids"], images.loc[images["split"] == "test", "image_id"]))[:3]
    maps = arrays["maps"].copy()
    maps[rows[0]] = np.nan
    maps[rows[1], 2, 3] = np.inf
    maps[rows[2], 0, 0] = np.nan
    save_arrays(path, **{**arrays, "maps": maps})  # the metadata inside stays
    kw = {"models": ["bad"], "n_boot": 20, "progress": False, "gating": True, "baselines": False}
    nonfinite = score_run(run, **kw).metrics
    maps[rows] = 0
    save_arrays(path, **{**arrays, "maps": maps})  # the metadata inside stays
    zero = score_run(run, **kw).metrics
    cols = ["variant", "metric", "n", "value", "low", "high"]
    pd.testing.assert_frame_equal(nonfinite[cols], zero[cols])
    hit = nonfinite[(nonfinite.metric == "hit") & (nonfinite.variant == "maps")].iloc[0]
    hit0 = zero[(zero.metric == "hit") & (zero.variant == "maps")].iloc[0]
    assert hit["excluded_nonfinite_map"] == 3
    assert hit["excluded_nonfinite_map"] + hit["excluded_zero_map"] == hit0["excluded_zero_map"]


def test_report_saves_its_tables_and_filters_paired_rows(report, tmp_path):
    from pneumoloc.localize.tables import depth_variants, paired_subset
    from pneumoloc.storage import load_table

    run, _, _, rep = report
    rep.save(tmp_path / "loc")
    for name in ("metrics", "per_image", "paired", "undefined"):
        assert len(load_table(tmp_path / "loc" / f"{name}.csv")) == len(getattr(rep, name))
    assert "model x method scored on" in rep.describe()
    energy = paired_subset(rep.paired, ["energy"])
    assert set(energy.metric) == {"energy"} and (energy.excludes_0 == ((energy.low > 0) | (energy.high < 0))).all()
    one = paired_subset(rep.paired, ["energy", "hit"], model="good", methods={"gradcam", "gradcam@layer3"})
    assert len(one) and ((one.model_a == "good") & (one.model_b == "good")).all()
    assert paired_subset(rep.paired.iloc[:0], ["energy"]).empty
    m = pd.DataFrame({"model": ["r", "r", "r", "s"], "variant": "maps",
                      "method": ["gradcam", "gradcam@layer3", "hirescam", "gradcam"]})
    assert depth_variants(m, "r", "gradcam").method.tolist() == ["gradcam", "gradcam@layer3"]


def test_missing_stored_maps_and_checkpoints_name_what_exists(report, tmp_path):
    from pneumoloc.explain.stored import require_maps, require_trained

    run, _, _, _ = report
    assert set(require_maps(run)["model"]) >= {"good"}
    with pytest.raises(ValueError, match=r"no stored maps for \['nope'\]"):
        require_maps(run, ["nope"])
    with pytest.raises(ValueError, match="no stored maps under"):
        require_maps(RunPaths(tmp_path / "empty", tmp_path / "f"))
    with pytest.raises(ValueError, match=r"backbones \['good'\] have no best.pt"):
        require_trained(run, ["good"])


def test_dataset_without_boxes_scores_lar_and_no_shuffled_boxes(tmp_path):
    """Kermany and CheXpert have no boxes: LAR is scored, box metrics are undefined (listed, not
    NaN rows) and the shuffled-box baseline, which needs boxes from two patients, is left out."""
    from pneumoloc.localize.report import score_run

    run, images, _ = _synthetic_run(tmp_path)
    no_boxes = pd.DataFrame(columns=["image_id", "x", "y", "w", "h"])
    save_tables(run, DatasetTables(images.drop(columns="split"), no_boxes, "synthetic", str(tmp_path)), images)
    report = score_run(run, n_boot=20, progress=False, gating=True)
    m = report.metrics
    lar = m[(m.metric == "lar") & (m.model != "chance")]
    assert set(lar.model) == {"good", "bad"} and lar["value"].between(0, 1).all()
    assert "shuffled_boxes" not in set(m.variant)
    assert not {"hit", "energy", "auprc"} & set(m.metric)
    assert {"hit", "energy", "auprc"} <= set(report.undefined.metric)


def test_lar_figure_when_every_map_is_all_zero():
    """A dead CAM leaves no per-image LAR: notebook 04's figure says so instead of failing."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from pneumoloc.plots.localization import lar_distribution

    empty = pd.DataFrame(columns=["model", "method", "variant", "metric", "image_id", "value"])
    fig = lar_distribution(empty)
    assert isinstance(fig, Figure)
    assert "no image" in " ".join(t.get_text() for t in fig.axes[0].texts)
    assert isinstance(lar_distribution(pd.DataFrame()), Figure)  # no scored map at all
