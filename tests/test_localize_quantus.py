"""pneumoloc's localization metrics against Quantus 0.6.0 (Hedstroem et al., JMLR 2023).

Which Quantus metric is each one's twin (Quantus called through its public ``metric(model=None,
x_batch, y_batch, a_batch, s_batch)`` with precomputed maps; it uses neither model nor x):

* ``pointing_game`` <-> ``PointingGame`` (Zhang et al. 2018): equal on a map with one peak. On a
  tied plateau Quantus scores 1 when *any* tied cell is in the mask, pneumoloc the *share* of tied
  cells inside (the expected hit with ties broken at random), so Quantus == (pneumoloc > 0).
  pneumoloc's ``tolerance`` neighbourhood has no Quantus counterpart and is not compared.
* ``energy_in_boxes`` <-> ``RelevanceMassAccuracy`` (Arras et al. 2022), sum(m*B)/sum(m), and
  ``AttributionLocalisation`` (Kohlbrenner et al. 2020) unweighted, the same ratio with 1e-9
  added to the denominator. Its ``weighted=True`` variant multiplies by the mask's share of the image.
* ``lung_attention_ratio`` <-> ``RelevanceMassAccuracy`` with the lung mask as segmentation.

Degenerate inputs differ by design: pneumoloc excludes all-zero maps and empty masks (counted,
never scored), Quantus scores them (asserted in :func:`test_degenerate_inputs_are_excluded_here_scored_there`).
Quantus's ``abs`` and normalise-by-max change nothing on pneumoloc's non-negative maps (ratios and
the argmax are invariant to a positive scale).

Maps are multiples of 1/256 (stored maps are float16 in [0, 1]), so every partial sum of up to
224 * 224 cells is a multiple of 2**-8 below 2**16 and exact in float32: pneumoloc's sums are exact
and the only rounding is one float64 division. Quantus gets the maps in float64: normalise by max
rounds each cell (u = 2**-53), its sums are off by at most gamma_P = P u / (1 - P u) relatively
(Higham 2002, eq. 3.5; non-negative terms) and it divides once; AttributionLocalisation's 1e-9
moves the ratio by at most r * 1e-9 / sum(m / max m). The bound is far below 1e-6, the issue's bar.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from pneumoloc.localize.metrics import energy_in_boxes, lung_attention_ratio, pointing_game

quantus = pytest.importorskip(
    "quantus", reason="quantus is a test-only package: pip install --no-deps quantus==0.6.0 cachetools "
                      "(pyproject.toml [tool.pneumoloc]; make test installs it)")

SIDES = (7, 16, 64, 224)
LEVELS = 256  # map values k / 256: exact in float16, and their sums exact in float32 (docstring)
U64 = 2.0 ** -53


def run_quantus(metric, maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Scores of a Quantus metric on precomputed ``[N, S, S]`` maps and masks (float64 maps)."""
    n, side = maps.shape[0], maps.shape[-1]
    x = np.zeros((n, 1, side, side), np.float32)  # only its shape is read
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore")  # empty-mask and 0/0 warnings of the degenerate cases
        out = metric(model=None, x_batch=x, y_batch=np.zeros(n, int), a_batch=maps[:, None].astype(np.float64),
                     s_batch=masks[:, None].astype(np.float64))
    return np.asarray(out, dtype=np.float64)


def dyadic_maps(rng: np.random.Generator, n: int, side: int, peaks: int = 1) -> np.ndarray:
    """float16 maps of values k / 256 below 1 with ``peaks`` cells at exactly 1 (the tied maximum)."""
    maps = rng.integers(0, LEVELS, (n, side * side)) / LEVELS
    for row in maps:
        row[rng.choice(side * side, peaks, replace=False)] = 1.0
    return maps.reshape(n, side, side).astype(np.float16)


def varied_masks(rng: np.random.Generator, n: int, side: int) -> np.ndarray:
    """Non-empty masks of very different sizes: one cell, rectangles from small to almost the
    whole image, and scattered random cells."""
    masks = np.zeros((n, side, side), bool)
    for i in range(n):
        kind = i % 4
        if kind == 0:
            masks[i, rng.integers(side), rng.integers(side)] = True
        elif kind == 3:
            masks[i] = rng.random((side, side)) < rng.uniform(0.05, 0.6)
            masks[i, 0, 0] = True
        else:
            h, w = rng.integers(1, side + 1, 2) if kind == 1 else (side - rng.integers(0, 2, 2))
            y, x = rng.integers(0, side - h + 1), rng.integers(0, side - w + 1)
            masks[i, y:y + h, x:x + w] = True
    return masks


def ratio_bound(maps: np.ndarray, ratio: np.ndarray, guard: float = 0.0) -> np.ndarray:
    """Bound on |pneumoloc - Quantus| of an energy share ``ratio`` (module docstring)."""
    flat = maps.reshape(len(maps), -1).astype(np.float64)
    p = flat.shape[1]
    gamma = p * U64 / (1 - p * U64)
    normalised_total = flat.sum(1) / flat.max(1)  # Quantus divides the batch by its max; every map peaks at 1
    return ratio * (2 * gamma + 6 * U64) + ratio * guard / normalised_total


@pytest.mark.parametrize("side", SIDES)
def test_pointing_game_equals_quantus_on_a_single_peak(side):
    rng = np.random.default_rng(side)
    maps, masks = dyadic_maps(rng, 24, side), varied_masks(rng, 24, side)
    ours = pointing_game(maps, masks)
    theirs = run_quantus(quantus.PointingGame(disable_warnings=True), maps, masks)
    assert ours.valid.all()
    np.testing.assert_array_equal(ours.values, theirs)
    if side > 7:  # the comparison saw both outcomes (on 7 x 7 some masks cover most of the image)
        assert 0 < ours.values.sum() < len(maps)


@pytest.mark.parametrize("side", SIDES)
def test_pointing_game_on_ties_is_the_share_here_and_any_in_quantus(side):
    rng = np.random.default_rng(100 + side)
    maps, masks = dyadic_maps(rng, 24, side, peaks=4), varied_masks(rng, 24, side)
    ours = pointing_game(maps, masks)
    theirs = run_quantus(quantus.PointingGame(disable_warnings=True), maps, masks)
    top = maps.reshape(len(maps), -1) == 1.0
    share = (top & masks.reshape(len(masks), -1)).sum(1) / top.sum(1)  # by hand: tied cells inside / tied
    np.testing.assert_array_equal(ours.values, share)
    np.testing.assert_array_equal(theirs, share > 0)
    assert ((share > 0) & (share < 1)).any()  # a plateau split by the mask, where the two differ


@pytest.mark.parametrize("side", SIDES)
def test_energy_in_boxes_is_relevance_mass_accuracy_and_attribution_localisation(side):
    rng = np.random.default_rng(200 + side)
    maps, masks = dyadic_maps(rng, 24, side), varied_masks(rng, 24, side)
    ours = energy_in_boxes(maps, masks)
    assert ours.valid.all()
    rma = run_quantus(quantus.RelevanceMassAccuracy(disable_warnings=True), maps, masks)
    al = run_quantus(quantus.AttributionLocalisation(disable_warnings=True), maps, masks)
    tol_rma, tol_al = ratio_bound(maps, rma), ratio_bound(maps, al, guard=1e-9)
    assert (np.abs(ours.values - rma) <= tol_rma).all() and (np.abs(ours.values - al) <= tol_al).all()
    assert tol_rma.max() < 1e-6 and tol_al.max() < 1e-6
    assert np.ptp(ours.values) > 0.3  # masks of very different sizes give very different shares


def test_weighted_attribution_localisation_multiplies_by_the_mask_share():
    """Quantus 0.6.0 takes the image size as ``x_batch[2:].size`` (the batch minus its first two
    inputs, where ``prod(x_batch.shape[2:])`` is meant): with three one-channel images both are
    the image's cell count, so the check holds for the intended definition."""
    rng = np.random.default_rng(7)
    maps, masks = dyadic_maps(rng, 3, 32), varied_masks(rng, 3, 32)
    theirs = run_quantus(quantus.AttributionLocalisation(weighted=True, disable_warnings=True), maps, masks)
    share = masks.reshape(3, -1).mean(1)
    expected = energy_in_boxes(maps, masks).values * share
    np.testing.assert_allclose(theirs, expected, rtol=0, atol=ratio_bound(maps, expected, guard=1e-9).max())


def lung_pairs(rng: np.random.Generator, n: int, side: int) -> np.ndarray:
    """Two ellipses per image (a lung-field stand-in), their size and position varied."""
    yy, xx = np.mgrid[:side, :side] + 0.5
    masks = np.zeros((n, side, side), bool)
    for i in range(n):
        ry, rx = side * rng.uniform(0.1, 0.4), side * rng.uniform(0.05, 0.2)
        cy = side * rng.uniform(0.35, 0.65)
        for cx in (side * rng.uniform(0.2, 0.35), side * rng.uniform(0.65, 0.8)):
            masks[i] |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
            masks[i, int(cy), int(cx)] = True  # a small ellipse on 7 x 7 may hold no cell centre
    return masks


@pytest.mark.parametrize("side", SIDES)
def test_lar_is_relevance_mass_accuracy_of_the_lung_mask(side):
    rng = np.random.default_rng(300 + side)
    maps, lungs = dyadic_maps(rng, 16, side), lung_pairs(rng, 16, side)
    assert lungs.reshape(16, -1).any(1).all()
    ours = lung_attention_ratio(maps, lungs)
    rma = run_quantus(quantus.RelevanceMassAccuracy(disable_warnings=True), maps, lungs)
    tol = ratio_bound(maps, rma)
    assert ours.valid.all() and (np.abs(ours.values - rma) <= tol).all() and tol.max() < 1e-6


def test_degenerate_inputs_are_excluded_here_scored_there():
    """An all-zero map and an empty mask: pneumoloc excludes and counts them; Quantus scores them.

    Quantus's pointing game: every cell of a zero map ties at the maximum, so it "hits" any
    non-empty mask; an empty mask is meant to give NaN, but NaN written into its boolean array
    becomes True. RelevanceMassAccuracy gives NaN for both (0/0 and the empty-mask rule);
    AttributionLocalisation gives 0 for the zero map (its 1e-9 guard) and NaN for the empty mask.
    """
    rng = np.random.default_rng(11)
    maps, masks = dyadic_maps(rng, 3, 16), varied_masks(rng, 3, 16)
    maps[1] = 0
    masks[2] = False
    for ours in (pointing_game(maps, masks), energy_in_boxes(maps, masks)):
        np.testing.assert_array_equal(ours.valid, [True, False, False])
        assert ours.excluded == {"nonfinite_map": 0, "zero_map": 1, "no_box": 1}
    lar = lung_attention_ratio(maps, masks)
    assert lar.excluded == {"nonfinite_map": 0, "zero_map": 1, "no_lung": 1}
    pg = run_quantus(quantus.PointingGame(disable_warnings=True), maps, masks)
    rma = run_quantus(quantus.RelevanceMassAccuracy(disable_warnings=True), maps, masks)
    al = run_quantus(quantus.AttributionLocalisation(disable_warnings=True), maps, masks)
    np.testing.assert_array_equal(pg[1:], [1.0, 1.0])
    assert np.isnan(rma[1:]).all()
    assert al[1] == 0.0 and np.isnan(al[2])
    np.testing.assert_array_equal(pointing_game(maps, masks).values[0], pg[0])  # the valid image agrees
