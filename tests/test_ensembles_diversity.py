"""Diversity: references from numpy/scipy and hand-computed cases."""
import numpy as np
import pytest
from scipy.stats import spearmanr

from pneumoloc.ensembles.diversity import (disagreement, error_correlation, error_diversity, errors,
                                           map_agreement_matrix, map_rank_correlation, pixel_spread)


def test_errors_and_disagreement_by_hand():
    y = np.array([1, 0, 1, 0])
    p = np.array([[0.9, 0.2], [0.6, 0.7], [0.4, 0.8], [0.1, 0.3]])
    e = errors(y, p)
    np.testing.assert_array_equal(e, [[0, 1], [1, 1], [1, 0], [0, 0]])
    d = disagreement((p >= 0.5).astype(int), ["a", "b"])
    # decisions a=[1,1,0,0], b=[0,1,1,0]: differ on images 0 and 2
    assert d.loc["a", "b"] == pytest.approx(0.5) and d.loc["a", "a"] == 0


def test_error_diversity_bundles_errors_correlation_and_disagreement():
    y = np.array([1, 0, 1, 0])
    p = np.array([[0.9, 0.2], [0.6, 0.7], [0.4, 0.8], [0.1, 0.3]])
    div = error_diversity(y, p, ["a", "b"])
    np.testing.assert_array_equal(div.errors, errors(y, p))
    assert div.correlation.equals(error_correlation(errors(y, p), ["a", "b"]))
    assert div.disagreement.equals(disagreement((p >= 0.5).astype(int), ["a", "b"]))
    assert div.errors_per_member == {"a": 2, "b": 2}
    # a higher threshold turns a's 0.6 on the negative image 1 into a correct decision
    assert error_diversity(y, p, ["a", "b"], threshold=0.65).errors_per_member == {"a": 1, "b": 2}


def test_error_correlation_matches_numpy_corrcoef():
    rng = np.random.default_rng(0)
    e = (rng.random((200, 4)) < 0.3).astype(float)
    e[:, 1] = np.maximum(e[:, 1], e[:, 0])  # correlated pair
    np.testing.assert_allclose(error_correlation(e).to_numpy(), np.corrcoef(e.T), atol=1e-12)
    e[:, 3] = 0  # a member that never errs has no correlation
    assert np.isnan(error_correlation(e).to_numpy()[3, 0])


def test_map_rank_correlation_matches_scipy_per_image_with_ties():
    rng = np.random.default_rng(2)
    a = np.round(rng.random((6, 7, 7)), 1).astype(np.float16)  # float16 + ties, as stored
    b = np.round(a + rng.normal(scale=0.3, size=a.shape), 1).astype(np.float16)
    got = map_rank_correlation(a, b)
    ref = [spearmanr(a[i].ravel().astype(float), b[i].ravel().astype(float)).statistic for i in range(6)]
    np.testing.assert_allclose(got, ref, atol=1e-12)
    b[0] = 0  # constant map: NaN, not a number
    assert np.isnan(map_rank_correlation(a, b)[0])


def test_map_agreement_matrix_and_spread():
    rng = np.random.default_rng(3)
    m = rng.random((3, 5, 4, 4))
    m[2] = 1 - m[0]  # reversed ranking
    mat = map_agreement_matrix(m, ["a", "b", "c"])
    assert mat.loc["a", "a"] == 1 and mat.loc["a", "c"] == pytest.approx(-1)
    assert mat.loc["a", "b"] == pytest.approx(np.mean(map_rank_correlation(m[0], m[1])))
    np.testing.assert_allclose(pixel_spread(m), m.std(axis=0), atol=1e-6)
    assert pixel_spread(np.stack([m[0]] * 3)).max() < 1e-7  # identical members do not spread


def test_per_image_agreement_is_the_mean_over_pairs_and_nan_without_ranking():
    from pneumoloc.ensembles.diversity import per_image_agreement

    rng = np.random.default_rng(3)
    maps = rng.random((3, 5, 4, 4))
    maps[:, 4] = 0.5  # constant on every member: no ranking
    pairs = [map_rank_correlation(maps[i], maps[j]) for i, j in ((0, 1), (0, 2), (1, 2))]
    got = per_image_agreement(maps)
    np.testing.assert_allclose(got[:4], np.mean(pairs, axis=0)[:4])
    assert np.isnan(got[4])


def test_contrast_cases_take_least_and_most_agreement_preferring_boxed_images():
    from pneumoloc.ensembles.diversity import contrast_cases

    agreement = np.array([0.9, 0.1, np.nan, 0.5, 0.2, 0.95])
    has_box = np.array([True, True, True, True, False, True])
    # boxed and defined: 0 (0.9), 1 (0.1), 3 (0.5), 5 (0.95); least 2 then most 1
    np.testing.assert_array_equal(contrast_cases(agreement, has_box, 3), [1, 3, 5])
    np.testing.assert_array_equal(contrast_cases(agreement, np.zeros(6, bool), 1), [1])  # no box: all defined
    assert contrast_cases(np.full(3, np.nan), np.ones(3, bool), 4).size == 0
