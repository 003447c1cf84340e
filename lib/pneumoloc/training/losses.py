"""Classification losses, one registry, all masked for missing (NaN) targets.

Every loss takes ``logits [B, K]`` and float ``targets [B, K]`` where a NaN target
(an uncertain or unlabelled finding after the reader's policy) contributes
nothing: the loss is the mean over the *labelled* entries only. Binary pneumonia
is K = 1 (one logit, sigmoid); multi-label is K findings (independent sigmoids,
as in the MIMIC-CXR study's BCE-with-logits).

Registered losses (``LOSSES``):

- ``bce``: binary cross-entropy with logits.
- ``cross_entropy``: the paper's two-class softmax cross-entropy. For one logit
  ``z``, softmax over ``[0, z]`` gives ``P(1) = sigmoid(z)``, so it equals BCE
  exactly; with K >= 2 logits and a single target column it is the softmax
  cross-entropy over K classes (imported 2-logit heads).
- ``weighted_cross_entropy``: the same with inverse class-frequency weights
  ``w_c = N / (C * N_c)`` computed on the training targets.
- ``focal``: Lin et al. 2017, eq. 5: ``FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t)``;
  ``alpha`` is None (no weighting), ``"inverse_frequency"`` (alpha = share of
  negatives per output, so the rare class weighs more, as in Shahi & Bagale) or a
  number in (0, 1) (the weight of positives; negatives get 1 - alpha).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["LOSSES", "register_loss", "build_loss", "masked_mean", "FocalLoss", "class_frequencies"]

LOSSES: dict[str, Callable[..., nn.Module]] = {}


def register_loss(name: str) -> Callable:
    """Decorator adding a loss factory ``f(targets, gamma, alpha) -> nn.Module`` to :data:`LOSSES`."""
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        LOSSES[name] = fn
        return fn
    return deco


def masked_mean(values: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over entries whose target is not NaN (0 when nothing is labelled)."""
    mask = ~torch.isnan(targets)
    return (values * mask).sum() / mask.sum().clamp_min(1)


def class_frequencies(targets: np.ndarray | torch.Tensor) -> np.ndarray:
    """Share of positives per output column, ignoring NaN; shape ``[K]``."""
    t = np.asarray(targets, dtype=float).reshape(len(targets), -1)
    with np.errstate(invalid="ignore"):
        freq = np.nanmean(t, axis=0)
    return np.nan_to_num(freq, nan=0.5)


def _prepare(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    targets = targets.to(logits.dtype).reshape(logits.shape[0], -1)
    if targets.shape != logits.shape:
        raise ValueError(f"targets {tuple(targets.shape)} do not match logits {tuple(logits.shape)}")
    return logits, targets


class MaskedBCE(nn.Module):
    """BCE with logits, optional per-output positive/negative weights, NaN targets masked."""

    def __init__(self, pos_weight: torch.Tensor | None = None, neg_weight: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("pos_w", pos_weight if pos_weight is not None else torch.ones(1))
        self.register_buffer("neg_w", neg_weight if neg_weight is not None else torch.ones(1))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits, targets = _prepare(logits, targets)
        t = torch.nan_to_num(targets, nan=0.0)
        ce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
        return masked_mean(ce * (t * self.pos_w + (1 - t) * self.neg_w), targets)


class SoftmaxCE(nn.Module):
    """K-class softmax cross-entropy on a single target column of class indices.

    Targets with one column per logit (multi-label, or one logit) are not class
    indices: for them this is the per-output (sigmoid) cross-entropy, ``fallback``.
    """

    def __init__(self, class_weight: torch.Tensor | None = None, fallback: nn.Module | None = None):
        super().__init__()
        self.class_weight = class_weight
        self.fallback = fallback if fallback is not None else MaskedBCE()

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        targets = targets.reshape(logits.shape[0], -1)
        if targets.shape[1] == logits.shape[1]:
            return self.fallback(logits, targets)
        targets = targets[:, 0]
        keep = ~torch.isnan(targets)
        if not keep.any():
            return logits.sum() * 0
        w = None if self.class_weight is None else self.class_weight.to(logits.device, logits.dtype)
        return F.cross_entropy(logits[keep], targets[keep].long(), weight=w)


class FocalLoss(nn.Module):
    """Sigmoid focal loss (Lin et al. 2017, eq. 5) with NaN targets masked."""

    def __init__(self, gamma: float = 2.0, alpha: torch.Tensor | None = None):
        super().__init__()
        if gamma < 0:
            raise ValueError(f"focal_gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)
        self.alpha = alpha

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits, targets = _prepare(logits, targets)
        t = torch.nan_to_num(targets, nan=0.0)
        ce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")  # -log(p_t), stable
        p = torch.sigmoid(logits)
        p_t = p * t + (1 - p) * (1 - t)
        loss = ce * (1 - p_t) ** self.gamma
        if self.alpha is not None:
            a = self.alpha.to(logits.device, logits.dtype)
            loss = loss * (a * t + (1 - a) * (1 - t))
        return masked_mean(loss, targets)


def _alpha_tensor(alpha, targets) -> torch.Tensor | None:
    """Resolve the focal alpha option to a per-output tensor (or None)."""
    if alpha is None or (isinstance(alpha, str) and alpha.lower() in ("", "none")):
        return None
    if isinstance(alpha, str) and alpha == "inverse_frequency":
        if targets is None:
            raise ValueError("focal_alpha='inverse_frequency' needs the training targets")
        return torch.as_tensor(1.0 - class_frequencies(targets), dtype=torch.float32)
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"focal_alpha must be None, 'none', 'inverse_frequency' or a number in (0, 1); "
                         f"got {alpha!r}") from None
    if not 0 < a < 1:
        raise ValueError(f"focal_alpha as a number must lie in (0, 1); got {a}")
    return torch.tensor([a])


@register_loss("bce")
def _bce(targets=None, gamma: float = 2.0, alpha=None, num_outputs: int = 1) -> nn.Module:
    return MaskedBCE()


@register_loss("cross_entropy")
def _ce(targets=None, gamma: float = 2.0, alpha=None, num_outputs: int = 1) -> nn.Module:
    return SoftmaxCE()


@register_loss("weighted_cross_entropy")
def _wce(targets=None, gamma: float = 2.0, alpha=None, num_outputs: int = 1) -> nn.Module:
    if targets is None:
        raise ValueError("weighted_cross_entropy needs the training targets to weigh classes")
    freq = torch.as_tensor(class_frequencies(targets), dtype=torch.float32).clamp(1e-6, 1 - 1e-6)
    # w_c = N / (C * N_c) with C = 2 classes per output
    per_output = MaskedBCE(pos_weight=0.5 / freq, neg_weight=0.5 / (1 - freq))
    t = np.asarray(targets, dtype=float)
    if num_outputs == 1 or t.reshape(len(t), -1).shape[1] > 1:
        return per_output
    t = t.reshape(-1)
    counts = np.bincount(t[~np.isnan(t)].astype(int), minlength=num_outputs).clip(min=1)
    return SoftmaxCE(torch.as_tensor(counts.sum() / (num_outputs * counts), dtype=torch.float32), per_output)


@register_loss("focal")
def _focal(targets=None, gamma: float = 2.0, alpha=None, num_outputs: int = 1) -> nn.Module:
    return FocalLoss(gamma=gamma, alpha=_alpha_tensor(alpha, targets))


def build_loss(name: str, targets=None, gamma: float = 2.0, alpha=None, num_outputs: int = 1) -> nn.Module:
    """Build a registered loss.

    Args:
        name: a key of :data:`LOSSES`.
        targets: training targets ``[N]`` or ``[N, K]`` (NaN allowed) for frequency-based weights.
        gamma: focal exponent (focal only).
        alpha: focal alpha: None / ``"none"`` / ``"inverse_frequency"`` / number in (0, 1).
        num_outputs: number of logits K.
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known losses: {sorted(LOSSES)}")
    return LOSSES[name](targets=targets, gamma=gamma, alpha=alpha, num_outputs=num_outputs)
