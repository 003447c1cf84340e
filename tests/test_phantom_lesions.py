"""Lesions of the phantom: RSNA boxes grouped by patient; opacities inside the lungs, boxes tight."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pneumoloc.data.xrv_assets import RSNA_LABELS, torchxrayvision_data
from pneumoloc.phantom.lesions import draw_opacities, rsna_boxes


@pytest.fixture(scope="module")
def lungs() -> np.ndarray:
    """Two ellipses in a 96-px frame, like the lung fields of a small phantom image."""
    yy, xx = np.mgrid[0:96, 0:96]
    return (((xx - 30) / 17) ** 2 + ((yy - 48) / 32) ** 2 <= 1) | (((xx - 66) / 17) ** 2 + ((yy - 48) / 32) ** 2 <= 1)


def test_rsna_boxes_are_the_shipped_table_grouped_by_patient():
    table, starts = rsna_boxes()
    ref = pd.read_csv(torchxrayvision_data() / RSNA_LABELS).dropna(subset=["x"])  # independent count
    assert table.shape == (len(ref), 4) and len(starts) - 1 == ref["patientId"].nunique()
    assert starts[0] == 0 and starts[-1] == len(ref) and (np.diff(starts) >= 1).all()
    assert np.diff(starts).max() == ref.groupby("patientId").size().max()


@pytest.mark.parametrize("seed", range(6))
def test_opacities_stay_in_the_lungs_and_boxes_are_tight(lungs, seed):
    total, boxes = draw_opacities(np.random.default_rng(seed), lungs, max_opacities=3, conspicuity=1.0)
    assert 1 <= len(boxes) <= 3 and total.dtype == np.float32
    assert total.max() > 0 and not ((total > 0) & ~lungs).any()
    covered = np.zeros_like(lungs)
    for x, y, w, h in boxes:
        covered[y:y + h, x:x + w] = True
        inside = total[y:y + h, x:x + w] > 0
        # each box is the tight box of one opacity, so lesion pixels touch its four edges
        assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
    assert not ((total > 0) & ~covered).any()


def test_conspicuity_scales_intensity_and_keeps_the_boxes(lungs):
    full, boxes = draw_opacities(np.random.default_rng(1), lungs, 3, 1.0)
    half, same = draw_opacities(np.random.default_rng(1), lungs, 3, 0.5)
    none, again = draw_opacities(np.random.default_rng(1), lungs, 3, 0.0)
    assert boxes == same == again and not none.any()
    np.testing.assert_allclose(half, 0.5 * full, rtol=1e-6)


def test_max_opacities_caps_the_count(lungs):
    assert all(len(draw_opacities(np.random.default_rng(s), lungs, 1, 1.0)[1]) == 1 for s in range(5))
