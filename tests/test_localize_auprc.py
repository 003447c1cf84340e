"""Exact per-image AP (pneumoloc.localize.auprc): scikit-learn as the reference, with and without ties."""
import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from pneumoloc.localize import auprc as A, metrics as L


@pytest.mark.parametrize("levels", [None, 5, 64])
def test_auprc_matches_sklearn(levels):
    rng = np.random.default_rng(levels or 0)
    maps = rng.random((12, 24, 24))
    if levels:  # ties: few distinct values
        maps = np.round(maps * (levels - 1)) / (levels - 1)
    boxes = np.zeros(maps.shape, bool)
    boxes[:, 3:11, 5:17] = True
    boxes[::3, 15:20, 2:6] = True
    ref = [average_precision_score(b.ravel(), m.ravel()) for m, b in zip(maps, boxes)]
    sort = L.localization_auprc(maps, boxes, method="sort")
    assert np.allclose(sort.values, ref, atol=1e-9, rtol=0)
    m16 = maps.astype(np.float16)
    ref16 = [average_precision_score(b.ravel(), m.ravel().astype(float)) for m, b in zip(m16, boxes)]
    hist = L.localization_auprc(m16, boxes, method="histogram")
    assert np.allclose(hist.values, ref16, atol=1e-9, rtol=0)
    assert np.allclose(L.localization_auprc(m16.astype(np.float32), boxes).values, ref16, atol=1e-9)


def test_auprc_histogram_refuses_non_float16_values():
    with pytest.raises(ValueError, match="sort"):
        L.localization_auprc(np.full((1, 4, 4), 0.1), np.ones((1, 4, 4), bool), method="histogram")
    assert A.float16_codes(np.full((1, 2, 2), 1.5, np.float16)) is None
    assert A.float16_codes(np.full((1, 2, 2), -0.0, np.float16)).max() == 0


def test_average_precision_1d_matches_sklearn():
    rng = np.random.default_rng(3)
    y, s = rng.random(200) < 0.3, np.round(rng.random(200), 1)
    assert A.average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_level_counts_are_per_image_histograms():
    maps = np.array([[[0.0, 0.5], [0.5, 1.0]]], np.float16)
    counts = A.level_counts(A.float16_codes(maps))
    assert counts.shape == (1, A.F16_LEVELS) and counts.sum() == 4
    assert counts[0, 0] == 1 and counts[0, A.F16_LEVELS - 1] == 1  # 0.0 and 1.0 are the end levels
    assert counts[0, np.float16(0.5).view(np.uint16)] == 2


