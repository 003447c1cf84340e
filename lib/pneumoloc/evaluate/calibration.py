"""Calibration of P(pneumonia): expected calibration error, reliability data, temperature scaling.

Binary task, so calibration is measured for the *positive-class* probability (the
reliability diagram of P(pneumonia)): bin the probabilities into ``n_bins``
equal-width bins on [0, 1] (the last bin closed), and per bin compare the mean
probability with the fraction of positives. ECE is the count-weighted mean absolute
gap (Naeini et al. 2015; Guo et al. 2017, eq. 3 with the positive class as "confidence").

Temperature scaling (Guo et al. 2017, sec. 4.2) divides the logit by one scalar T > 0
fitted by minimizing the negative log-likelihood on the VALIDATION split; it changes
calibration but never the ranking (ROC-AUC unchanged).
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

__all__ = [
    "bin_index", "reliability_table", "expected_calibration_error", "fit_temperature",
    "apply_temperature", "calibration_table",
]

_EPS = 1e-12


def _check(y: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y, prob = np.asarray(y, dtype=float).ravel(), np.asarray(prob, dtype=float).ravel()
    if y.size != prob.size:
        raise ValueError(f"{y.size} labels but {prob.size} probabilities")
    if not np.isfinite(prob).all() or (prob < 0).any() or (prob > 1).any():
        raise ValueError("probabilities must be finite and within [0, 1]")
    return y, prob


def bin_index(prob: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """Equal-width bin of each probability: ``[k/B, (k+1)/B)``, with 1.0 in the last bin."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    return np.minimum((np.asarray(prob, dtype=float) * n_bins).astype(int), n_bins - 1)


def reliability_table(y: np.ndarray, prob: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """Per-bin data of a reliability diagram.

    Returns:
        One row per bin: ``bin, low, high, count, mean_prob, frac_pos, gap`` (empty bins
        have count 0 and NaN means).
    """
    y, prob = _check(y, prob)
    b = bin_index(prob, n_bins)
    count = np.bincount(b, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_prob = np.bincount(b, prob, n_bins) / count
        frac_pos = np.bincount(b, y, n_bins) / count
    edges = np.linspace(0, 1, n_bins + 1)
    return pd.DataFrame({"bin": np.arange(n_bins), "low": edges[:-1], "high": edges[1:],
                         "count": count, "mean_prob": mean_prob, "frac_pos": frac_pos,
                         "gap": np.abs(mean_prob - frac_pos)})


def expected_calibration_error(y: np.ndarray, prob: np.ndarray, n_bins: int = 10) -> float:
    """ECE = sum_b (n_b / N) |mean_prob_b - frac_pos_b| over non-empty equal-width bins."""
    t = reliability_table(y, prob, n_bins)
    t = t[t["count"] > 0]
    return float((t["count"] * t["gap"]).sum() / t["count"].sum())


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def apply_temperature(prob: np.ndarray, temperature: float) -> np.ndarray:
    """``sigmoid(logit(p) / T)``; T > 1 softens over-confident probabilities."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return 0.5 * (1 + np.tanh(0.5 * _logit(prob) / temperature))


def fit_temperature(y: np.ndarray, prob: np.ndarray | None = None, logits: np.ndarray | None = None,
                    bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """Temperature minimizing the validation NLL of ``sigmoid(logit / T)``.

    Pass either stored probabilities (``prob``) or raw ``logits``. The NLL is convex in
    1/T, so a bounded scalar search over log T finds the optimum.
    """
    from scipy.optimize import minimize_scalar

    if (prob is None) == (logits is None):
        raise ValueError("pass exactly one of prob= or logits=")
    z = _logit(_check(y, prob)[1]) if logits is None else np.asarray(logits, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if np.unique(y).size < 2:
        raise ValueError("temperature scaling needs both classes in the validation split")

    def nll(log_t: float) -> float:
        s = z / np.exp(log_t)
        # -[y log sigmoid(s) + (1-y) log sigmoid(-s)] = logaddexp(0, s) - y s
        return float(np.mean(np.logaddexp(0, s) - y * s))

    res = minimize_scalar(nll, bounds=np.log(bounds), method="bounded", options={"xatol": 1e-6})
    t = float(np.exp(res.x))
    if np.isclose(t, bounds, rtol=1e-3).any():
        # A separable (or tiny) validation split pushes T to 0 or infinity: the fit says nothing.
        warnings.warn(f"fitted temperature {t:.3g} sits at the search bound {bounds}: the validation "
                      f"split is separable or too small to fit it; treat the scaled ECE with caution",
                      stacklevel=2)
    return t


def calibration_table(y_test: np.ndarray, test: dict[str, np.ndarray], n_bins: int = 10,
                      y_val: np.ndarray | None = None, val: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """Test ECE per system; with validation data also the temperature fitted on it (NLL) and the
    test ECE after scaling (``temperature``, ``ece_scaled``)."""
    cal = pd.DataFrame({"ece": {name: expected_calibration_error(y_test, p, n_bins) for name, p in test.items()}})
    if val is not None:
        cal["temperature"] = pd.Series({name: fit_temperature(y_val, prob=p) for name, p in val.items()})
        cal["ece_scaled"] = pd.Series({name: expected_calibration_error(
            y_test, apply_temperature(test[name], cal.loc[name, "temperature"]), n_bins) for name in test})
    return cal
