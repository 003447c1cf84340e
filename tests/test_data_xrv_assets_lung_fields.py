"""The v7labs lung fields: names, the degenerate-mask filter on hand-drawn masks, tight crops."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from scipy import ndimage as ndi

from pneumoloc.data import xrv_assets as lung_fields
from pneumoloc.data.xrv_assets import (_CROP_MAX, _is_degenerate, load_lung_mask, lung_mask_names,
                                       torchxrayvision_data)


def _two_lungs(gap: int = 10, right_scale: float = 1.0) -> np.ndarray:
    """Two upright ellipses side by side, like a PA lung field (width/height ~1.2)."""
    yy, xx = np.mgrid[0:200, 0:240]
    left = ((xx - 60) / 50) ** 2 + ((yy - 100) / 90) ** 2 <= 1
    r = 50 * right_scale
    right = ((xx - (110 + gap + r)) / r) ** 2 + ((yy - 100) / (90 * right_scale)) ** 2 <= 1
    return left | right


def test_the_zip_holds_517_masks_in_a_fixed_sorted_order():
    names = lung_mask_names()
    assert len(names) == 517 and list(names) == sorted(set(names))
    assert (torchxrayvision_data() / lung_fields.LUNG_ZIP).is_file()


@pytest.mark.parametrize("mask, usable", [
    (np.zeros((200, 240), bool), False),  # empty (82 of the v7labs masks)
    (_two_lungs(), True),
    (_two_lungs(right_scale=0.3), False),  # one lung plus a fragment
    (_two_lungs()[:, :115], False),  # a single lung
    (_two_lungs()[::3].T, False),  # squashed and turned: far taller than wide
])
def test_degenerate_masks_are_rejected(mask, usable):
    assert _is_degenerate(mask) is (not usable)


def test_usable_masks_are_two_lungs_cropped_tight_and_small():
    checked = 0
    for name in lung_mask_names()[:30]:
        crop = load_lung_mask(name)
        if crop is None:
            continue
        assert crop.dtype == bool and max(crop.shape) <= _CROP_MAX + 1
        assert crop[0].any() and crop[-1].any() and crop[:, 0].any() and crop[:, -1].any()
        assert ndi.label(crop)[1] == 2  # specks dropped, the two largest components kept
        checked += 1
    assert checked >= 20


def test_missing_torchxrayvision_names_the_fix(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install torchxrayvision"):
        torchxrayvision_data()
