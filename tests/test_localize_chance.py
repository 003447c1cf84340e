"""Chance baselines: their scores are known in closed form."""
import numpy as np
import pytest

from pneumoloc.localize import chance as B, metrics as L


def test_uniform_lung_map_scores_area_shares():
    lungs = np.zeros((1, 10, 10), bool)
    lungs[0, 1:9, 1:5] = True  # 32 cells
    boxes = np.zeros((1, 10, 10), bool)
    boxes[0, 2:4, 0:3] = True  # 6 cells, 4 of them inside the lungs
    maps = B.BASELINES["uniform_lung"](lungs)
    assert maps.dtype == np.float16
    assert L.lung_attention_ratio(maps, lungs).values[0] == 1.0
    assert L.energy_in_boxes(maps, boxes).values[0] == pytest.approx(4 / 32)
    assert L.lung_normalized_energy(maps, boxes, lungs).values[0] == pytest.approx(4 / 32)
    assert L.pointing_game(maps, boxes).values[0] == pytest.approx(4 / 32)  # a flat peak: chance


def test_box_prior_is_normalized_mean_of_training_boxes():
    prior = B.box_prior_map([np.array([[0, 0, 50, 50]]), np.array([[0, 0, 100, 50]]), np.zeros((0, 4))],
                            [100, 100, 100], [100, 100, 100], 4)
    expected = np.zeros((4, 4))
    expected[:2, :2] = 1.0  # covered by both boxes
    expected[:2, 2:] = 0.5  # covered by one of two
    assert np.allclose(prior, expected)
    maps = B.BASELINES["box_prior"](np.zeros((3, 4, 4), bool), prior=prior)
    assert maps.shape == (3, 4, 4)
    with pytest.raises(ValueError, match="training"):
        B.box_prior_map([np.zeros((0, 4))], [1], [1], 4)


def test_shuffled_boxes_come_from_other_patients():
    rng = np.random.default_rng(0)
    pats = np.repeat(np.arange(6), 3).astype(str)
    has = rng.random(18) < 0.7
    partner = B.shuffled_partners(has, pats, seed=1)
    idx = np.flatnonzero(has)
    assert (partner[~has] == -1).all()
    assert sorted(partner[idx]) == sorted(idx)  # a permutation of the positives
    assert (pats[partner[idx]] != pats[idx]).all()
    masks = np.zeros((18, 4, 4), bool)
    masks[idx, 0, 0] = True
    masks[idx, 1, np.arange(len(idx)) % 4] = True
    out = B.shuffled_box_masks(masks, pats, seed=1)
    assert (out[idx] == masks[partner[idx]]).all()
    with pytest.raises(ValueError, match="two patients"):
        B.shuffled_partners(np.ones(3, bool), ["p", "p", "p"])


def test_uniform_image_map_scores_the_lung_area_fraction_on_the_phantom(tmp_path):
    """LAR's chance level: a map that is 1 everywhere puts the lung-area share of its energy in the
    lungs. Ground truth: the phantom's exact lung masks, read at full resolution from its files."""
    from PIL import Image

    from pneumoloc.data.readers import read_dataset
    from pneumoloc.localize.ground_truth import ground_truth
    from pneumoloc.phantom.writer import generate_phantom

    root = generate_phantom(tmp_path / "ph", n_images=6, size=64, workers=1)
    tables = read_dataset("phantom", str(root))
    size = 16
    gt = ground_truth(tables, tables.images["image_id"], size, "dataset")
    maps = B.BASELINES["uniform_image"](gt.lungs.masks)
    assert maps.dtype == np.float16 and maps.shape == gt.lungs.masks.shape
    lar = L.lung_attention_ratio(maps, gt.lungs.masks).values
    cells = gt.lungs.masks.reshape(len(maps), -1)
    assert np.allclose(lar, cells.mean(1), rtol=0, atol=1e-12)  # exactly the share of lung cells
    for k, path in enumerate(gt.images["mask_path"]):
        full = np.asarray(Image.open(path)) > 0
        # rasterizing to size x size moves at most the cells on the lung outline in or out
        m = gt.lungs.masks[k]
        edge = m ^ np.pad(m, 1, mode="edge")[2:, 1:-1] | m ^ np.pad(m, 1, mode="edge")[1:-1, 2:]
        assert abs(lar[k] - full.mean()) <= 2 * edge.mean(), (k, lar[k], full.mean())
    assert 0.1 < lar.mean() < 0.9  # the phantom's lungs are neither the whole image nor a speck


def test_uniform_lung_is_no_chance_level_for_lar():
    """A map that knows where the lungs are is not a map that knows nothing: no LAR row for it."""
    assert "lar" in B.BASELINE_METRICS_SKIPPED["uniform_lung"]
    assert "uniform_image" not in B.BASELINE_METRICS_SKIPPED
