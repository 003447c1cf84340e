"""Boxes from maps and the RSNA challenge metric, on hand-worked cases."""
import numpy as np
import pytest

from pneumoloc.localize import rsna as D


def test_box_iou_hand_case():
    iou = D.box_iou([[0, 0, 10, 10]], [[0, 0, 10, 5], [5, 5, 10, 10], [20, 20, 1, 1]])
    assert iou[0].tolist() == pytest.approx([0.5, 25 / 175, 0.0])


def test_cam_to_boxes_components_scaled_and_scored():
    m = np.zeros((1, 8, 8))
    m[0, 1:3, 1:4] = 0.9  # component A: rows 1-2, cols 1-3, peak 0.9
    m[0, 5:8, 6] = 0.6    # component B: rows 5-7, col 6
    boxes = D.cam_to_boxes(m, 0.5, widths=[80], heights=[160], probs=[0.5])[0]
    boxes = boxes[np.argsort(-boxes[:, 4])]
    assert boxes[0].tolist() == pytest.approx([10, 20, 30, 40, 0.45])
    assert boxes[1].tolist() == pytest.approx([60, 100, 10, 60, 0.30])
    assert len(D.cam_to_boxes(m, 0.5, min_cells=4)[0]) == 1  # B has 3 cells
    only = D.cam_to_boxes(m, 0.5, max_boxes=1)[0]  # A (6 cells) is the larger component
    assert only[:, :4].tolist() == [[1, 1, 3, 2]]


def test_cam_to_boxes_batch_equals_one_by_one():
    rng = np.random.default_rng(0)
    maps = rng.random((5, 12, 12))
    maps[2] = 0.0  # an image without components between others
    batch = D.cam_to_boxes(maps, 0.7, max_boxes=3)
    for i in range(5):
        single = D.cam_to_boxes(maps[i:i + 1], 0.7, max_boxes=3)[0]
        assert np.array_equal(batch[i], single)
    assert batch[2].shape == (0, 5) and all(len(b) <= 3 for b in batch)
    assert D.cam_to_boxes(np.zeros((1, 4, 4)), 0.5)[0].shape == (0, 5)


def test_image_precision_hand_cases():
    gt = np.array([[0, 0, 10, 10]])
    assert D.image_precision(gt, np.array([[0, 0, 10, 10, 0.9]])) == 1.0
    # IoU exactly 0.5 is a hit at t = 0.40 and 0.45 only (hit means IoU > t): 2 of 8 thresholds
    assert D.image_precision(gt, np.array([[0, 0, 10, 5, 0.9]])) == pytest.approx(2 / 8)
    # two truths, one perfect prediction: TP 1, FN 1 -> 1/2 at every threshold
    assert D.image_precision(np.array([[0, 0, 10, 10], [50, 50, 5, 5]]),
                             np.array([[0, 0, 10, 10, 0.3]])) == pytest.approx(0.5)
    # higher score matched first: the confident wrong box is a FP, the right one a TP -> 1/2
    assert D.image_precision(gt, np.array([[30, 30, 5, 5, 0.1], [0, 0, 10, 10, 0.2]])) == pytest.approx(0.5)
    assert D.image_precision(np.zeros((0, 4)), np.array([[0, 0, 1, 1, 0.5]])) == 0.0
    assert D.image_precision(np.zeros((0, 4)), np.zeros((0, 5))) is None


def test_rsna_map_skips_images_without_truth_or_prediction():
    gts = [np.array([[0, 0, 10, 10]]), np.zeros((0, 4)), np.zeros((0, 4))]
    preds = [np.array([[0, 0, 10, 10, 1.0]]), np.zeros((0, 5)), np.array([[0, 0, 2, 2, 0.4]])]
    assert D.rsna_map(gts, preds) == (pytest.approx(0.5), 1)
    with pytest.raises(ValueError, match="undefined"):
        D.rsna_map([np.zeros((0, 4))], [np.zeros((0, 5))])
    assert len(D.RSNA_IOU_THRESHOLDS) == 8 and D.RSNA_IOU_THRESHOLDS[-1] == 0.75


def _reference_boxes(m, t, min_cells):
    """One image at a time with plain 2-D labelling (independent of the batched code)."""
    from scipy import ndimage

    labels, k = ndimage.label(m > t, structure=np.ones((3, 3)))
    rows = []
    for j in range(1, k + 1):
        ys, xs = np.nonzero(labels == j)
        if len(ys) >= min_cells:
            rows.append([xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min(), m[ys, xs].max()])
    return np.array(sorted(rows)).reshape(-1, 5)


@pytest.mark.parametrize("threshold", [0.5, 0.9])  # 0.9 on noise: speckle, the vectorized path
def test_cam_to_boxes_matches_per_image_reference(threshold):
    maps = np.random.default_rng(2).random((4, 40, 40))
    for m, boxes in zip(maps, D.cam_to_boxes(maps, threshold, min_cells=2)):
        assert np.allclose(np.array(sorted(boxes.tolist())).reshape(-1, 5), _reference_boxes(m, threshold, 2))
