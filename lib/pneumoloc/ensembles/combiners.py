"""Ensembles of stored predictions and maps: a registry of combiners.

Every combiner is fitted on the VALIDATION predictions of its members (``[n, M]``
probabilities of pneumonia, one column per member) and returns a
:class:`FittedEnsemble` whose ``predict`` maps any ``[n', M]`` matrix (the test split)
to one probability per image. Nothing is re-run: inputs are the stored
``predictions.csv`` columns of notebook 02.

Combiners (registered by name, see :data:`COMBINERS`):

* ``mean`` — mean probability.
* ``auto_auc`` — the paper's ``auto_auc`` (Shahi & Bagale, ``ensemble_eval.py``):
  weights ``w_i = AUC_i / sum_j AUC_j`` from validation ROC-AUC, applied to the
  members' *logits*; the paper averages logits of a 2-logit softmax head, and
  ``softmax(sum w z)[1] = sigmoid(sum w logit(p))``, so stored probabilities reproduce it.
* ``vote`` — majority vote: the share of members whose probability reaches their
  threshold (0.5 by default); a tie (share 0.5) counts as positive at threshold 0.5.
* ``stacking`` — logistic regression on the members' validation logits (L2, sklearn).
* ``greedy`` — Caruana et al. (2004) forward selection with replacement on validation
  ROC-AUC: start empty, repeatedly add the member that most improves the averaged
  ensemble, keep the best prefix; the weights are the selection counts.

The ensemble map (:func:`ensemble_map`) is the (weighted) mean of the members'
per-image normalized maps, min-max renormalized per image so it obeys the same
contract as a stored map.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..evaluate.classification import roc_auc
from ..registry import Registry

__all__ = [
    "FittedEnsemble", "COMBINERS", "register_combiner", "combiner_names", "fit_ensemble",
    "weighted_average", "member_auc", "best_single", "ensemble_map", "normalize_maps",
]

_EPS = 1e-12  # clip for logits: keeps sigmoid(logit(p)) == p to ~1e-12 away from 0 and 1


@dataclass(frozen=True)
class FittedEnsemble:
    """A combiner fitted on validation predictions.

    Attributes:
        combiner: registry name.
        members: member (model) names, column order of the probability matrix.
        weights: non-negative member weights summing to 1 used for the ensemble MAP
            (uniform for ``mean``, ``vote`` and ``stacking``, whose weights are not
            convex).
        params: plain description of the fit (stored with results).
        predict_fn: ``[n, M]`` probabilities -> ``[n]`` ensemble probability.
    """

    combiner: str
    members: tuple[str, ...]
    weights: np.ndarray
    predict_fn: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    params: dict[str, Any] = field(default_factory=dict)

    def predict(self, probs: np.ndarray) -> np.ndarray:
        probs = _as_matrix(probs, len(self.members), f"ensemble {self.combiner!r}")
        return np.asarray(self.predict_fn(probs), dtype=float)


COMBINERS: Registry[Callable[..., FittedEnsemble]] = Registry("combiner")


def register_combiner(name: str):
    """Decorator: ``@register_combiner("mean")`` on ``fit(val_probs, y_val, members, **opts)``."""
    return COMBINERS.register(name)


def combiner_names() -> list[str]:
    """Combiner names in the order they are defined here (the order of notebook 05's tables)."""
    return COMBINERS.names()


def fit_ensemble(name: str, val_probs: np.ndarray, y_val: np.ndarray,
                 members: Sequence[str], **options: Any) -> FittedEnsemble:
    """Fit combiner ``name`` on validation probabilities ``[n, M]`` and labels ``[n]``.

    Raises:
        KeyError: unknown combiner; the message lists the known ones.
    """
    fit = COMBINERS.lookup(name)
    members = tuple(members)
    val_probs = _as_matrix(val_probs, len(members), f"combiner {name!r}")
    y_val = np.asarray(y_val).astype(int).ravel()
    if y_val.size != val_probs.shape[0]:
        raise ValueError(f"combiner {name!r}: {y_val.size} labels for {val_probs.shape[0]} rows")
    return fit(val_probs, y_val, members, **options)


def _as_matrix(probs: np.ndarray, n_members: int, who: str) -> np.ndarray:
    probs = np.asarray(probs, dtype=float)
    if probs.ndim == 1:
        probs = probs[:, None]
    if probs.ndim != 2 or probs.shape[1] != n_members:
        raise ValueError(f"{who}: expected probabilities [n, {n_members}], got shape {probs.shape}")
    if not np.isfinite(probs).all() or (probs < 0).any() or (probs > 1).any():
        raise ValueError(f"{who}: probabilities must be finite and within [0, 1]")
    return probs


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * z))  # overflow-free logistic


def weighted_average(probs: np.ndarray, weights: Sequence[float], space: str = "prob") -> np.ndarray:
    """Weighted mean of the members' probabilities (``space="prob"``) or logits (``"logit"``).

    Weights must be non-negative and are normalized to sum 1.
    """
    probs = np.asarray(probs, dtype=float)
    w = np.asarray(weights, dtype=float)
    if w.shape != (probs.shape[1],) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights {w.tolist()} must be {probs.shape[1]} non-negative numbers, not all 0")
    w = w / w.sum()
    if space == "prob":
        return probs @ w
    if space == "logit":
        return _sigmoid(_logit(probs) @ w)
    raise ValueError(f"space must be 'prob' or 'logit', got {space!r}")


def member_auc(y: np.ndarray, prob: np.ndarray) -> float:
    """A member's validation ROC-AUC (:func:`pneumoloc.evaluate.classification.roc_auc`); NaN
    when the labels hold one class, so such a member gets no AUC weight instead of an error."""
    y = np.asarray(y)
    return roc_auc(y, prob) if np.unique(y).size == 2 else float("nan")


def best_single(val_probs: np.ndarray, y_val: np.ndarray, members: Sequence[str]) -> str:
    """The member with the highest validation ROC-AUC (first one on ties)."""
    aucs = [member_auc(y_val, np.asarray(val_probs)[:, k]) for k in range(len(members))]
    return list(members)[int(np.nanargmax(aucs))]


def _uniform(m: int) -> np.ndarray:
    return np.full(m, 1.0 / m)


@register_combiner("mean")
def _fit_mean(val_probs, y_val, members, **_: Any) -> FittedEnsemble:
    w = _uniform(len(members))
    return FittedEnsemble("mean", members, w, lambda p: weighted_average(p, w), {"space": "prob"})


@register_combiner("auto_auc")
def _fit_auto_auc(val_probs, y_val, members, space: str = "logit", **_: Any) -> FittedEnsemble:
    aucs = np.array([member_auc(y_val, val_probs[:, k]) for k in range(len(members))])
    # The paper falls back to 0.5 for a member without a validation AUC.
    aucs = np.where(np.isfinite(aucs), aucs, 0.5)
    w = aucs / aucs.sum()
    return FittedEnsemble("auto_auc", members, w, lambda p: weighted_average(p, w, space),
                          {"space": space, "val_auc": aucs.tolist()})


@register_combiner("vote")
def _fit_vote(val_probs, y_val, members, threshold: float | Sequence[float] = 0.5,
              **_: Any) -> FittedEnsemble:
    t = np.broadcast_to(np.asarray(threshold, dtype=float), (len(members),)).copy()
    return FittedEnsemble("vote", members, _uniform(len(members)),
                          lambda p: (p >= t).mean(axis=1), {"thresholds": t.tolist()})


@register_combiner("stacking")
def _fit_stacking(val_probs, y_val, members, C: float = 1.0, **_: Any) -> FittedEnsemble:
    from sklearn.linear_model import LogisticRegression

    if np.unique(y_val).size < 2:
        raise ValueError("stacking needs both classes in the validation split")
    clf = LogisticRegression(C=C, max_iter=1000).fit(_logit(val_probs), y_val)
    return FittedEnsemble("stacking", members, _uniform(len(members)),
                          lambda p: clf.predict_proba(_logit(p))[:, 1],
                          {"C": C, "coef": clf.coef_.ravel().tolist(),
                           "intercept": float(clf.intercept_[0])})


@register_combiner("greedy")
def _fit_greedy(val_probs, y_val, members, n_iter: int = 20, **_: Any) -> FittedEnsemble:
    # Caruana et al. 2004, "Ensemble selection from libraries of models": hill-climb on the
    # validation ("hillclimb") set, selection with replacement, return the best prefix.
    m = len(members)
    counts, best_counts, best_score, picks = np.zeros(m), None, -np.inf, []
    running = np.zeros(val_probs.shape[0])
    for step in range(1, n_iter + 1):
        scores = [member_auc(y_val, (running + val_probs[:, k]) / step) for k in range(m)]
        k = int(np.nanargmax(scores))  # ties -> first member, deterministic
        counts[k] += 1
        running += val_probs[:, k]
        picks.append(members[k])
        if scores[k] > best_score + 1e-12:
            best_score, best_counts = scores[k], counts.copy()
    w = best_counts / best_counts.sum()
    return FittedEnsemble("greedy", members, w, lambda p: weighted_average(p, w),
                          {"picks": picks, "n_selected": int(best_counts.sum()),
                           "val_auc": float(best_score)})


def normalize_maps(maps: np.ndarray) -> np.ndarray:
    """Min-max normalize each ``[H, W]`` map of ``[N, H, W]`` to [0, 1]; a constant map -> 0."""
    maps = np.asarray(maps, dtype=np.float32)
    lo = maps.min(axis=(-2, -1), keepdims=True)
    rng = maps.max(axis=(-2, -1), keepdims=True) - lo
    return np.where(rng > 0, (maps - lo) / np.where(rng > 0, rng, 1), 0).astype(np.float32)


def ensemble_map(maps: np.ndarray, weights: Sequence[float] | None = None,
                 renormalize: bool = True) -> np.ndarray:
    """Ensemble map: weighted mean over members of per-image normalized maps.

    Args:
        maps: ``[M, N, H, W]`` maps of M members on the same N images (each already
            normalized per image, as stored).
        weights: ``[M]`` non-negative weights (uniform when None).
        renormalize: min-max renormalize each resulting map (so the ensemble map obeys
            the stored-map contract; scale-free metrics are unaffected).

    Returns:
        ``[N, H, W]`` float32.
    """
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim != 4:
        raise ValueError(f"maps must be [members, images, H, W], got shape {maps.shape}")
    w = _uniform(maps.shape[0]) if weights is None else np.asarray(weights, dtype=float)
    if w.shape != (maps.shape[0],) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights {np.ravel(w).tolist()} must be {maps.shape[0]} non-negative numbers, not all 0")
    out = np.tensordot((w / w.sum()).astype(np.float32), maps, axes=1)
    return normalize_maps(out) if renormalize else out.astype(np.float32)
