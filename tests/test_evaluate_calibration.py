"""Calibration: hand-computed ECE, sklearn's calibration_curve, recovering a known temperature."""
import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_auc_score

from pneumoloc.evaluate.calibration import (apply_temperature, bin_index, expected_calibration_error,
                                            fit_temperature, reliability_table)


def test_ece_hand_computed():
    # 2 bins: [0, .5) holds .1, .3 (labels 0, 1): mean .2, frac .5, gap .3
    #         [.5, 1] holds .6, .8, 1.0 (labels 1, 1, 0): mean .8, frac 2/3, gap 2/15
    y = np.array([0, 1, 1, 1, 0])
    p = np.array([0.1, 0.3, 0.6, 0.8, 1.0])
    assert expected_calibration_error(y, p, n_bins=2) == pytest.approx(2 / 5 * 0.3 + 3 / 5 * 2 / 15)
    assert expected_calibration_error(np.array([1, 0]), np.array([1.0, 0.0])) == 0.0


def test_bins_edges_and_empty_bins():
    np.testing.assert_array_equal(bin_index(np.array([0.0, 0.0999, 0.1, 0.95, 1.0]), 10), [0, 0, 1, 9, 9])
    t = reliability_table(np.array([0, 1]), np.array([0.05, 0.95]), n_bins=10)
    assert t["count"].tolist() == [1] + [0] * 8 + [1]
    assert t["mean_prob"].isna().sum() == 8


def test_reliability_matches_sklearn_calibration_curve():
    rng = np.random.default_rng(1)
    p = rng.random(500)
    y = (rng.random(500) < p**1.5).astype(int)
    t = reliability_table(y, p, n_bins=10)
    t = t[t["count"] > 0]
    frac, mean = calibration_curve(y, p, n_bins=10, strategy="uniform")
    np.testing.assert_allclose(t["frac_pos"], frac)
    np.testing.assert_allclose(t["mean_prob"], mean)


@pytest.mark.parametrize("true_t", [0.5, 2.5])
def test_temperature_scaling_recovers_a_known_temperature(true_t):
    rng = np.random.default_rng(0)
    z = rng.normal(scale=2.0, size=40_000)  # true logits
    y = (rng.random(z.size) < 1 / (1 + np.exp(-z))).astype(int)
    observed = 1 / (1 + np.exp(-z * true_t))  # a model whose logits are scaled by true_t
    t_hat = fit_temperature(y, prob=observed)
    assert t_hat == pytest.approx(true_t, rel=0.05)
    assert fit_temperature(y, logits=z * true_t) == pytest.approx(t_hat, rel=1e-4)
    scaled = apply_temperature(observed, t_hat)
    assert expected_calibration_error(y, scaled) < expected_calibration_error(y, observed)
    assert roc_auc_score(y, scaled) == pytest.approx(roc_auc_score(y, observed))  # ranking kept


def test_separable_validation_warns_at_the_bound():
    with pytest.warns(UserWarning, match="bound"):
        t = fit_temperature(np.array([0, 0, 1, 1]), prob=np.array([0.2, 0.3, 0.7, 0.9]))
    assert t == pytest.approx(0.05, rel=1e-2)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="within"):
        expected_calibration_error([0, 1], [0.2, 1.2])
    with pytest.raises(ValueError, match="exactly one"):
        fit_temperature([0, 1])
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature([0.5], 0)


def test_calibration_table_equals_the_functions_it_joins():
    from pneumoloc.evaluate.calibration import calibration_table

    rng = np.random.default_rng(5)
    y_val, y_test = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    val = {"a": np.clip(0.6 * y_val + 0.4 * rng.random(200), 0, 1)}
    test = {"a": np.clip(0.6 * y_test + 0.4 * rng.random(200), 0, 1)}
    only = calibration_table(y_test, test, 5)
    assert list(only.columns) == ["ece"] and only.loc["a", "ece"] == expected_calibration_error(y_test, test["a"], 5)
    cal = calibration_table(y_test, test, 5, y_val, val)
    t = fit_temperature(y_val, prob=val["a"])
    assert cal.loc["a", "temperature"] == t
    assert cal.loc["a", "ece_scaled"] == expected_calibration_error(y_test, apply_temperature(test["a"], t), 5)
