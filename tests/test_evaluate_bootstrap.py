"""Percentile intervals and the patient bootstrap."""
from __future__ import annotations

import numpy as np
import pytest

from pneumoloc.evaluate.bootstrap import bootstrap_ci, patient_resamples, percentile_interval


def test_percentile_interval_is_the_central_quantile_pair():
    values = np.arange(101, dtype=float)  # quantiles of 0..100 are the percentages themselves
    assert percentile_interval(values, 0.95) == pytest.approx((2.5, 97.5))
    assert percentile_interval(values, 0.5) == pytest.approx((25.0, 75.0))


def test_percentile_interval_bands_stacked_curves_pointwise():
    curves = np.stack([np.full(3, v) for v in range(101)])  # 101 flat curves 0..100
    low, high = percentile_interval(curves, 0.9, axis=0)
    assert low.shape == (3,) and np.allclose(low, 5.0) and np.allclose(high, 95.0)


def test_resamples_draw_whole_patients():
    groups = np.array(["a", "a", "b", "c", "c", "c"])
    for idx in patient_resamples(groups, 20, seed=1):
        drawn = groups[idx]
        for g in set(drawn):  # every drawn patient comes with all of its images, k times
            assert (drawn == g).sum() % (groups == g).sum() == 0


def test_undefined_resamples_are_dropped_and_counted():
    y = np.array([0, 0, 1, 1])  # one class per patient: drawing one patient twice is undefined
    groups = np.array([0, 0, 1, 1])

    def stat(yb):
        if yb.min() == yb.max():
            raise ValueError("one class")
        return float(yb.mean())

    est = bootstrap_ci(stat, y, groups=groups, n_boot=50, seed=0)
    assert est.n_boot + est.dropped == 50 and est.dropped > 0
