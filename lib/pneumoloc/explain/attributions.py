"""Gradient attributions through captum, and the heads' own class maps, as map methods.

The seven saliency methods the WILDCAT study compared, registered in
:data:`pneumoloc.explain.cams.METHODS` (Grad-CAM itself lives in :mod:`pneumoloc.explain.cams`):

==================  ===============================================================
``gradient``        vanilla gradient |dS/dx| (Simonyan et al. 2014)
``smoothgrad``      mean |gradient| over noisy copies (Smilkov et al. 2017)
``intgrad``         Integrated Gradients from a black image (Sundararajan et al. 2017)
``smoothgrad_ig``   SmoothGrad over Integrated Gradients
``guided_backprop`` Guided Backpropagation (Springenberg et al. 2015)
``guided_gradcam``  Guided Backprop x Grad-CAM (Selvaraju et al. 2017, Sec. 3.1)
``wildcat``         the WILDCAT head's class maps (Durand et al. 2017)
``cam``             a linear head's class maps: CAM (Zhou et al. 2016)
==================  ===============================================================

Input-space attributions are reduced to a map by their absolute value (as Adebayo et
al. 2018 and Arun et al. 2020 display them), then min-max normalized per image.
The explained score is ``sign * logit[index]`` from :func:`pneumoloc.explain.cams.resolve_targets`;
the sign reaches captum as an additional forward argument so noise tunnels and
integration paths expand it with the batch.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from ..training.transforms import normalize
from .cams import FAST_CAMS, fast_cams, normalize_maps, register_method, resolve_targets, upsample_maps
from .explainable import Explainable

__all__ = ["PARAMETERS", "Scored", "input_attributions"]

# Fixed method parameters, stored with the maps (pneumoloc.explain.stored) so a change recomputes them.
PARAMETERS: dict[str, dict] = {
    "smoothgrad": {"nt_samples": 16, "noise": 0.15},  # noise = sigma / (x.max - x.min), Smilkov Sec. 4
    "intgrad": {"n_steps": 32, "baseline": "black"},
    "smoothgrad_ig": {"nt_samples": 8, "noise": 0.15, "n_steps": 16, "baseline": "black"},
}


class Scored(nn.Module):
    """``model(x) * sign[:, None]``: makes a per-image target sign visible to captum."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
        return self.model(x) * sign[:, None]


def _black(x: torch.Tensor) -> torch.Tensor:
    """The baseline image: black (intensity 0) in the model's input normalization."""
    return torch.full_like(x, float(normalize(torch.zeros(()))))


def input_attributions(ex: Explainable, x: torch.Tensor, target: str, method: str) -> torch.Tensor:
    """Raw captum attributions ``[B,T,1,S,S]`` of ``method`` (one of the gradient family)."""
    from captum.attr import GuidedBackprop, IntegratedGradients, NoiseTunnel, Saliency

    with torch.no_grad():
        logits = ex.model(x)
    index, sign = resolve_targets(logits, ex.positive_index, target)
    scored = Scored(ex.model)
    p = PARAMETERS.get(method, {})
    x = x.detach().clone().requires_grad_(True)
    out = []
    with ex.trainable() if method == "guided_backprop" else ex.no_inplace(), torch.enable_grad():
        for t in range(index.shape[1]):
            kw = {"target": index[:, t].to(x.device), "additional_forward_args": (sign[:, t].to(x.device),)}
            if method == "gradient":
                a = Saliency(scored).attribute(x, abs=True, **kw)
            elif method == "guided_backprop":
                with warnings.catch_warnings():  # captum announces its (temporary) ReLU hooks each call
                    warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
                    a = GuidedBackprop(scored).attribute(x, **kw)
            elif method == "intgrad":
                a = IntegratedGradients(scored).attribute(x, baselines=_black(x), n_steps=p["n_steps"], **kw)
            else:  # smoothgrad family: Gaussian noise of p["noise"] times the input range
                inner = Saliency(scored) if method == "smoothgrad" else IntegratedGradients(scored)
                extra = {"abs": True} if method == "smoothgrad" else {"baselines": _black(x), "n_steps": p["n_steps"]}
                std = p["noise"] * float((x.max() - x.min()).detach())
                a = NoiseTunnel(inner).attribute(x, nt_type="smoothgrad", nt_samples=p["nt_samples"],
                                                 stdevs=std, **extra, **kw)
            out.append(a.detach())
    return torch.stack(out, 1)


def _register_input(name: str, description: str) -> None:
    @register_method(name, "attribution", description)
    def compute(ex: Explainable, x: torch.Tensor, target: str) -> torch.Tensor:
        return normalize_maps(input_attributions(ex, x, target, name).abs().sum(2))


_register_input("gradient", "vanilla gradient, Simonyan et al. 2014")
_register_input("smoothgrad", "SmoothGrad, Smilkov et al. 2017")
_register_input("intgrad", "Integrated Gradients, Sundararajan et al. 2017")
_register_input("smoothgrad_ig", "SmoothGrad on Integrated Gradients")
_register_input("guided_backprop", "Guided Backpropagation, Springenberg et al. 2015")


@register_method("guided_gradcam", "attribution", "Guided Grad-CAM, Selvaraju et al. 2017")
def _guided_gradcam(ex: Explainable, x: torch.Tensor, target: str) -> torch.Tensor:
    # Sec. 3.1: element-wise product of guided backprop and the (upsampled) Grad-CAM map;
    # composed here so ViT token layers work too (captum's LayerGradCam wants [B,C,h,w]).
    guided = input_attributions(ex, x, target, "guided_backprop").abs().sum(2)
    return normalize_maps(guided * fast_cams(ex, x, target, FAST_CAMS["gradcam"]))


def _head_maps(ex: Explainable, x: torch.Tensor, target: str, head_type: str | None) -> torch.Tensor:
    head = getattr(ex.model, "head", None)
    if head is None or not hasattr(head, "class_maps") or (head_type and type(head).__name__ != head_type):
        raise ValueError(f"the model's head is {type(head).__name__}: this method needs "
                         f"{head_type or 'a head with class_maps'} (build_model(..., head=...))")
    with torch.no_grad():
        maps = head.class_maps(ex.model.forward_features(x))  # [B,K,h,w]
        logits = ex.model(x)
    index, sign = resolve_targets(logits, ex.positive_index, target)
    out = []
    for t in range(index.shape[1]):
        m = maps[torch.arange(len(x)), index[:, t].to(maps.device)] * sign[:, t, None, None].to(maps.device)
        out.append(upsample_maps(m.float(), tuple(x.shape[-2:])))  # no ReLU: the map is the evidence
    return torch.stack(out, 1)


@register_method("wildcat", "native", "WILDCAT class maps, Durand et al. 2017")
def _wildcat(ex: Explainable, x: torch.Tensor, target: str) -> torch.Tensor:
    return _head_maps(ex, x, target, "WildcatHead")


@register_method("cam", "native", "CAM of a linear head, Zhou et al. 2016")
def _cam(ex: Explainable, x: torch.Tensor, target: str) -> torch.Tensor:
    return _head_maps(ex, x, target, "LinearHead")
