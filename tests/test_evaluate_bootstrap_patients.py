"""The patient bootstrap moves a patient's images together, whatever the patients' sizes.

One patient with 50 images among 50 patients with one image each, rows shuffled so a patient's
images are not adjacent. An image-level bootstrap would draw the big patient's images
independently (about 50 * (1 - 1/e) distinct ones, some twice, some not at all); the cluster
bootstrap (Efron & Tibshirani 1993, sec. 8.5; Field & Welsh 2007) draws each patient k times and
then all of its images k times. The indices are recorded inside the real ``bootstrap_ci`` /
``paired_bootstrap`` calls, through the statistic, and from the ensemble report's resample counts.
"""
from __future__ import annotations

import numpy as np

from pneumoloc.ensembles.report import compare_localization
from pneumoloc.evaluate.bootstrap import bootstrap_ci, paired_bootstrap, patient_resamples
from pneumoloc.localize.metrics import Scores

N_BOOT = 200


def uneven_patients(seed: int = 0) -> np.ndarray:
    """Patient id per row: ``big`` holds 50 rows, ``p00``..``p49`` one each, rows shuffled."""
    groups = np.array(["big"] * 50 + [f"p{k:02d}" for k in range(50)])
    return np.random.default_rng(seed).permutation(groups)


def copies_per_patient(counts: np.ndarray, groups: np.ndarray) -> dict[str, set[int]]:
    """For each patient, the set of times its rows were drawn (one value = moved together)."""
    return {g: set(counts[groups == g].tolist()) for g in np.unique(groups)}


def assert_whole_patients(counts: np.ndarray, groups: np.ndarray) -> int:
    """Every patient's rows drawn equally often, patients drawn as many times as there are
    patients; returns how often the big patient was drawn."""
    copies = copies_per_patient(counts, groups)
    split = {g: c for g, c in copies.items() if len(c) > 1}
    assert not split, f"patients whose images were drawn different numbers of times: {split}"
    n_patients = len(copies)
    assert sum(next(iter(c)) for c in copies.values()) == n_patients
    return next(iter(copies["big"]))


def test_resampled_indices_keep_each_patient_whole():
    groups = uneven_patients()
    big_draws = [assert_whole_patients(np.bincount(idx, minlength=len(groups)), groups)
                 for idx in patient_resamples(groups, N_BOOT, seed=3)]
    # the big patient was absent, drawn once and drawn several times (P(absent) = (50/51)^51 ~ 0.36)
    assert {0, 1} <= set(big_draws) and max(big_draws) >= 2


def test_bootstrap_ci_resamples_whole_patients():
    groups = uneven_patients(1)
    rows = np.arange(len(groups))
    seen = []

    def record(r):  # the statistic sees the resampled row numbers
        seen.append(r.copy())
        return float(len(r))

    est = bootstrap_ci(record, rows, groups=groups, n_boot=N_BOOT, seed=5)
    assert len(seen) == N_BOOT + 1 and est.n_boot == N_BOOT  # the point estimate, then the resamples
    np.testing.assert_array_equal(seen[0], rows)
    sizes = [len(r) for r in seen[1:]]
    # 51 patients drawn, 'big' k times: 50 k + (51 - k) = 51 + 49 k rows, never anything in between
    assert all((s - 51) % 49 == 0 for s in sizes) and min(sizes) == 51 and max(sizes) >= 149
    big = [assert_whole_patients(np.bincount(r, minlength=len(groups)), groups) for r in seen[1:]]
    assert {0, 1} <= set(big) and max(big) >= 2


def test_paired_bootstrap_gives_both_systems_the_same_whole_patients():
    groups = uneven_patients(2)
    rows = np.arange(len(groups))
    seen = []

    def record(r):  # called on system a's rows, then on system b's (b's row numbers shifted by 1000)
        seen.append(r.copy())
        return 0.0

    paired_bootstrap(record, [rows], [rows + 1000], groups=groups, n_boot=50, seed=9)
    assert len(seen) == 102  # the point estimate and 50 resamples, each for a then b
    a, b = seen[2::2], seen[3::2]
    for ra, rb in zip(a, b):
        np.testing.assert_array_equal(rb - 1000, ra)  # same resample for both systems
        assert_whole_patients(np.bincount(ra, minlength=len(groups)), groups)


def test_ensemble_report_intervals_use_whole_patient_resamples():
    """compare_localization turns resamples into draw counts; its interval equals the one from
    whole-patient means computed here by hand."""
    groups = uneven_patients(4)
    # the big patient scores 1 on every image, the others 0: a resample's mean is
    # 50 k / (50 k + number of singles drawn), which an image-level bootstrap would not reproduce
    values = (groups == "big").astype(float)
    scores = {"a": {"hit": Scores(values, np.ones(len(values), bool), {})}}
    table = compare_localization(scores, groups, reference="a", n_boot=N_BOOT, seed=6)
    means = [values[idx].mean() for idx in patient_resamples(groups, N_BOOT, seed=6)]
    low, high = np.quantile(means, [0.025, 0.975])
    assert table.loc[0, "low"] == low and table.loc[0, "high"] == high
    # over a third of the resamples lack the big patient, so all of its 50 images: the lower
    # bound is 0 (drawing images one by one it would be ~0.4, the 2.5% quantile of Binomial(100, 1/2) / 100)
    assert table.loc[0, "low"] == 0.0
