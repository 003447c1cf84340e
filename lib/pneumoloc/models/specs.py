"""The backbone registry: the paper's seven backbones by short name, each with its CAM layer.

:data:`BACKBONES` maps a short name to a :class:`BackboneSpec` (timm name, Grad-CAM
target layer as a dotted path inside the :class:`~pneumoloc.models.backbones.Classifier`,
reshape of ViT tokens to a map, default input size), filled by
:func:`register_backbone`, which also records the extra timm arguments an entry needs
(e.g. ViT position embeddings sized for the training size). The seven are those
compared by Shahi & Bagale (2025). Building models from a spec is
:mod:`pneumoloc.models.backbones`; this module imports torch only for type hints and the
token reshapes.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import torch

__all__ = ["BackboneSpec", "BACKBONES", "register_backbone", "get_spec", "TokensToGrid", "ChannelsFirst"]


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """What CAM and training code need to know about a backbone.

    Attributes:
        name: registry name (short name, or the timm name for unregistered models).
        timm_name: the timm model name.
        target_layer: dotted path inside the :class:`~pneumoloc.models.backbones.Classifier` of the Grad-CAM layer.
        reshape_transform: tokens ``[B, N, C]`` (ViT) or NHWC maps → ``[B, C, h, w]``, else None.
        default_size: input size used when none is given.
    """
    name: str
    timm_name: str
    target_layer: str
    reshape_transform: Callable[[torch.Tensor], torch.Tensor] | None
    default_size: int


class TokensToGrid:
    """Reshape ViT tokens ``[B, P+N, C]`` (P prefix tokens) to ``[B, C, √N, √N]`` (square inputs)."""

    def __init__(self, num_prefix_tokens: int = 1) -> None:
        self.num_prefix_tokens = num_prefix_tokens

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim == 4:  # already a map
            return tokens
        patches = tokens[:, self.num_prefix_tokens:]
        b, n, c = patches.shape
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(f"{n} patch tokens do not form a square grid; pneumoloc inputs are square S×S")
        return patches.transpose(1, 2).reshape(b, c, side, side)

    def __repr__(self) -> str:
        return f"TokensToGrid(num_prefix_tokens={self.num_prefix_tokens})"


class ChannelsFirst:
    """NHWC feature maps (timm Swin, MambaOut: ``output_fmt == "NHWC"``) → ``[B, C, h, w]``."""

    def __call__(self, f: torch.Tensor) -> torch.Tensor:
        return f.permute(0, 3, 1, 2) if f.ndim == 4 else f

    def __repr__(self) -> str:
        return "ChannelsFirst()"


BACKBONES: dict[str, BackboneSpec] = {}
TimmKwargs = Callable[[int], dict[str, Any]]  # image_size -> extra timm.create_model kwargs
_TIMM_KWARGS: dict[str, TimmKwargs] = {}


def register_backbone(name: str, timm_name: str, target_layer: str,
                      reshape_transform: Callable | None = None,
                      default_size: int = 224) -> Callable[[TimmKwargs], TimmKwargs]:
    """Decorate a function ``image_size -> extra timm kwargs`` to register a backbone."""
    def add(kwargs_fn: TimmKwargs) -> TimmKwargs:
        if name in BACKBONES:
            raise ValueError(f"backbone {name!r} is registered twice")
        BACKBONES[name] = BackboneSpec(name, timm_name, target_layer, reshape_transform, default_size)
        _TIMM_KWARGS[name] = kwargs_fn
        return kwargs_fn
    return add


def _no_kwargs(image_size: int) -> dict[str, Any]:
    return {}


# Target layers: the standard Grad-CAM layers (pytorch-grad-cam README), in timm 1.0 module names.
register_backbone("resnet18", "resnet18", "backbone.layer4")(_no_kwargs)
register_backbone("resnet50", "resnet50", "backbone.layer4")(_no_kwargs)
# DenseNet: final norm of the features block (BN+ReLU in timm), = torchvision features[-1].
register_backbone("densenet121", "densenet121", "backbone.features.norm5")(_no_kwargs)
# EfficientNet-B0 / MobileNet-V2: the 1×1 head conv stage (conv_head+bn2, 1280 ch) = torchvision features[-1].
register_backbone("efficientnet_b0", "efficientnet_b0", "backbone.bn2")(_no_kwargs)
register_backbone("mobilenet_v2", "mobilenetv2_100", "backbone.bn2")(_no_kwargs)
# MobileNet-V3: last conv stage (160→960) = torchvision features[-1].
register_backbone("mobilenet_v3", "mobilenetv3_large_100", "backbone.blocks.6")(_no_kwargs)


@register_backbone("vit_b_16", "vit_base_patch16_224", "backbone.blocks.11.norm1", TokensToGrid(1))
def _vit_kwargs(image_size: int) -> dict[str, Any]:
    # Position embeddings sized for the training size; dynamic_img_size lets other sizes run too.
    return {"img_size": image_size, "dynamic_img_size": True}


# ViT-Ti/16 (DeiT-Ti, Touvron et al. 2021): ViT-B/16's smallest relative (192 wide, 3 heads), for
# budgets where ViT-B/16 from scratch cannot train (the phantom demo on a CPU).
register_backbone("vit_ti_16", "vit_tiny_patch16_224", "backbone.blocks.11.norm1", TokensToGrid(1))(_vit_kwargs)


def get_spec(name: str) -> BackboneSpec:
    """The registered spec of ``name`` (other timm models: ``build_model(name).spec``)."""
    if name not in BACKBONES:
        raise ValueError(f"backbone {name!r} is not registered; registered: {sorted(BACKBONES)} "
                         f"(any timm name also works with build_model; its spec is model.spec)")
    return BACKBONES[name]
