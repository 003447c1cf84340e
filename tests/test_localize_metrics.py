"""Localization metrics: sklearn reference for AP, hand-worked cases, phantom-like ground truth."""
import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from pneumoloc.localize import metrics as L


def _random_boxes(rng, n, size):
    """Phantom-like ground truth: 1-2 boxes per image in original pixels of varied sizes."""
    boxes, widths, heights = [], rng.integers(600, 1200, n), rng.integers(600, 1200, n)
    for i in range(n):
        k = rng.integers(1, 3)
        w = rng.uniform(0.1, 0.3, k) * widths[i]
        h = rng.uniform(0.1, 0.4, k) * heights[i]
        x = rng.uniform(0, widths[i] - w)
        y = rng.uniform(0, heights[i] - h)
        boxes.append(np.stack([x, y, w, h], 1))
    return boxes, widths, heights


def test_box_masks_hand_case():
    # 100 x 200 image at size 10: x 10..40 -> cells whose centres lie in [1, 4): 1, 2, 3;
    # y 20..30 -> [1, 1.5) holds no centre, so the cell of the centre (1.25) is marked: row 1.
    m = L.box_masks([np.array([[10, 20, 30, 10], [90, 180, 10, 20]])], [100], [200], 10)
    expected = np.zeros((10, 10), bool)
    expected[1, 1:4] = True
    expected[9, 9] = True  # second box: x [9, 10), y [9, 10) -> cell (9, 9); union with the first
    assert (m[0] == expected).all()
    assert not L.box_masks([np.zeros((0, 4))], [5], [5], 4).any()


def test_hand_cases_lar_energy_pointing_lung_normalized():
    maps = np.array([[[1.0, 0.0], [0.5, 0.5]]])
    lungs = np.array([[[1, 0], [0, 1]]], bool)
    boxes = np.array([[[0, 0], [1, 1]]], bool)
    assert L.lung_attention_ratio(maps, lungs).values[0] == pytest.approx(1.5 / 2)
    assert L.energy_in_boxes(maps, boxes).values[0] == pytest.approx(1.0 / 2)
    assert L.pointing_game(maps, boxes).values[0] == 0.0  # peak at (0, 0), outside the box
    assert L.pointing_game(maps, boxes, tolerance=1.0).values[0] == 1.0  # box cell 1 away
    flat = np.array([[[1.0, 1.0], [1.0, 0.0]]])  # three tied maxima, one of them in the box
    assert L.pointing_game(flat, boxes).values[0] == pytest.approx(1 / 3)
    assert L.lung_normalized_energy(maps, boxes, lungs).values[0] == pytest.approx(0.5 / 1.5)


def test_iou_dice_hand_case():
    maps = np.zeros((1, 4, 4))
    maps[0, 0, :3] = [0.9, 0.8, 0.2]
    boxes = np.zeros((1, 4, 4), bool)
    boxes[0, 0, 1:3] = True
    iou, dice = L.iou_dice(maps, boxes, 0.5)  # prediction {(0,0), (0,1)}, truth {(0,1), (0,2)}
    assert iou.values[0] == pytest.approx(1 / 3)
    assert dice.values[0] == pytest.approx(2 * 1 / 4)
    iou, _ = L.iou_dice(maps, boxes, 0.95)  # empty prediction scores 0, not NaN
    assert iou.valid[0] and iou.values[0] == 0.0


def test_pointwise_detection_map_hand_case():
    # detections ranked by prob: hit (.9), miss on a positive (.8), negative image (.7), hit (.6)
    maps = np.zeros((4, 3, 3))
    boxes = np.zeros((4, 3, 3), bool)
    for i, (peak, box) in enumerate([((0, 0), (0, 0)), ((2, 2), (0, 0)), ((1, 1), None), ((1, 2), (1, 2))]):
        maps[i][peak] = 1.0
        if box:
            boxes[i][box] = True
    probs = [0.9, 0.8, 0.7, 0.6]
    # 3 positive images; precisions at the two hits: 1/1 and 2/4 -> AP = (1 + 0.5) / 3
    assert L.pointwise_detection_map(maps, boxes, probs) == pytest.approx(0.5)
    hits = np.array([1, 0, 0, 1])
    assert L.pointwise_detection_map(maps, boxes, probs) == pytest.approx(
        average_precision_score(hits, probs) * 2 / 3)


def test_exclusions_are_counted_never_nan():
    maps = np.zeros((3, 4, 4))
    maps[1, 0, 0] = 1.0
    maps[2, 1, 1] = 1.0
    boxes = np.zeros((3, 4, 4), bool)
    boxes[0, :2, :2] = boxes[1, :2, :2] = True  # image 2 has no box
    lungs = np.ones((3, 4, 4), bool)
    for s in (L.energy_in_boxes(maps, boxes), L.pointing_game(maps, boxes),
              L.localization_auprc(maps, boxes), *L.iou_dice(maps, boxes, 0.5),
              L.lung_normalized_energy(maps, boxes, lungs)):
        assert not np.isnan(s.values).any()
        assert s.valid.tolist() == [False, True, False]
        assert s.excluded["zero_map"] == 1 and s.excluded["no_box"] == 1
    lar = L.lung_attention_ratio(maps, lungs)
    assert lar.valid.tolist() == [False, True, True] and lar.excluded["zero_map"] == 1
    with pytest.raises(ValueError, match="no image is valid"):
        L.energy_in_boxes(maps[:1], boxes[:1]).mean()


def test_phantom_ground_truth_box_mask_map_scores_one_and_constant_scores_area():
    from pneumoloc.localize.thresholds import thresholds_for

    rng = np.random.default_rng(7)
    boxes, w, h = _random_boxes(rng, 20, 1024)
    masks = L.box_masks(boxes, w, h, 32)
    maps = masks.astype(np.float16)
    assert (L.pointing_game(maps, masks).values == 1).all()
    assert np.allclose(L.energy_in_boxes(maps, masks).values, 1)
    assert np.allclose(L.localization_auprc(maps, masks).values, 1)
    for rule in ("otsu", "frac0.50"):
        iou, dice = L.iou_dice(maps, masks, thresholds_for(rule, maps))
        assert np.allclose(iou.values, 1) and np.allclose(dice.values, 1)
    const = np.full(masks.shape, 0.3, np.float16)
    area = masks.reshape(20, -1).mean(1)
    assert np.allclose(L.energy_in_boxes(const, masks).values, area)


def test_torch_tensors_accepted():
    torch = pytest.importorskip("torch")
    maps = torch.rand(2, 8, 8)
    boxes = torch.zeros(2, 8, 8, dtype=torch.bool)
    boxes[:, 2:5, 2:5] = True
    ref = L.energy_in_boxes(maps.numpy(), boxes.numpy()).values
    assert np.allclose(L.energy_in_boxes(maps, boxes).values, ref)


def test_row_alignment_checked():
    with pytest.raises(ValueError, match="row-aligned"):
        L.energy_in_boxes(np.ones((2, 4, 4)), np.ones((3, 4, 4), bool))


def test_on_the_phantom_box_mask_maps_score_one_and_constant_maps_the_box_area(tmp_path):
    from pneumoloc.localize.lung_sources import lung_masks
    from pneumoloc.phantom.writer import generate_phantom
    from pneumoloc.data.readers import read_dataset
    from pneumoloc.localize.thresholds import thresholds_for

    tables = read_dataset("phantom", str(generate_phantom(tmp_path / "ph", n_images=10, size=64, workers=1)))
    im = tables.images
    boxes = L.boxes_by_image(tables.boxes, im["image_id"])
    masks = L.box_masks(boxes, im["width"], im["height"], 32)
    pos = masks.reshape(len(masks), -1).any(1)
    assert pos.sum() >= 3 and (~pos).sum() >= 1  # both classes present
    maps = masks.astype(np.float16)
    for s in (L.pointing_game(maps, masks), L.energy_in_boxes(maps, masks), L.localization_auprc(maps, masks),
              *L.iou_dice(maps, masks, thresholds_for("otsu", maps))):
        assert np.allclose(s.values[s.valid], 1) and s.valid.sum() == pos.sum()
        assert s.excluded["zero_map"] == (~pos).sum()  # negatives: empty box mask -> all-zero map
    const = np.full(masks.shape, 0.5, np.float16)
    e = L.energy_in_boxes(const, masks)
    assert np.allclose(e.values[pos], masks[pos].reshape(pos.sum(), -1).mean(1))
    lungs = lung_masks("dataset", im, 32).masks  # exact phantom lungs
    assert np.allclose(L.lung_attention_ratio(lungs.astype(np.float16), lungs).values, 1)


@pytest.mark.parametrize("width", [1, 7, 8, 13, 50176])  # packed bytes with and without padding
def test_row_counts_equal_bool_sums(width):
    rng = np.random.default_rng(width)
    a, b = rng.random((5, width)) < 0.5, rng.random((5, width)) < 0.3
    assert L._row_counts(a).tolist() == a.sum(1).tolist()
    assert L._row_counts(a, b).tolist() == (a & b).sum(1).tolist()


def test_iou_dice_and_pointing_game_equal_plain_numpy_on_random_maps():
    """Independent reference: per-image set arithmetic on float16 maps with tied maxima."""
    rng = np.random.default_rng(11)
    maps = np.round(rng.random((9, 21, 21)) * 6).astype(np.float16) / 6  # plateaus of tied peaks
    boxes, w, h = _random_boxes(rng, 9, 500)
    masks = L.box_masks(boxes, w, h, 21)
    t = rng.uniform(0.2, 0.8, 9)
    iou, dice = L.iou_dice(maps, masks, t)
    hit = L.pointing_game(maps, masks)
    for i, (m, g) in enumerate(zip(maps.astype(np.float32), masks)):
        p = m > np.float32(t[i])
        inter, union = np.sum(p & g), np.sum(p | g)
        assert iou.values[i] == inter / union and dice.values[i] == 2 * inter / (p.sum() + g.sum())
        top = m == m.max()
        assert hit.values[i] == np.sum(top & g) / np.sum(top)


def _with_nonfinite():
    """Rows: good, all-zero, one NaN cell, +inf cell, -inf cell, all NaN (every row has a box)."""
    maps = np.zeros((6, 4, 4), np.float32)
    maps[0, 0, 0], maps[0, 3, 3] = 1.0, 0.5
    for i, bad in ((2, np.nan), (3, np.inf), (4, -np.inf)):
        maps[i] = maps[0]
        maps[i, 1, 1] = bad
    maps[5] = np.nan
    boxes = np.zeros((6, 4, 4), bool)
    boxes[:, :2, :2] = True
    return maps, boxes, np.ones((6, 4, 4), bool)


def test_nonfinite_maps_are_excluded_and_counted_like_zero_maps():
    import warnings

    maps, boxes, lungs = _with_nonfinite()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 'invalid value' RuntimeWarning from a NaN map
        scores = [L.lung_attention_ratio(maps, lungs), L.pointing_game(maps, boxes),
                  L.energy_in_boxes(maps, boxes), L.lung_normalized_energy(maps, boxes, lungs),
                  *L.iou_dice(maps, boxes, 0.4), L.localization_auprc(maps, boxes),
                  L.localization_auprc(maps.astype(np.float16), boxes)]
    for s in scores:
        assert s.valid.tolist() == [True] + [False] * 5
        assert s.excluded["nonfinite_map"] == 4 and s.excluded["zero_map"] == 1
        assert np.isfinite(s.values).all() and (s.values[1:] == 0).all()
    good = L.energy_in_boxes(maps[:1], boxes[:1]).values[0]
    assert scores[2].values[0] == good == pytest.approx(1 / 1.5)  # hand: 1 of 1.5 energy in the box


def test_nonfinite_map_is_no_detection_like_a_zero_map():
    maps, boxes, _ = _with_nonfinite()
    probs = np.linspace(0.9, 0.4, 6)
    zeroed = np.where(np.isfinite(maps).all((1, 2))[:, None, None], maps, 0)
    assert L.pointwise_detection_map(maps, boxes, probs) == L.pointwise_detection_map(zeroed, boxes, probs)
    assert L.pointwise_detection_map(maps, boxes, probs) == pytest.approx(1 / 6)  # one hit of 6 boxed images
    clean, finite = L.finite_maps(maps)
    assert finite.tolist() == [True, True, False, False, False, False]
    assert np.array_equal(clean, zeroed) and clean.dtype == maps.dtype


def test_boxes_by_image_equals_the_group_by_group_reference():
    """Images with several boxes (rows interleaved), one box, none, and ids absent from the table."""
    import pandas as pd
    from references import boxes_by_image_groupby

    rng = np.random.default_rng(0)
    ids = rng.choice([f"img{i}" for i in range(30)], 90)
    boxes = pd.DataFrame({"image_id": ids, **{c: rng.random(90) * 200 for c in "xywh"}})
    query = [f"img{i}" for i in range(35)][::-1]
    fast, ref = L.boxes_by_image(boxes, query), boxes_by_image_groupby(boxes, query)
    assert len(fast) == len(ref) == len(query)
    for a, b in zip(fast, ref):
        assert a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)
