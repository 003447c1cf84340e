"""Notebook 05's comparison table: one-pass bootstrap vs per-metric bootstrap calls.

Prints systems/s of :func:`pneumoloc.ensembles.report.compare_systems` (every metric of every
system evaluated once per patient resample) against the baseline that calls
``bootstrap_ci`` and ``paired_bootstrap`` per metric and system (same resamples, same
intervals), measured side by side, and their ratio. Also DeLong's covariance, mid-rank form
(Sun & Xu 2014) against the O(mn) kernel, on a test set of the size of RSNA's.

Run: .venv/bin/python bench/bench_ensemble_bootstrap.py
"""
import time

import numpy as np

from pneumoloc.ensembles.report import compare_systems
from pneumoloc.evaluate.bootstrap import bootstrap_ci, paired_bootstrap
from pneumoloc.evaluate.classification import binary_metrics
from pneumoloc.evaluate.delong import auc_covariance

N_IMAGES, N_SYSTEMS, N_BOOT, METRICS = 150, 6, 200, ("roc_auc", "pr_auc", "accuracy", "f1")


def baseline(y, groups, systems, reference):
    for p in systems.values():
        for m in METRICS:
            def stat(a, b, m=m):
                return binary_metrics(a, b, 0.5)[m]
            bootstrap_ci(stat, y, p, groups=groups, n_boot=N_BOOT)
            paired_bootstrap(stat, (y, p), (y, systems[reference]), groups, n_boot=N_BOOT)


def naive_delong(y, s):
    x, z = s[:, y == 1], s[:, y == 0]
    psi = (x[:, :, None] > z[:, None, :]) + 0.5 * (x[:, :, None] == z[:, None, :])
    return np.cov(psi.mean(2)) / x.shape[1] + np.cov(psi.mean(1)) / z.shape[1]


def timed(fn, *args):
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def main():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, N_IMAGES).astype(float)
    groups = np.repeat(np.arange(N_IMAGES // 2), 2)
    systems = {f"s{k}": np.clip(0.3 * y + 0.7 * rng.random(N_IMAGES), 0, 1) for k in range(N_SYSTEMS)}
    new = timed(compare_systems, y, groups, systems, "s0", METRICS, 0.5, N_BOOT)
    old = timed(baseline, y, groups, systems, "s0")
    print(f"comparison table ({N_SYSTEMS} systems, {len(METRICS)} metrics, n_boot={N_BOOT}, {N_IMAGES} images)")
    print(f"  one pass   {N_SYSTEMS / new:8.2f} systems/s")
    print(f"  per call   {N_SYSTEMS / old:8.2f} systems/s")
    print(f"  ratio      {old / new:8.1f}x")
    yd = rng.integers(0, 2, 6000)
    sd = rng.normal(size=(2, 6000)) + yd
    fast, slow = timed(auc_covariance, yd, sd), timed(naive_delong, yd, sd)
    print(f"DeLong covariance, 2 scores x 6000 images: mid-rank {1 / fast:8.1f}/s, O(mn) kernel "
          f"{1 / slow:8.2f}/s, ratio {slow / fast:.0f}x")


if __name__ == "__main__":
    main()
