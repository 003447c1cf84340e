"""The ChestX-ray8 protocol: hand-worked boxes and overlaps, scipy and brute-force references,
and the run-level report on a synthetic run in the stored-maps format."""
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from pneumoloc.localize import chestxray8 as X
from pneumoloc.localize.rsna import box_iou

# overlaps are a handful of float64 operations on exact small integers: a few ulps
RTOL = 8 * np.finfo(float).eps


def test_overlaps_of_known_boxes():
    gt = [[0, 0, 4, 4]]
    detected = [[2, 2, 4, 4],   # corner overlap: 4 / (16 + 16 - 4), 4 / 16
                [1, 1, 2, 2],   # inside the truth: 4 / 16, all of it inside
                [0, 0, 8, 8],   # covers the truth: 16 / 64 both ways
                [4, 0, 4, 4]]   # touching edge: no area in common
    iou, iobb = X.box_overlaps(gt, detected)
    np.testing.assert_allclose(iou[0], [1 / 7, 1 / 4, 1 / 4, 0], rtol=RTOL)
    np.testing.assert_allclose(iobb[0], [1 / 4, 1, 1 / 4, 0], rtol=RTOL)


def test_iou_agrees_with_the_rsna_module():
    rng = np.random.default_rng(1)
    a = np.c_[rng.uniform(0, 50, (20, 2)), rng.uniform(1, 30, (20, 2))]
    b = np.c_[rng.uniform(0, 50, (15, 2)), rng.uniform(1, 30, (15, 2))]
    iou, _ = X.box_overlaps(a, b)
    np.testing.assert_allclose(iou, box_iou(a, b), rtol=RTOL, atol=0)


def test_two_blobs_give_two_boxes_per_level():
    m = np.zeros((10, 10))
    m[1:3, 1:4] = 100  # above 60 only
    m[6:9, 5:9] = 150  # above 60, with a core above 180
    m[7, 6] = 255
    per_level_60 = X.heatmap_boxes(m, levels=(60,))[0]
    np.testing.assert_array_equal(per_level_60, [[1, 1, 3, 2], [5, 6, 4, 3]])
    both = X.heatmap_boxes(m)[0]  # 60 then 180; the 180 box is the 8-connected core
    np.testing.assert_array_equal(both, [[1, 1, 3, 2], [5, 6, 4, 3], [6, 7, 1, 1]])
    scaled = X.heatmap_boxes(m, widths=[100], heights=[50], levels=(60,))[0]
    np.testing.assert_allclose(scaled, [[10, 5, 30, 10], [50, 30, 40, 15]], rtol=RTOL)


def test_diagonal_cells_are_one_component():
    m = np.zeros((6, 6))
    m[1, 1] = m[2, 2] = m[3, 3] = 255
    np.testing.assert_array_equal(X.heatmap_boxes(m, levels=(60,))[0], [[1, 1, 3, 3]])


def test_levels_are_exclusive_on_the_255_scale():
    m = np.zeros((8, 8))  # 0 and 255 fix the range: the values stay as written
    m[0, 0], m[0, 2], m[0, 4], m[2, 0], m[2, 2] = 60, 61, 255, 180, 181
    at60 = X.heatmap_boxes(m, levels=(60,))[0].tolist()
    at180 = X.heatmap_boxes(m, levels=(180,))[0].tolist()
    assert at60 == [[2, 0, 1, 1], [4, 0, 1, 1], [0, 2, 1, 1], [2, 2, 1, 1]]
    assert at180 == [[4, 0, 1, 1], [2, 2, 1, 1]]


def test_normalisation_makes_the_range_irrelevant():
    rng = np.random.default_rng(2)
    m = rng.random((3, 12, 12))
    a = X.heatmap_boxes(m)
    b = X.heatmap_boxes(3.0 * m - 7.0)  # affine with a positive slope: same normalised map
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_flat_and_nonfinite_maps_give_no_box():
    m = np.zeros((3, 8, 8), np.float32)
    m[1] = 0.7
    m[2, 3, 3] = np.nan
    m[2, 5, 5] = 1.0
    assert [len(b) for b in X.heatmap_boxes(m)] == [0, 0, 0]


def _reference_boxes(m, levels):
    """scipy: min-max to [0, 255] in float64, 8-connected labels, find_objects, per level."""
    rows = []
    s = (m - m.min()) * (255.0 / (m.max() - m.min()))
    for level in levels:
        labels, _ = ndimage.label(s > level, structure=np.ones((3, 3)))
        for sl in ndimage.find_objects(labels):
            rows.append((sl[1].start, sl[0].start, sl[1].stop - sl[1].start, sl[0].stop - sl[0].start))
    return sorted(rows)


def test_random_maps_match_scipy():
    rng = np.random.default_rng(3)
    low = rng.random((30, 6, 6)) ** 2
    maps = np.kron(low, np.ones((6, 6))) + 0.05 * rng.random((30, 36, 36))  # blobs and some speckle
    flat = maps.reshape(30, -1)
    s = (maps - flat.min(1)[:, None, None]) / np.ptp(flat, 1)[:, None, None] * 255
    for level in X.LEVELS:  # keep values off the levels, where float32 and float64 could disagree
        near = np.abs(s - level) < 1e-3
        maps[near] += 0.01
    got = X.heatmap_boxes(maps.astype(np.float32))
    assert sum(len(b) for b in got) > 60  # several boxes per map: the comparison has content
    for m, boxes in zip(maps.astype(np.float32).astype(np.float64), got):
        assert sorted(map(tuple, boxes.astype(int).tolist())) == _reference_boxes(m, X.LEVELS)


def _brute_force(gt, det):
    """Best IoU and IoBB per truth box with plain Python loops."""
    out = []
    for g, d in zip(gt, det):
        for gx, gy, gw, gh in g:
            best_iou = best_iobb = 0.0
            for dx, dy, dw, dh in d[:, :4]:
                iw = max(0.0, min(gx + gw, dx + dw) - max(gx, dx))
                ih = max(0.0, min(gy + gh, dy + dh) - max(gy, dy))
                inter = iw * ih
                best_iou = max(best_iou, inter / (gw * gh + dw * dh - inter))
                best_iobb = max(best_iobb, inter / (dw * dh))
            out.append((best_iou, best_iobb))
    return np.array(out).reshape(-1, 2)


def test_best_overlaps_match_brute_force():
    rng = np.random.default_rng(4)

    def boxes(k):
        return np.c_[rng.integers(0, 60, (k, 2)), rng.integers(1, 40, (k, 2))].astype(float)

    gt = [boxes(k) for k in (1, 2, 0, 3, 1)]
    det = [boxes(k) for k in (3, 0, 2, 4, 1)]  # image 1 has truth but no detection
    image, iou, iobb = X.best_overlaps(gt, det)
    np.testing.assert_array_equal(image, [0, 1, 1, 3, 3, 3, 4])
    ref = _brute_force(gt, det)
    np.testing.assert_allclose(np.c_[iou, iobb], ref, rtol=RTOL)
    assert iou[1] == iou[2] == 0 and iobb[1] == iobb[2] == 0


def test_accuracy_counts_boxes_strictly_above_t():
    best = np.array([0.5, 0.75, 0.1, 0.9])
    np.testing.assert_array_equal(X.accuracy(best, (0.1, 0.25, 0.5, 0.75)), [0.75, 0.75, 0.5, 0.25])
    # the paper's Pneumonia IoBB@0.5: 46 of its 120 boxes
    assert X.accuracy(np.r_[np.ones(46), np.zeros(74)], (0.5,))[0] == pytest.approx(0.3833, abs=5e-5)
    with pytest.raises(ValueError, match="no ground-truth box"):
        X.accuracy([], (0.5,))


def test_published_lines_only_for_nih():
    lines = X.published_lines("nih", ["Pneumonia"])
    text = "\n".join(lines)
    assert "IoBB@0.1 0.7500" in text and "@0.5 0.3833" in text and "@0.5 0.4833" in text
    assert "IoU@0.1 0.6333" in text and "@0.5 0.0333" in text
    assert X.published_lines("rsna", ["Pneumonia"]) == [] and X.published_lines("nih", ["Mass"]) == []


@pytest.fixture(scope="module")
def run_with_findings(tmp_path_factory):
    """The report tests' synthetic run, its boxes split into Pneumonia and Atelectasis, plus a
    per-finding map ``gradcam@Atelectasis`` (= the box masks) beside the binary maps."""
    from test_localize_report import SIZE, _synthetic_run

    from pneumoloc.explain.stored import load_maps, map_file, save_maps
    from pneumoloc.localize import metrics as L
    from pneumoloc.storage import save_table

    run, images, boxes = _synthetic_run(tmp_path_factory.mktemp("cxr8"))
    boxes = boxes.assign(finding=np.where(np.arange(len(boxes)) % 3 == 0, "Atelectasis", "Pneumonia"))
    save_table(run.boxes_table, boxes)
    good = load_maps(run, "good", "gradcam")
    ids = good.image_ids.astype(str)
    w, h = images.set_index("image_id").loc[ids, ["width", "height"]].to_numpy(float).T
    atel = L.box_masks(L.boxes_by_image(boxes[boxes.finding == "Atelectasis"], ids), w, h, SIZE)
    save_maps(map_file(run, "good", "gradcam@Atelectasis"), atel.astype(np.float16), ids,
              {**good.meta, "method": "gradcam@Atelectasis"})
    return run, images, boxes


def test_run_report_scores_each_finding_with_its_maps(run_with_findings, tmp_path):
    run, images, boxes = run_with_findings
    report = X.chestxray8_report(run, n_boot=20, progress=False)
    m = report.metrics
    test_ids = set(images.loc[images.split == "test", "image_id"])
    n_box = boxes[boxes.image_id.isin(test_ids)].groupby("finding").size()
    per = m.groupby(["model", "method", "finding"])["n"].first()
    assert per["good", "gradcam", "Pneumonia"] == n_box["Pneumonia"]
    assert per["good", "gradcam@Atelectasis", "Atelectasis"] == n_box["Atelectasis"]
    assert ("good", "gradcam@Atelectasis", "Pneumonia") not in per.index
    assert set(m.metric) == set(X.metric_names())
    # maps equal to the box masks on the box grid: every generated box is its truth box
    good = m[m.model == "good"]
    assert (good.value == 1).all() and (good.low == 1).all()
    bad = m[(m.model == "bad") & (m.metric == "acc_iou@0.75")]
    assert (bad.value < 1).all()
    assert set(report.per_box.finding) == {"Pneumonia", "Atelectasis"}
    report.save(tmp_path)
    saved = pd.read_csv(tmp_path / "chestxray8.csv")
    assert len(saved) == len(m) and (tmp_path / "chestxray8_boxes.csv").exists()
    wide = X.chestxray8_table(m)
    assert list(wide.columns[:3]) == ["finding", "model", "method"]
    assert len(wide) == len(m[["finding", "model", "method"]].drop_duplicates())
    assert wide.loc[(wide.model == "good") & (wide.method == "gradcam"), "acc_iobb@0.5"].item().startswith("1.000")
    head = report.context_lines()[0]
    n_img = boxes[boxes.image_id.isin(test_ids)].groupby("finding").image_id.nunique()
    assert head.startswith("ChestX-ray8 protocol")  # counts once, not once per model x method
    assert f"Pneumonia: {n_box['Pneumonia']} boxes on {n_img['Pneumonia']} images" in head
    wide_m = m.pivot_table(index=["model", "method", "finding"], columns="metric", values="value")
    for t in X.THRESHOLDS:  # IoBB >= IoU for every box (|B| <= |B u G|)
        assert (wide_m[f"acc_iobb@{t:g}"] >= wide_m[f"acc_iou@{t:g}"]).all()
    assert len(report.context_lines()) == 1  # dataset "synthetic": no published figures
    as_nih = X.ChestXray8Report(m, report.per_box, "nih", report.findings).context_lines()
    assert as_nih[0] == head and any("0.3833" in line for line in as_nih[1:]) and len(as_nih) == 4


def test_run_report_without_boxes_column_uses_the_label_finding(tmp_path):
    from test_localize_report import _synthetic_run

    run, images, boxes = _synthetic_run(tmp_path)
    report = X.chestxray8_report(run, label_finding="Lung Opacity", n_boot=10, progress=False)
    assert set(report.metrics.finding) == {"Lung Opacity"}
    assert set(report.metrics.method) == {"gradcam", "gradcam@layer3"}  # layer variant: label's maps
