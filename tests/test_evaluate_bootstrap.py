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


@pytest.mark.parametrize("n_groups,n_rows,n_boot,seed", [(1, 1, 5, 0), (3, 4, 0, 0), (2, 7, 50, 3), (37, 120, 200, 1),
                                                          (120, 120, 30, 9)])
def test_resamples_equal_the_one_patient_at_a_time_reference(n_groups, n_rows, n_boot, seed):
    """Same seed, same stream, same index arrays (values, order and dtype) as the loop that
    concatenates each drawn patient's rows; patients of unequal sizes, rows shuffled."""
    from references import patient_resamples_loop

    rng = np.random.default_rng(seed + 100)
    groups = np.concatenate([np.arange(n_groups), rng.integers(0, n_groups, n_rows - n_groups)]).astype(str)
    rng.shuffle(groups)
    fast, ref = patient_resamples(groups, n_boot, seed), patient_resamples_loop(groups, n_boot, seed)
    assert len(fast) == len(ref) == n_boot
    for a, b in zip(fast, ref):
        assert a.dtype == b.dtype and np.array_equal(a, b)
