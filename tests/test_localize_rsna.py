"""The RSNA challenge metric on hand-worked cases."""
import numpy as np
import pytest

from pneumoloc.localize import rsna as D


def test_box_iou_hand_case():
    iou = D.box_iou([[0, 0, 10, 10]], [[0, 0, 10, 5], [5, 5, 10, 10], [20, 20, 1, 1]])
    assert iou[0].tolist() == pytest.approx([0.5, 25 / 175, 0.0])


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
