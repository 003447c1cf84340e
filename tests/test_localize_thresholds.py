"""Threshold rules: Otsu against scikit-image, fractions, validation tuning, gating."""
import numpy as np
import pytest
from skimage.filters import threshold_otsu

from pneumoloc.localize import thresholds as T
from pneumoloc.localize.metrics import iou_dice


def test_otsu_partition_matches_skimage_on_uint8_levels():
    rng = np.random.default_rng(0)
    maps = np.clip(np.concatenate([rng.normal(0.2, 0.08, (6, 200)), rng.normal(0.7, 0.1, (6, 56))], 1), 0, 1)
    q = np.rint(maps * 255).astype(np.uint8).reshape(6, 16, 16)
    t = T.otsu_thresholds(maps.reshape(6, 16, 16).astype(np.float16))
    for qi, ti, m in zip(q, t, maps.reshape(6, 16, 16).astype(np.float16)):
        ref = threshold_otsu(qi)  # uint8 image: one bin per level
        assert ((m > ti) == (qi > ref)).all()
        assert 0 < (m > ti).sum() < m.size


def test_otsu_constant_map_gives_empty_mask():
    m = np.full((1, 4, 4), 0.25, np.float16)
    assert not T.binarize(m, T.otsu_thresholds(m)).any()


def test_fraction_and_registry():
    m = np.array([[[0.2, 0.8], [0.4, 1.0]]])
    assert T.thresholds_for("frac0.50", m)[0] == pytest.approx(0.5)
    assert T.binarize(m, T.thresholds_for("frac0.3", m)).sum() == 3
    assert T.fraction_thresholds(m.astype(np.float16), 0.5)[0] == 0.5  # float16 bit-pattern path
    with pytest.raises(KeyError, match="otsu"):
        T.thresholds_for("magic", m)


@pytest.mark.parametrize("rule", sorted(T.THRESHOLDS))
def test_every_rule_gives_one_threshold_per_image(rule):
    m = np.random.default_rng(1).random((3, 8, 8)).astype(np.float16)
    t = T.thresholds_for(rule, m)
    assert t.shape == (3,) and ((t >= 0) & (t <= 1)).all()


def test_tune_fraction_finds_the_box_level():
    # box cells 1.0, a ring at 0.6, background 0.1: fractions in [0.6, 1) give IoU 1
    maps = np.full((2, 10, 10), 0.1)
    boxes = np.zeros((2, 10, 10), bool)
    maps[:, 2:8, 2:8] = 0.6
    maps[:, 4:6, 4:6] = 1.0
    boxes[:, 4:6, 4:6] = True
    f = T.tune_fraction(maps, boxes)
    assert 0.55 < f < 1
    assert iou_dice(maps, boxes, T.fraction_thresholds(maps, f))[0].mean() == 1.0


def test_gate_and_tune_gate():
    masks = np.ones((4, 2, 2), bool)
    boxes = np.zeros((4, 2, 2), bool)
    boxes[:2] = True  # two positives (high prob), two negatives (low prob)
    probs = np.array([0.9, 0.8, 0.3, 0.1])
    assert T.gate(masks, probs, 0.5).reshape(4, -1).any(1).tolist() == [True, True, False, False]
    t = T.tune_gate(masks, boxes, probs)
    assert 0.3 < t <= 0.8
    # gate 0.5: positives keep their full masks (IoU 1 with full boxes), negatives become empty (1)
    assert T.gated_iou(masks, boxes, probs, 0.5).tolist() == [1, 1, 1, 1]
    assert T.gated_iou(masks, boxes, probs, 0.0).tolist() == [1, 1, 0, 0]
    assert T.gated_iou(masks, boxes, probs, 0.85).tolist() == [1, 0, 1, 1]


def test_check_rules_accepts_registered_and_fraction_rules_and_names_the_known_ones():
    T.check_rules(["otsu", "frac0.50", "frac0.3"])
    with pytest.raises(KeyError, match="unknown threshold rule 'otsuu'; known threshold rules: .*otsu"):
        T.check_rules(["otsu", "otsuu"])
    with pytest.raises(ValueError, match="frac<f> needs 0 <= f < 1"):
        T.check_rules(["frac1.5"])
