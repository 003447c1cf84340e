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

__all__ = ["U", "LAMBDA", "NETWORK_MARGIN", "FLOAT64_CHANNELS", "gamma", "gamma_lambda", "sum_error",
           "normalized_error", "cam_tolerance", "map_tolerance", "other_path_error", "weighted_map_error",
           "scorecam_weight_error", "ablationcam_weight_error", "eigencam_error", "single_layer_tolerance",
           "library_cam_reference",
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
    raws = [t.detach().double().sum(1) for t in terms]
    raws = [r.clamp_min(0) for r in raws] if relu else raws
    return map_tolerance(raws, [sum_error(t, 1) for t in terms], size)


def map_tolerance(raws: Sequence[torch.Tensor], errs: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """Per-map bound ``[B]`` of raw maps normalised, upsampled and averaged (steps 3-5).

    Args:
        raws: one ``[B, h, w]`` raw map per target layer (after ReLU where the method has one).
        errs: absolute error bound of each raw map, broadcastable to it.
        size: output map size (bilinear, half-pixel centres).
    """
    ups, norm_errs = [], []
    for raw, err in zip(raws, errs):
        norm_errs.append(normalized_error(raw, err) + _OPS)
        ups.append(F.interpolate(_normalize(raw.double())[:, None], size=size, mode="bilinear",
                                 align_corners=False)[:, 0])
    mean_err = torch.stack(norm_errs).mean(0) + len(raws) * U
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
    from pneumoloc.explain import cams

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


# --- the grad-cam package's own methods: EigenCAM, ScoreCAM, AblationCAM ----------------------
# pneumoloc calls the package on its channels_last copy, the reference on a plain contiguous
# copy: the same code on inputs that differ by float32 rounding in the network's forward
# (activations A_k, and for ScoreCAM / AblationCAM the scores of masked or ablated inputs).
#
# 6. Network error (assumption). A deep network's forward error has no useful rigorous
#    bound (worst-case bounds multiply |W| over every layer). It is measured instead: the
#    plain copy against a float64 copy of itself, as the largest error of an image's values
#    relative to their scale (max |A| for activations; for a score, |W||h| + |b| of the logit
#    layer's dot product, whose terms set the size of its rounding). The other layout runs
#    the same sums in another order, so its errors follow the same model (independent
#    mean-zero roundings, Higham & Mary 2019); it is assumed to err by at most M = LAMBDA
#    times the measured relative error. Then ``|q_other - q_plain| <= (1 + M) rho scale + u |q|``
#    (the u |q| term: one rounding, in case the measurement happened to see none). The
#    masked / ablated scores are measured in float64 on the first FLOAT64_CHANNELS channels
#    only (each is one forward pass) and rho is assumed the same for the others.
# 7. Weighted maps (ScoreCAM, AblationCAM): raw = sum_k w_k A_k, so
#    ``|d raw| <= 2 sum_error(w A) + dA sum_k |w_k| + sum_k dw_k (|A_k| + dA)`` (both paths
#    round their own sum). ScoreCAM (Wang et al. 2020, eq. 5): w = softmax(s); with
#    ``|ds_k| <= e``, ``|d log w_k| <= 2 e`` so ``|dw_k| <= w_k expm1(2 e)``, plus the float32
#    softmax's own ``gamma_K + 4 u`` relative rounding on each path. AblationCAM (Desai &
#    Ramaswamy 2020, eq. 3): ``w_k = (s0 - s_k) / s0``, so ``|dw_k| <= (|s_k| e0 + |s0| e_k) /
#    (|s0| (|s0| - e0))`` plus 2 u |w_k| per path (subtraction, division); infinite when
#    |s0| <= e0. The package ablates with 0 or (min A - 1e7) depending on whether min A == 0;
#    both paths are assumed to take the same branch (min A is 0 exactly after a ReLU).
# 8. EigenCAM (Muhammad & Yeasin 2020): the map is ``p = C v1`` with C the channel-centred
#    [pixels x K] activations and v1 its first right singular vector. Elementwise
#    ``|dC| <= e_c = 2 dA + 2 (gamma_n + 2u) max|A|`` (centring on each path). LAPACK's SVD is
#    backward stable: exact for C + F, ``||F||_2 <= p(m, n) u ||C||_2`` (LAPACK Users' Guide
#    sec. 4.9: p "modestly growing"; it rests on Householder reductions, whose error Higham &
#    Mary 2019 bound probabilistically as in step 1, so p u = gamma~_max(m, n) is assumed). With
#    ``||E||_2 <= sqrt(nK) e_c + 2 p u sigma_1`` Wedin's theorem (Stewart & Sun 1990, Thm V.4.4) with
#    Weyl's inequality gives ``sin theta <= sqrt(2) ||E|| / (sigma_1 - sigma_2 - ||E||)``, and
#    ``||dv|| <= sqrt(2) sin theta`` when both SVDs return the same sign (LAPACK's Householder
#    signs are continuous in C away from ties; a flipped sign fails the comparison loudly).
#    Per pixel ``|dp_i| <= sqrt(K) e_c + ||C_i|| ||dv|| + 2 sum_error(C_i v)``. A gap
#    sigma_1 - sigma_2 not above ||E|| leaves v1 undetermined: the bound is infinite.
NETWORK_MARGIN = LAMBDA
FLOAT64_CHANNELS = 32


def other_path_error(f32: torch.Tensor, f64: torch.Tensor, scale: torch.Tensor,
                     values: torch.Tensor | None = None, scales: torch.Tensor | None = None) -> torch.Tensor:
    """Bound on ``|q_other - q_plain|`` (step 6) for the values of each image.

    Args:
        f32, f64: the measured values ``[B, ...]`` on the plain copy and on its float64 copy.
        scale: the rounding scale of each measured value, broadcastable to ``f32``.
        values, scales: the values to bound and their scales (default: the measured ones).

    Returns:
        float64, shaped like ``values``.
    """
    values = f32 if values is None else values
    scales = scale if scales is None else scales
    rel = ((f32.double() - f64.double()).abs() / torch.as_tensor(scale, dtype=torch.float64).clamp_min(1e-300))
    rho = rel.reshape(len(rel), -1).amax(1).reshape(-1, *[1] * (values.dim() - 1))
    return (1 + NETWORK_MARGIN) * rho * scales.double() + U * values.double().abs()


def weighted_map_error(w: torch.Tensor, dw: torch.Tensor, acts: torch.Tensor,
                       d_acts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw map ``relu(sum_k w_k A_k)`` ``[B, h, w]`` and its error bound (step 7).

    Args:
        w, dw: channel weights ``[B, K]`` and their bound.
        acts: activations ``[B, K, h, w]``; ``d_acts`` their bound ``[B]``.
    """
    a, da = acts.double(), d_acts.double()[:, None, None]
    wk, dwk = w.double()[..., None, None], dw.double()[..., None, None]
    terms = wk * a
    err = 2 * sum_error(terms, 1) + da * wk.abs().sum(1) + (dwk * (a.abs() + da[:, None])).sum(1)
    return terms.sum(1).clamp_min(0), err


def scorecam_weight_error(w: torch.Tensor, d_scores: torch.Tensor) -> torch.Tensor:
    """Bound on the ScoreCAM weights ``softmax(s)`` ``[B, K]`` given ``|ds| <= d_scores`` (step 7)."""
    spread = 2 * d_scores.double().amax(1, keepdim=True)
    return w.double().abs() * (torch.expm1(spread) + 2 * (gamma(w.shape[1]) + 4 * U))


def ablationcam_weight_error(w: torch.Tensor, base: torch.Tensor, scores: torch.Tensor,
                             d_base: torch.Tensor, d_scores: torch.Tensor) -> torch.Tensor:
    """Bound on the AblationCAM weights ``(s0 - s_k) / s0`` ``[B, K]`` (step 7).

    Args:
        w: the weights; ``base`` the unablated scores ``s0`` ``[B]``; ``scores`` the ablated
            ``s_k`` ``[B, K]``; ``d_base``, ``d_scores`` their bounds.
    """
    s0, e0 = base.double().abs()[:, None], d_base.double()[:, None]
    dw = (scores.double().abs() * e0 + s0 * d_scores.double()) / (s0 * (s0 - e0)) + 4 * U * w.double().abs()
    return torch.where(s0 > e0, dw, torch.full_like(dw, float("inf")))


def eigencam_error(acts: torch.Tensor, raw: torch.Tensor, d_acts: torch.Tensor) -> torch.Tensor:
    """Bound ``[B, h, w]`` on the EigenCAM projection ``raw`` of ``acts`` ``[B, K, h, w]`` (step 8).

    Args:
        acts: the activations the map was computed from; ``d_acts`` their bound ``[B]``.
        raw: the package's projection (before its ReLU), ``[B, h, w]``; only its shape is used.
    """
    a = acts.double()
    b, k, h, w = a.shape
    n = h * w
    c = a.reshape(b, k, n).transpose(1, 2)
    c = c - c.mean(1, keepdim=True)
    e_c = 2 * d_acts.double() + 2 * (gamma(n) + 2 * U) * a.abs().amax(dim=(1, 2, 3))
    _, sv, vh = torch.linalg.svd(c, full_matrices=False)
    sigma2 = sv[:, 1] if sv.shape[1] > 1 else torch.zeros(b, dtype=torch.float64)
    e_svd = math.sqrt(n * k) * e_c + 2 * gamma_lambda(max(n, k)) * sv[:, 0]
    delta = sv[:, 0] - sigma2 - e_svd
    sin = math.sqrt(2) * e_svd / delta.clamp_min(1e-300)
    dv = torch.where(delta > 0, (math.sqrt(2) * sin).clamp_max(2.0), torch.full_like(sin, float("inf")))
    rows = c.norm(dim=2)
    proj = 2 * sum_error(c * vh[:, :1], 2)
    dp = math.sqrt(k) * e_c[:, None] + rows * dv[:, None] + proj
    return dp.reshape(raw.shape)


class _Recorder:
    """A grad-cam target that records every score it returns (the package calls it per output)."""

    def __init__(self, target: Callable, store: list[float]):
        self.target, self.store = target, store

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        score = self.target(output)
        self.store.append(float(score))
        return score


def _record_score_scales(model: torch.nn.Module, store: list[torch.Tensor]):
    """Hook the logit layer (the last ``nn.Linear``): ``|W||h| + |b|`` of every row it computes."""
    fc = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]

    def hook(module, inputs, output):
        bias = 0.0 if module.bias is None else module.bias.detach().double().abs()
        store.append((inputs[0].detach().double().abs() @ module.weight.detach().double().abs().T + bias).amax(-1))
    return fc.register_forward_hook(hook)


def _package_cam(ex, x: torch.Tensor, method: str, targets: list, channels: int | None = None) -> dict:
    """Run the grad-cam package's ``method`` on ``ex`` and record what the map is made of.

    With ``channels`` given only the activations and the channel weights of the first
    ``channels`` channels are computed (their scores recorded), not the map.
    """
    import numpy as np
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.ablation_layer import AblationLayer, AblationLayerVit

    from pneumoloc.explain import cams

    if len(ex.layers) != 1:
        raise ValueError(f"{ex.layer_name!r}: the library-method bound handles one target layer")
    kwargs = {}
    if method == "ablationcam":
        kwargs["ablation_layer"] = AblationLayerVit() if ex.reshape_transform else AblationLayer()
    out = {"scores": [], "scales": [], "weights": []}
    with ex.trainable() as model:
        handle = _record_score_scales(model, out["scales"])
        cam = getattr(pgc, cams.LIBRARY_CAMS[method])(model=model, target_layers=ex.layers,
                                                       reshape_transform=ex.reshape_transform, **kwargs)
        cam.batch_size = 32
        get_weights = cam.get_cam_weights
        cam.get_cam_weights = lambda *a: out["weights"].append(get_weights(*a)) or out["weights"][-1]
        recorders = [_Recorder(t, out["scores"]) for t in targets]
        try:
            if channels is None:
                out["maps"] = torch.from_numpy(np.asarray(cam(input_tensor=x, targets=recorders)))
                out["acts"] = cam.activations_and_grads.activations[0].double()
            else:
                cam.activations_and_grads(x)
                out["acts"] = cam.activations_and_grads.activations[0].double()
                if channels:
                    cam.get_cam_weights(x, ex.layer, recorders, out["acts"][:, :channels].numpy(), None)
        finally:
            cam.activations_and_grads.release()
            handle.remove()
    out["scales"] = torch.cat(out["scales"])[len(x):]  # the first forward only captures A
    out["scores"] = torch.tensor(out["scores"], dtype=torch.float64)
    return out


def _split_scores(rec: dict, method: str, b: int) -> tuple[torch.Tensor | None, ...]:
    """(base s0 [B] or None, scores [B, K], base scales, scales [B, K]) from recorded scores."""
    s, sc = rec["scores"], rec["scales"]
    assert len(s) == len(sc), f"{len(s)} scores recorded but {len(sc)} logit-layer rows"
    if method == "scorecam":
        return None, s.view(b, -1), None, sc.view(b, -1)
    return s[:b], s[b:].view(b, -1), sc[:b], sc[b:].view(b, -1)


def library_cam_reference(plain, x: torch.Tensor, method: str, targets: list,
                          channels: int = FLOAT64_CHANNELS) -> dict:
    """The package's maps on the plain float32 copy and their per-map bound (steps 6-8).

    Args:
        plain: a contiguous :class:`pneumoloc.explain.cams.Explainable` (``channels_last=False``).
        x: input ``[B, 1, S, S]``; targets: one grad-cam target per image.
        method: ``"eigencam"``, ``"scorecam"`` or ``"ablationcam"``.
        channels: masked / ablated scores measured in float64 (step 6).

    Returns:
        ``maps`` (the package's output ``[B, S, S]``), ``tol`` (``[B]``), ``acts``
        (``[B, K, h, w]``), ``weights`` (``[B, K]`` or None), ``raw`` and ``err`` (``[B, h, w]``).
    """
    import dataclasses
    import copy

    ref = _package_cam(plain, x, method, targets)
    ex64 = dataclasses.replace(plain, model=copy.deepcopy(plain.model).double())
    exact = _package_cam(ex64, x.double(), method, targets, channels=0 if method == "eigencam" else channels)
    acts, b = ref["acts"], len(x)
    amax = acts.abs().amax(dim=(1, 2, 3), keepdim=True)
    d_acts = other_path_error(acts, exact["acts"], amax, amax.expand_as(acts)).amax(dim=(1, 2, 3))
    out = {"maps": ref["maps"], "acts": acts, "weights": None}
    if method == "eigencam":
        from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

        proj = torch.from_numpy(get_2d_projection(acts.float().numpy())).double()
        out["raw"], out["err"] = proj.clamp_min(0), eigencam_error(acts, proj, d_acts)
    else:
        w = torch.as_tensor(ref["weights"][0]).double()
        base, scores, base_sc, sc = _split_scores(ref, method, b)
        base64, scores64, _, _ = _split_scores(exact, method, b)
        n = scores64.shape[1]
        f32 = scores[:, :n] if base is None else torch.cat([base[:, None], scores[:, :n]], 1)
        f64 = scores64 if base is None else torch.cat([base64[:, None], scores64], 1)
        scale = sc[:, :n] if base is None else torch.cat([base_sc[:, None], sc[:, :n]], 1)
        d_scores = other_path_error(f32, f64, scale, scores, sc)
        if base is None:
            dw = scorecam_weight_error(w, d_scores)
        else:
            d_base = other_path_error(f32, f64, scale, base[:, None], base_sc[:, None])[:, 0]
            dw = ablationcam_weight_error(w, base, scores, d_base, d_scores)
        out["weights"] = w
        out["raw"], out["err"] = weighted_map_error(w, dw, acts, d_acts)
    out["tol"] = single_layer_tolerance(out["raw"], out["err"], tuple(x.shape[-2:]))
    return out


def single_layer_tolerance(raw: torch.Tensor, err: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Per-map bound ``[B]`` of one layer's raw map ``[B, h, w]`` through the package's
    normalise, upsample, normalise and pneumoloc's ``normalize_maps``.

    Bilinear upsampling is linear and min-max normalisation is invariant under positive
    affine maps, so the chain is one min-max normalisation of the upsampled raw map, whose
    error is at most ``err`` (step 4): step 3 applies once, with that map's range (at most
    the raw range). The 1e-7 guards of the normalisations scale both paths alike (their
    difference is second order); each normalisation adds a few roundings.
    """
    up = F.interpolate(raw.double()[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    d = torch.as_tensor(err, dtype=torch.float64).reshape(len(raw), -1).amax(1)
    return normalized_error(up, d[:, None, None]) + 3 * _OPS
