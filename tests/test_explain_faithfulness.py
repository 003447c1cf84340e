"""Faithfulness metrics: hand-computed deletion/insertion curves, the batched path against a
per-image loop, ROAD against pytorch-grad-cam, patient-bootstrap summaries, and the whole-run
call notebook 04 makes on a small run with a real checkpoint."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from pneumoloc.explain import faithfulness as F
from pneumoloc.training.transforms import MEAN, STD
from references import deletion_insertion_loop
from tolerances import U, gamma

torch.set_num_threads(1)
S = 16  # image side of the hand-made cases
N = S * S


class RegionMean(nn.Module):
    """P(target) = mean brightness (in [0, 1]) of a fixed region: the model 'uses' exactly that region."""

    def __init__(self, region: np.ndarray):
        super().__init__()
        self.register_buffer("region", torch.from_numpy(region.astype(np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x01 = x[:, 0] * STD + MEAN
        return ((x01 * self.region).sum((1, 2)) / self.region.sum())[:, None]

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return logits


def _case():
    """A white 8x8 square (f = 64/256 = 1/4 of the pixels) on black; the model reads the square."""
    region = np.zeros((S, S), bool)
    region[4:12, 4:12] = True
    image = np.where(region, 255, 0).astype(np.uint8)
    return RegionMean(region).eval(), image, region


def test_deletion_of_the_region_first_gives_the_hand_computed_curve():
    # deleted pixels become 0 in the normalized input = 0.5 in [0, 1]: P falls from 1 by 0.5 * (deleted
    # share of the region); in the map's order the region (f = 1/4) goes first: P = 1 - 0.5 min(x / f, 1),
    # AUC = f * 3/4 + (1 - f) / 2 = 0.5625; region last: 1 - f / 4 = 0.9375. Knots on the 8-step grid: exact.
    model, image, region = _case()
    x = torch.from_numpy((image / 255.0 - MEAN) / STD).float()[None, None]
    good = torch.from_numpy(region.astype(np.float32))[None]
    fr = np.arange(9) / 8
    curves = F.perturbation_curves(model, x, good, steps=8)
    assert np.allclose(curves["fractions"], fr)
    assert np.allclose(curves["deletion"][0], 1 - 0.5 * np.minimum(fr / 0.25, 1), atol=8 * U)
    assert F.trapezoid_auc(curves["deletion"], fr)[0] == pytest.approx(0.5625, abs=8 * U)
    reverse = F.perturbation_curves(model, x, 1 - good, steps=8)
    assert F.trapezoid_auc(reverse["deletion"], fr)[0] == pytest.approx(0.9375, abs=8 * U)


def test_insertion_endpoints_and_the_region_first_curve():
    # insertion starts from the blurred image (P = mean of the blur over the region, computed by OpenCV),
    # ends at the image (P = 1), and reaches 1 once the region (the first quarter) is inserted
    import cv2

    model, image, region = _case()
    x = torch.from_numpy((image / 255.0 - MEAN) / STD).float()[None, None]
    blur = cv2.GaussianBlur(x[0, 0].numpy(), (11, 11), 5.0, borderType=cv2.BORDER_REFLECT_101)
    p0 = (blur * STD + MEAN)[region].mean()
    ins = F.perturbation_curves(model, x, torch.from_numpy(region.astype(np.float32))[None], steps=8)["insertion"][0]
    assert ins[0] == pytest.approx(p0, abs=1e-5)  # two float32 blurs of values <= 2 in size (121 taps)
    assert np.allclose(ins[2:], 1.0, atol=8 * U) and p0 < ins[1] < 1


def test_a_map_on_the_region_beats_random_and_reversed_maps():
    model, image, region = _case()
    good = region.astype(np.float32)
    maps = np.stack([good, F.random_maps(1, S, seed=3)[0], 1 - good])
    df = F.faithfulness_scores(model, np.repeat(image[None], 3, 0), maps, steps=16, road=True,
                               road_percentiles=(30, 60, 90))
    d, i = df["deletion_auc"].to_numpy(), df["insertion_auc"].to_numpy()
    assert d[0] < d[1] < d[2] and i[0] > i[1] > i[2]
    assert df["road_morf"][0] < df["road_morf"][1] and df["road_combined"][0] > df["road_combined"][1]


def test_maps_of_another_size_are_resized_to_the_input_frame():
    model, image, region = _case()
    small = region.reshape(8, 2, 8, 2).mean((1, 3)).astype(np.float32)  # the square on an 8x8 grid
    a = F.faithfulness_scores(model, image[None], small[None], steps=8, road=False)
    b = F.faithfulness_scores(model, image[None], region[None].astype(np.float32), steps=8, road=False)
    assert a["deletion_auc"][0] == pytest.approx(b["deletion_auc"][0], abs=1e-6)  # bilinear keeps the square first


def test_removal_ranks_order_by_value_and_break_ties_at_random():
    values = torch.from_numpy(np.random.default_rng(0).permutation(N).reshape(1, S, S).astype(np.float32))
    ranks = F.removal_ranks(values)[0].numpy()
    assert np.array_equal(np.argsort(ranks), np.argsort(-values.numpy().ravel()))  # distinct values: exact order
    flat = torch.zeros(1, S, S)
    r1, r2 = F.removal_ranks(flat, seed=1)[0].numpy(), F.removal_ranks(flat, seed=2)[0].numpy()
    assert sorted(r1) == list(range(N)) and not np.array_equal(r1, r2)
    assert np.array_equal(r1, F.removal_ranks(flat, seed=1)[0].numpy())  # seeded
    # a flat map deletes in no spatial order: the first quarter is spread over the image, not the top rows
    assert np.argsort(r1)[:N // 4].max() > N // 2


def test_gaussian_blur_equals_opencv():
    import cv2

    x = torch.from_numpy(np.random.default_rng(0).random((2, 1, 20, 24), dtype=np.float32))
    ours = F.gaussian_blur(x, 11, 5.0).numpy()
    ref = np.stack([cv2.GaussianBlur(a[0], (11, 11), 5.0, borderType=cv2.BORDER_REFLECT_101) for a in x.numpy()])
    # two 11-tap passes with weights summing to 1 on values in [0, 1], each in float32 in both
    assert np.abs(ours - ref[:, None]).max() <= 4 * gamma(11) + 8 * U


@pytest.mark.parametrize("baseline", F.DELETION_BASELINES)
def test_batched_curves_equal_a_per_image_loop(baseline):
    rng = np.random.default_rng(1)
    region = rng.random((S, S)) < 0.3  # a scattered region: the order matters everywhere
    model = RegionMean(region).eval()
    images = (rng.random((5, S, S)) * 255).astype(np.uint8)
    maps = torch.from_numpy(rng.random((5, S, S), dtype=np.float32))
    x = torch.from_numpy((images / 255.0 - MEAN) / STD).float()[:, None]
    got = F.perturbation_curves(model, x, maps, steps=7, batch_size=6, deletion_baseline=baseline, seed=4)
    orders = np.argsort(F.removal_ranks(maps, seed=4).numpy(), axis=1)
    if baseline == "blur":  # deleting into the blurred copy: the loop's deletion value is per pixel
        pytest.importorskip("cv2")
        ref_d = _blur_deletion_loop(model, x, orders, 7)
    else:
        ref_d = deletion_insertion_loop(lambda t: model(t)[0, 0], x[:, 0].numpy(), orders, 7)["deletion"]
    ref = deletion_insertion_loop(lambda t: model(t)[0, 0], x[:, 0].numpy(), orders, 7)
    # the same float32 region sums (at most N terms in [0, 1]) in both; rounding bound of one sum
    tol = gamma(N) + 8 * U
    assert np.abs(got["deletion"] - ref_d).max() <= tol
    assert np.abs(got["insertion"] - ref["insertion"]).max() <= tol + 2 * gamma(11)  # + the two blurs
    auc = F.trapezoid_auc(got["insertion"], got["fractions"])
    assert np.abs(auc - ref["insertion_auc"]).max() <= tol + 2 * gamma(11)


def _blur_deletion_loop(model, x, orders, steps):
    import cv2

    out = np.zeros((len(x), steps + 1))
    for i in range(len(x)):
        img = x[i, 0].numpy()
        blur = cv2.GaussianBlur(img, (11, 11), 5.0, borderType=cv2.BORDER_REFLECT_101).ravel()
        for k in range(steps + 1):
            flat = img.copy().ravel()
            idx = orders[i, :k * N // steps]
            flat[idx] = blur[idx]
            out[i, k] = float(model(torch.from_numpy(flat.reshape(1, 1, S, S)))[0, 0])
    return out


def test_predicted_target_scores_the_normal_class_of_a_negative_image():
    model, image, region = _case()
    dark = np.zeros_like(image)  # P(pneumonia) = 0 < 0.5: the predicted class is normal, P(normal) = 1
    x = torch.from_numpy((np.stack([image, dark]) / 255.0 - MEAN) / STD).float()[:, None]
    maps = torch.from_numpy(np.stack([region, region]).astype(np.float32))
    c = F.perturbation_curves(model, x, maps, steps=4, target="predicted")["deletion"]
    assert c[0, 0] == pytest.approx(1.0) and c[1, 0] == pytest.approx(1.0)  # 1 - P for the negative image
    assert c[1, -1] == pytest.approx(0.5)  # everything deleted: grey, P(normal) = 0.5


def test_road_equals_grad_cam_road_combined():
    from pytorch_grad_cam.metrics.road import ROADCombined, ROADLeastRelevantFirstAverage, ROADMostRelevantFirstAverage

    model, image, region = _case()
    rng = np.random.default_rng(2)
    images = np.stack([image, (rng.random((S, S)) * 255).astype(np.uint8), image])
    maps = np.stack([region.astype(np.float32), rng.random((S, S), dtype=np.float32), 1 - region.astype(np.float32)])
    x = torch.from_numpy((images / 255.0 - MEAN) / STD).float()[:, None]
    pct = [20, 50, 80]
    ours = F.road_scores(model, x, torch.from_numpy(maps), percentiles=pct, seed=7, batch_size=4)
    targets = [lambda out: out[0]] * len(x)  # RegionMean's output is P already
    torch.manual_seed(7)  # grad-cam draws its imputation noise from torch's global generator
    combined = ROADCombined(pct)(x, maps, targets, model)
    torch.manual_seed(7)
    lerf = ROADLeastRelevantFirstAverage(pct)(x, maps, targets, model)
    morf = ROADMostRelevantFirstAverage(pct)(x, maps, targets, model)  # noise drawn after LeRF's, as in Combined
    # grad-cam keeps float32 differences of values in [0, 1] and averages len(pct) of them in float32; the two
    # imputations solve the same system by different LUs and may round an imputed pixel to float32 one ulp
    # apart (|x| <= max |x|), which moves P = mean(x * STD + MEAN) by at most STD * 2u max|x|
    tol = 2 * (gamma(len(pct)) + 4 * U) + 2 * STD * 2 * U * float(x.abs().max())
    assert np.abs(ours["road_lerf"] - lerf).max() <= tol
    assert np.abs(ours["road_morf"] - morf).max() <= tol
    assert np.abs(ours["road_combined"] - combined).max() <= tol
    assert ours["road_morf"][0] < ours["road_morf"][2] and ours["road_combined"][0] > ours["road_combined"][2]


@pytest.mark.parametrize("most_relevant_first", [True, False])
@pytest.mark.parametrize("percentile", [10, 50, 90])
def test_road_imputation_equals_grad_cam_imputer(percentile, most_relevant_first):
    from pytorch_grad_cam.metrics.perturbation_confidence import RemoveLeastRelevantFirst, RemoveMostRelevantFirst
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer
    from scipy.sparse.linalg import spsolve

    rng = np.random.default_rng(percentile)
    img = torch.from_numpy(rng.standard_normal((1, 20, 24), dtype=np.float32))
    cam = torch.from_numpy(rng.random((20, 24), dtype=np.float32))
    remove = RemoveMostRelevantFirst if most_relevant_first else RemoveLeastRelevantFirst
    ref = remove(percentile, NoisyLinearImputer(noise=0.0))(img, cam)
    keep = F.road_keep_mask(cam, percentile, most_relevant_first)
    ours = F.road_impute(img, keep, noise=0.0)
    assert torch.equal(ours[0][keep], img[0][keep]) and torch.equal(ref[0][keep], img[0][keep])  # same pixels kept
    # grad-cam's own system A u = b: M = -A is an M-matrix (M^-1 >= 0), so two float32 fillings u1, u2
    # with residuals r1, r2 (in float64) differ by at most ||M^-1||_inf (||r1|| + ||r2||), ||M^-1||_inf = max(M^-1 1)
    from scipy.sparse import csc_matrix

    a, b = NoisyLinearImputer.setup_sparse_system(keep.astype(np.float32), img.numpy(), NoisyLinearImputer().weighting)
    a = csc_matrix(a)
    missing = np.flatnonzero(~keep.ravel())
    bound_inv = spsolve(-a, np.ones(len(missing))).max()
    res = [np.abs(a @ u[0].reshape(-1).double().numpy()[missing] - b[:, 0]).max() for u in (ours, ref)]
    assert np.abs(ours - ref).max().item() <= bound_inv * sum(res)
    assert bound_inv * sum(res) < 1e-3  # sharp enough to see a wrong weight (differences ~1e-2)


def test_road_leaves_the_global_random_state_alone():
    model, image, region = _case()
    x = torch.from_numpy((image / 255.0 - MEAN) / STD).float()[None, None]
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    F.road_scores(model, x, torch.from_numpy(region[None].astype(np.float32)), percentiles=(50,))
    assert torch.equal(torch.rand(3), expected)


def _per_image_table():
    # patient a: 6 images scoring 1; patients b-e: one image each scoring 0 (image-level and
    # patient-level resampling give different intervals)
    pats = ["a"] * 6 + ["b", "c", "d", "e"]
    rows = []
    for method, shift in (("gradcam", 0.0), ("random", 0.5)):
        for k, p in enumerate(pats):
            v = (1.0 if p == "a" else 0.0) * 0.5 + shift * (k % 2)
            rows.append({"model": "m", "method": method, "image_id": f"i{k}", "patient_id": p, "label": 1,
                         "deletion_auc": v, "insertion_auc": 1 - v})
    return pd.DataFrame(rows)


def test_summary_intervals_resample_patients_and_compare_with_random_maps():
    from pneumoloc.evaluate.bootstrap import bootstrap_ci, paired_bootstrap

    per = _per_image_table()
    s = F.summarize_faithfulness(per, n_boot=300, seed=5).set_index(["method", "metric"])
    g = per[per.method == "gradcam"]
    r = per[per.method == "random"]
    want = bootstrap_ci(np.mean, g["deletion_auc"].to_numpy(), groups=g["patient_id"].to_numpy(), n_boot=300, seed=5)
    by_image = bootstrap_ci(np.mean, g["deletion_auc"].to_numpy(), groups=g["image_id"].to_numpy(), n_boot=300,
                            seed=5)
    row = s.loc[("gradcam", "deletion_auc")]
    assert (row.value, row.low, row.high) == (want.value, want.low, want.high)
    assert (row.low, row.high) != (by_image.low, by_image.high)  # the grouping matters here
    d = paired_bootstrap(np.mean, [g["deletion_auc"].to_numpy()], [r["deletion_auc"].to_numpy()],
                         g["patient_id"].to_numpy(), n_boot=300, seed=5)
    assert row.vs_random_value == pytest.approx(d.value) and row.vs_random_low == pytest.approx(d.low)
    assert row.better == "lower" and s.loc[("gradcam", "insertion_auc")].better == "higher"
    assert np.isnan(s.loc[("random", "deletion_auc")].get("vs_random_value", np.nan))


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory):
    """The map-store test run (resnet18, random weights, 6 test images of 3 patients) with Grad-CAM maps."""
    from pneumoloc.explain.stored import compute_maps
    from test_explain_stored import make_run

    run = make_run(tmp_path_factory.mktemp("faith"))
    compute_maps(run, "resnet18", "gradcam", map_size=16, batch_size=8, progress=False)
    return run


@pytest.mark.slow
def test_run_faithfulness_scores_every_stored_map_and_the_random_baseline(stored_run):
    report = F.run_faithfulness(stored_run, n_images=6, steps=4, road=True, road_percentiles=(50,),
                                positives_only=False, n_boot=20, device="cpu", progress=False)
    per, s = report.per_image, report.summary
    assert set(per.method) == {"gradcam", "random"} and len(per) == 12
    assert set(per[per.method == "gradcam"].image_id) == set(per[per.method == "random"].image_id)
    assert set(s.metric) == set(F.METRICS) and (s.n == 6).all()
    assert ((s.low <= s.value + 1e-12) & (s.value <= s.high + 1e-12)).all()
    assert s[s.method == "gradcam"]["vs_random_value"].notna().all()
    assert per["input_size"].eq(64).all() and per["map_size"].eq(16).all()
    # positives only (the default): the 3 pneumonia images of the test split
    pos = F.run_faithfulness(stored_run, n_images=6, steps=2, road=False, n_boot=5, device="cpu", progress=False)
    assert (pos.per_image.label == 1).all() and pos.per_image.image_id.nunique() == 3
    # a split without a positive image with maps: a warning, an empty report and an empty table
    with pytest.warns(UserWarning, match="no positive image of split 'train'"):
        none = F.run_faithfulness(stored_run, split="train", n_images=2, steps=2, road=False, device="cpu",
                                  progress=False)
    assert none.per_image.empty and F.faithfulness_table(none.summary).empty
    # the same images and maps through faithfulness_scores give the same rows
    from pneumoloc.data.cache import cached_images
    from pneumoloc.data.tables import load_tables
    from pneumoloc.explain.stored import load_maps
    from pneumoloc.models.checkpoints import load_model

    g = per[per.method == "gradcam"]
    images = load_tables(stored_run).images.set_index("image_id").loc[g.image_id].reset_index()
    again = F.faithfulness_scores(load_model(stored_run.best_checkpoint("resnet18")), cached_images(images, 64, progress=False),
                                  load_maps(stored_run, "resnet18", "gradcam").take(g.image_id), steps=4,
                                  road_percentiles=(50,))
    assert np.allclose(again["deletion_auc"], g["deletion_auc"]) and np.allclose(again["road_morf"], g["road_morf"])


@pytest.mark.slow
def test_notebook_04_cells_run_on_a_stored_run(stored_run):
    """Notebook 04's faithfulness cell, executed on the run with its parameters' defaults."""
    from pneumoloc.environment import NOTEBOOKS_DIR
    from pneumoloc.runs.params import declared_parameters

    nb = json.loads((NOTEBOOKS_DIR / "04_localization_metrics.ipynb").read_text())
    params = declared_parameters("04_localization_metrics")
    assert {"faithfulness_n_images", "faithfulness_steps", "faithfulness_road_percentiles", "device"} <= set(params)
    cell = [c for c in nb["cells"] if c["cell_type"] == "code" and "run_faithfulness(" in "".join(c["source"])]
    assert len(cell) == 1
    shown = []
    env = {name: p.default for name, p in params.items()}
    env.update(run=stored_run, split="test", backbones=[], methods=[], n_boot=10, display=shown.append,
               faithfulness_n_images=2, faithfulness_steps=4, faithfulness_road_percentiles=[50])  # the cell is tested here
    exec("from pneumoloc.explain.faithfulness import run_faithfulness, faithfulness_table\n"
         + "".join(cell[0]["source"]), env)
    assert shown and (stored_run.localization / "faithfulness.csv").exists()
    assert (stored_run.localization / "faithfulness_per_image.csv").exists()
    env.update(faithfulness_n_images=0)
    exec("".join(cell[0]["source"]), env)  # 0 skips without error


class CountingRegionMean(RegionMean):
    """RegionMean that counts the images it is shown."""

    seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += len(x)
        return super().forward(x)


@pytest.mark.parametrize("target", ["pneumonia", "predicted"])
def test_map_independent_copies_go_through_the_model_once_per_image_set(target):
    """The image, its fully deleted copy and its blurred copy do not depend on the map: given
    :func:`endpoint_probabilities` of the images, a map's deletion / insertion and ROAD forward
    only the copies its map decides, and its scores equal the scores computed from scratch."""
    rng = np.random.default_rng(2)
    region = rng.random((S, S)) < 0.3
    model = CountingRegionMean(region).eval()
    images = (rng.random((3, S, S)) * 255).astype(np.uint8)
    maps = [rng.random((3, 8, 8), dtype=np.float32) for _ in range(2)]
    kw = dict(steps=5, batch_size=7, road_percentiles=(30, 70), target=target, seed=1)
    alone = [F.faithfulness_scores(model, images, m, **kw) for m in maps]
    model.seen = 0
    x = torch.from_numpy((images / 255.0 - MEAN) / STD).float()[:, None]
    ends = F.endpoint_probabilities(model, x, batch_size=7, target=target)
    assert model.seen == 3 * len(images) + (len(images) if target == "predicted" else 0)
    model.seen = 0
    shared = [F.faithfulness_scores(model, images, m, endpoints=ends, **kw) for m in maps]
    # per map: the interior steps of both curves and both ROAD orders at each percentile
    assert model.seen == len(maps) * len(images) * (2 * (kw["steps"] - 1) + 2 * len(kw["road_percentiles"]))
    # RegionMean scores each image alone: a region mean of at most N float32 terms in [0, 1]
    tol = gamma(N) + 8 * U
    for a, b in zip(alone, shared):
        assert list(a.columns) == list(b.columns)
        assert np.abs(a.to_numpy() - b.to_numpy()).max() <= tol
