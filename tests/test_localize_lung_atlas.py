"""The v7labs lung atlas, its placement and its box search (hand-made cases and the real zip)."""
import numpy as np
import pytest

from pneumoloc.localize import lung_atlas as LA


def test_atlas_member_puts_a_lung_crop_on_the_atlas_grid():
    """Reading and rejecting masks is pneumoloc.data.xrv_assets' job (tests/test_data_xrv_assets_lung_fields.py)."""
    m = np.zeros((60, 100), bool)  # already cropped to the lungs, x 0..100
    m[:, :40] = True
    m[:, 60:] = True
    got = LA._atlas_member(m)
    assert got.shape == (LA.ATLAS_SIZE, LA.ATLAS_SIZE)
    # the gap 40..60 is columns 25.6..38.4 of 64
    assert got[:, :25].min() == 1 and got[:, 27:38].max() == 0 and got[:, 39:].min() == 1


def test_place_atlas_stretches_onto_the_box():
    ones = np.ones((LA.ATLAS_SIZE, LA.ATLAS_SIZE), np.float32)
    placed = LA.place_atlas(ones, (10, 5, 20, 30), (50, 40))
    expected = np.zeros((50, 40))
    expected[5:35, 10:30] = 1
    assert np.abs(placed - expected)[expected == 1].max() < 1e-6  # inside exactly 1
    assert placed[expected == 0].max() <= 0.51  # half a pixel of bilinear edge at most
    assert (placed[:, :9] == 0).all() and (placed[36:] == 0).all()


def test_fit_atlas_recovers_a_known_box():
    yy, xx = np.mgrid[:LA.ATLAS_SIZE, :LA.ATLAS_SIZE] / LA.ATLAS_SIZE
    atlas = ((((yy - 0.5) / 0.5) ** 2 + ((xx - 0.25) / 0.22) ** 2 < 1)
             | (((yy - 0.5) / 0.5) ** 2 + ((xx - 0.75) / 0.22) ** 2 < 1)).astype(np.float32)
    truth = (12.0, 8.0, 40.0, 44.0)
    dark = np.where(LA.place_atlas(atlas, truth, (64, 64)) > 0.5, 1.0, -1.0)
    got = LA.fit_atlas(atlas, dark, (8.0, 4.0, 48.0, 40.0))
    assert np.abs(np.subtract(got, truth)).max() < 1.5


@pytest.fixture(scope="module")
def atlas():
    return LA.lung_atlas()


def test_real_atlas_is_a_two_lung_probability_map(atlas):
    a = LA.ATLAS_SIZE
    assert atlas.shape == (a, a) and 0 <= atlas.min() and atlas.max() <= 1
    assert not atlas.flags.writeable  # shared by the cache
    # lungs fill the lateral thirds, the mediastinum separates them
    left, middle, right = atlas[a // 4:3 * a // 4, a // 5], atlas[a // 4:3 * a // 4, a // 2], atlas[a // 4:3 * a // 4, 4 * a // 5]
    assert left.mean() > 0.8 and right.mean() > 0.8 and middle.mean() < 0.3
    assert LA.lung_atlas() is atlas  # computed once per process
