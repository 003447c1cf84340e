"""DeLong's test: hand-computed cases, an O(mn) reference, and sklearn's AUC."""
import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from pneumoloc.evaluate.delong import auc_covariance, delong_ci, delong_test, structural_components

# Hand example: 3 positives, 2 negatives (labels first positives, then negatives).
Y = np.array([1, 1, 1, 0, 0])
A = np.array([0.9, 0.6, 0.4, 0.5, 0.2])  # psi rows [1,1],[1,1],[0,1]: AUC 5/6
B = np.array([0.3, 0.8, 0.1, 0.5, 0.2])  # psi rows [0,1],[1,1],[0,0]: AUC 1/2


def naive_covariance(y, scores):
    """DeLong 1988 eq. 4 straight from the psi kernel (O(mn)), an independent reference."""
    scores = np.atleast_2d(scores)
    x, yy = scores[:, y == 1], scores[:, y == 0]
    psi = (x[:, :, None] > yy[:, None, :]) + 0.5 * (x[:, :, None] == yy[:, None, :])
    v10, v01 = psi.mean(axis=2), psi.mean(axis=1)
    m, n = x.shape[1], yy.shape[1]
    return psi.mean(axis=(1, 2)), np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n


def test_hand_computed_components_and_variance():
    aucs, v10, v01 = structural_components(Y, A)
    assert aucs[0] == pytest.approx(5 / 6)
    np.testing.assert_allclose(v10[0], [1, 1, 0.5])
    np.testing.assert_allclose(v01[0], [2 / 3, 1])
    # S10 = var([1,1,.5]) = 1/12, S01 = var([2/3,1]) = 1/18 -> 1/12/3 + 1/18/2 = 1/18
    _, cov = auc_covariance(Y, A)
    assert cov[0, 0] == pytest.approx(1 / 18)


def test_hand_computed_two_model_test():
    # var_A = 1/18, var_B = 1/9, cov_AB = 1/24 + 1/36 = 5/72 -> var diff = 1/36, diff 1/3, z = 2
    _, cov = auc_covariance(Y, np.vstack([A, B]))
    np.testing.assert_allclose(cov, [[1 / 18, 5 / 72], [5 / 72, 1 / 9]])
    r = delong_test(Y, A, B)
    assert r.diff == pytest.approx(1 / 3)
    assert r.var == pytest.approx(1 / 36)
    assert r.z == pytest.approx(2.0)
    assert r.p_value == pytest.approx(2 * norm.sf(2.0))  # 0.0455
    assert r.p_value == pytest.approx(0.0455003, abs=1e-6)


@pytest.mark.parametrize("ties", [False, True])
def test_matches_naive_reference_and_sklearn(ties):
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 80)
    s = rng.normal(size=(3, 80)) + y
    if ties:
        s = np.round(s, 0)
    aucs, cov = auc_covariance(y, s)
    ref_aucs, ref_cov = naive_covariance(y, s)
    np.testing.assert_allclose(aucs, ref_aucs, atol=1e-12)
    np.testing.assert_allclose(cov, ref_cov, atol=1e-12)
    for k in range(3):
        assert aucs[k] == pytest.approx(roc_auc_score(y, s[k]), abs=1e-12)


def test_identical_scores_give_p_one_and_swapping_flips_sign():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 50)
    a, b = rng.random(50) + 0.3 * y, rng.random(50)
    same = delong_test(y, a, a)
    assert same.diff == 0 and same.p_value == 1.0
    ab, ba = delong_test(y, a, b), delong_test(y, b, a)
    assert ab.z == pytest.approx(-ba.z) and ab.p_value == pytest.approx(ba.p_value)


def test_ci_contains_auc_and_errors_are_clear():
    a, lo, hi = delong_ci(Y, A)
    assert lo <= a <= hi and a == pytest.approx(5 / 6)
    assert hi - a == pytest.approx(min(1 - a, norm.ppf(0.975) * np.sqrt(1 / 18)))
    with pytest.raises(ValueError, match="both classes"):
        delong_test(np.ones(4), np.arange(4.0), np.arange(4.0))
    with pytest.raises(ValueError, match="labels"):
        delong_test(Y, A[:4], B[:4])
