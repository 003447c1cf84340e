"""Tolerances for maps computed two ways in float32, derived from rounding error.

Two correct implementations of a map (the fast CAM path and the grad-cam package, captum
and an autograd reference, channels_last and contiguous) differ only by float32 rounding,
whose size depends on the CPU's kernels (summation order, FMA, SIMD width). A bound on
that rounding, computed from the un-normalised terms being compared, holds on any CPU;
a constant that one CPU happens to meet does not.

Derivation (u = 2**-24, float32 unit roundoff; Higham, *Accuracy and Stability of
Numerical Algorithms*, 2nd ed. 2002, Lemma 3.1 and eq. 3.5):

1. A sum of K products ``r = sum_k t_k``, in any order and with or without FMA, is off
   by at most ``gamma_K * sum_k |t_k|``, ``gamma_K = K u / (1 - K u)`` (worst case). With
   rounding errors modelled as independent and mean zero, Higham & Mary (SIAM J. Sci.
   Comput. 41(5), 2019, Thm 3.1) replace it by ``gamma~_K = exp(lam sqrt(K) u + K u^2 /
   (1-u)) - 1``, failing with probability <= ``2 K exp(-lam^2 (1-u)^2 / 2)``; lam = 8 makes
   that < 1e-10 per sum for K <= 4096. The worst case is ~sqrt(K)/lam times looser
   (ResNet-50's 2048 channels on a 2x2 map: 0.3 instead of 0.05), too loose to see a bug,
   so the probabilistic bound is used. It is applied to the final reduction only: the
   terms are themselves float32 results of the network (activations, gradients) whose
   two computations may differ by kernel; that is not modelled separately and is left
   to the margin of lam = 8 (a typical error is lam ~ 1).
2. ReLU and ``abs`` are 1-Lipschitz: the error bound passes through unchanged.
3. Min-max normalisation ``n = (r - lo) / (hi - lo)`` with ``|dr|, |dlo|, |dhi| <= d``
   (min and max are 1-Lipschitz in the max norm) and range ``R = hi - lo``:
   ``|dn| = |R (dr - dlo) - (r - lo)(dhi - dlo)| / (R (R + dhi - dlo)) <= 4 d / (R - 2 d)``,
   plus a few u for the subtraction and division themselves. A map that is nearly
   constant (R close to 2 d) is genuinely ill-conditioned and gets an infinite bound.
4. Bilinear upsampling takes convex combinations (weights >= 0 summing to 1): the
   error does not grow beyond rounding of the interpolation (a few u on values <= 1).
5. The mean of L normalised layer maps carries the mean of their errors; it is then
   normalised again by step 3 with the range of the mean map.

With K = 1280 channels a map whose terms sum to ten times its range gets about
``4 * 8 * sqrt(1280) * 6e-8 * 10 = 7e-4``: far below the ~1e-1 differences a wrong ReLU or
weighting causes (tests/test_tolerances.py checks both sides).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = ["U", "LAMBDA", "gamma", "gamma_lambda", "sum_error", "normalized_error", "cam_tolerance",
           "assert_maps_close", "fast_cam_terms", "conv_input_grad_error"]

U = 2.0 ** -24  # float32 unit roundoff (half the machine epsilon)
# Higham & Mary 2019, Thm 3.1: the bound fails with probability <= 2 n exp(-lam^2 (1-u)^2 / 2);
# lam = 8 gives < 1e-10 per sum for n <= 4096 terms
LAMBDA = 8.0
_OPS = 4 * U  # rounding of a handful of elementwise operations on values in [0, 1]


def gamma(n: int) -> float:
    """Higham's worst case ``gamma_n = n u / (1 - n u)`` for an n-term dot product."""
    if n * U >= 1:
        raise ValueError(f"gamma({n}) undefined: n * u >= 1")
    return n * U / (1 - n * U)


def gamma_lambda(n: int, lam: float = LAMBDA) -> float:
    """Higham & Mary's probabilistic ``exp(lam sqrt(n) u + n u^2 / (1 - u)) - 1`` (step 1)."""
    return math.expm1(lam * math.sqrt(n) * U + n * U * U / (1 - U))


def sum_error(terms: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Bound on ``|fl(terms.sum(dim)) - terms.sum(dim)|`` (step 1), float64, ``dim`` removed."""
    t = terms.detach().double()
    return gamma_lambda(t.shape[dim]) * t.abs().sum(dim)


def normalized_error(raw: torch.Tensor, err: torch.Tensor | float) -> torch.Tensor:
    """Per-map bound on the min-max normalised map's error (step 3).

    Args:
        raw: un-normalised maps ``[..., h, w]`` (after ReLU / abs where the method has one).
        err: absolute error bound of ``raw``, a number or a tensor broadcastable to ``raw``.

    Returns:
        float64 ``[...]``: ``4 d / (R - 2 d) + 4 u`` with ``d`` the largest error and ``R`` the
        range of each map; ``inf`` where ``R <= 2 d``.
    """
    r = raw.detach().double()
    d = (torch.as_tensor(err, dtype=torch.float64) * torch.ones_like(r)).amax(dim=(-2, -1))
    span = r.amax(dim=(-2, -1)) - r.amin(dim=(-2, -1))
    bound = 4 * d / (span - 2 * d) + _OPS
    return torch.where(span > 2 * d, bound, torch.full_like(bound, float("inf")))


def _normalize(m: torch.Tensor) -> torch.Tensor:
    lo = m.amin(dim=(-2, -1), keepdim=True)
    return (m - lo) / (m - lo).amax(dim=(-2, -1), keepdim=True).clamp_min(1e-300)


def cam_tolerance(terms: Sequence[torch.Tensor], size: tuple[int, int], relu: bool = True) -> torch.Tensor:
    """Per-map error bound ``[B]`` of a CAM built like ``cams.upsample_maps`` (steps 1-5).

    Args:
        terms: one ``[B, K, h, w]`` tensor per target layer whose sum over K is the raw map
            (e.g. ``w_k * A_k`` for Grad-CAM, see :func:`fast_cam_terms`).
        size: output map size (bilinear, half-pixel centres).
        relu: whether the method clamps the raw map at 0 (head maps do not).
    """
    ups, errs = [], []
    for t in terms:
        raw = t.detach().double().sum(1)
        raw = raw.clamp_min(0) if relu else raw
        errs.append(normalized_error(raw, sum_error(t, 1)) + _OPS)
        ups.append(F.interpolate(_normalize(raw)[:, None], size=size, mode="bilinear", align_corners=False)[:, 0])
    mean_err = torch.stack(errs).mean(0) + len(terms) * U
    return normalized_error(torch.stack(ups).mean(0), mean_err[:, None, None])


def assert_maps_close(got: torch.Tensor, ref: torch.Tensor, tol: torch.Tensor, useful: float = 0.05) -> None:
    """Each map of ``got`` within its own bound of ``ref``, and some bound tight enough to matter.

    Args:
        got, ref: maps ``[N..., S, S]`` (e.g. ``[B, S, S]`` or ``[B, T, S, S]``).
        tol: per-map bounds ``[N...]`` (:func:`cam_tolerance`, :func:`normalized_error`).
        useful: at least one map's bound must be below this, so the comparison could see
            the ~1e-1 error of a wrong ReLU or weighting (a near-constant map is
            ill-conditioned and may have a loose or infinite bound).
    """
    err = (got.double() - ref.double()).abs().amax(dim=(-2, -1))
    tol = torch.as_tensor(tol, dtype=torch.float64).expand_as(err)
    bad = (err > tol).nonzero().tolist()
    assert not bad, f"maps {bad} differ by {err[err > tol].tolist()} > float32 bounds {tol[err > tol].tolist()}"
    assert (tol < useful).any(), f"every bound {tol.tolist()} >= {useful}: the comparison could not see a bug"


def _per_channel(combine: Callable, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``combine`` on each channel alone: ``[B, K, h, w]`` terms whose sum is ``combine(a, g)``.

    Every fast CAM's channel weight depends on that channel's own activation and gradient
    only, so the terms are the combine of one-channel slices (batched as B*K images).
    """
    b, k, h, w = a.shape
    return combine(a.reshape(b * k, 1, h, w), g.reshape(b * k, 1, h, w)).reshape(b, k, h, w)


def fast_cam_terms(ex, x: torch.Tensor, target: str, method: str) -> list[list[torch.Tensor]]:
    """Terms of a fast CAM: per explained target, per target layer, ``[B, K, h, w]``."""
    from pneumoloc import cams

    combine = cams.FAST_CAMS[method]
    x = x.to(ex.device, memory_format=ex.memory_format)
    logits, acts = cams._forward_capture(ex, x)
    index, sign = cams.resolve_targets(logits, ex.positive_index, target)
    scores = logits.gather(1, index.to(logits.device)) * sign.to(logits.device)
    reshape = ex.reshape_transform or (lambda t: t)
    out = []
    for t in range(scores.shape[1]):
        grads = torch.autograd.grad(scores[:, t].sum(), acts, retain_graph=True)
        out.append([_per_channel(combine, reshape(a.detach()).float(), reshape(g).float())
                    for a, g in zip(acts, grads)])
    return out


def conv_input_grad_error(conv: torch.nn.Conv2d, grad_out: torch.Tensor, input_shape) -> torch.Tensor:
    """Bound on the input gradient of ``conv`` (step 1): per input pixel it sums
    ``C_out * kh * kw`` products ``W * dL/dy``, whose absolute sum is the transposed
    convolution of ``|dL/dy|`` with ``|W|``."""
    w = conv.weight.detach().double()
    k = w.shape[0] * w.shape[2] * w.shape[3]
    total = torch.nn.grad.conv2d_input(tuple(input_shape), w.abs(), grad_out.detach().double().abs(),
                                       stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                                       groups=conv.groups)
    return gamma(k) * total
