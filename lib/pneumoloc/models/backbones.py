"""Backbones by name, and the :class:`Classifier` every notebook trains and explains.

The paper's seven (Shahi & Bagale 2025) are registered in :data:`BACKBONES` by
short name (:mod:`pneumoloc.models.specs`);
any other timm model works by its timm name, its spec derived from
timm's ``feature_info``. Each spec knows its Grad-CAM target layer (a dotted path
inside the :class:`Classifier`) and, for ViT, how to reshape tokens to a map, so
CAM code needs no per-architecture branches.

Grayscale is handled once, here. Default ``in_chans=1``: timm builds a 1-channel
first convolution and, when pretrained weights are loaded (hub or local file),
adapts the RGB kernel by summing it over the 3 input channels
(``timm.models.adapt_input_conv``). A grey image ``g`` repeated to RGB gives
``sum_c W_c * g`` — exactly what the summed kernel computes — so pretrained
responses are preserved at a third of the first-layer input cost.
``in_chans=3`` is also accepted: the RGB kernel is kept and the model repeats the
grey channel to 3 itself. Either way, callers always pass ``[B, 1, S, S]``.

Features are timm's unpooled output (``num_classes=0, global_pool=''``): for
MobileNet-V3 this includes its 1×1 ``conv_head`` (960→1280) applied per location;
for ViT the patch tokens (class token dropped) reshaped to a ``S/16 × S/16`` grid.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .heads import build_head, check_head
from .kinds import register_model_kind
from .specs import _TIMM_KWARGS, BACKBONES, BackboneSpec, ChannelsFirst, TokensToGrid
from .weights import check_fits, hub_unavailable, load_state_dict_file

__all__ = ["resolve_layer", "create_backbone", "Classifier", "build_model"]


def resolve_layer(model: nn.Module, path: str) -> nn.Module:
    """The submodule at a dotted ``path``; integer parts index containers (negative allowed).

    Raises:
        ValueError: the path does not exist (names the children available at the failing step).
    """
    module = model
    for i, part in enumerate(path.split(".")):
        children = dict(module.named_children())
        if part in children:
            module = children[part]
        elif part.lstrip("-").isdigit() and isinstance(module, (nn.Sequential, nn.ModuleList)):
            module = module[int(part)]
        else:
            done = ".".join(path.split(".")[:i]) or "<model>"
            raise ValueError(f"layer path {path!r}: {done} has no child {part!r}; children: {list(children)}")
    return module


def _derived_spec(name: str, model: nn.Module, image_size: int | None, in_chans: int) -> tuple[BackboneSpec, int]:
    """Spec and feature width of an unregistered timm model, from one dry run and ``feature_info``.

    Target layer = the last feature stage; for token models its last block's ``norm1``.
    """
    size = image_size or int(model.pretrained_cfg.get("input_size", (3, 224, 224))[-1])
    was_training = model.training
    with torch.no_grad():
        out = model.eval()(torch.zeros(1, in_chans, size, size))
    model.train(was_training)
    if out.ndim == 3:  # tokens [B, P+N, C]
        reshape, channels = TokensToGrid(getattr(model, "num_prefix_tokens", 0)), out.shape[-1]
    elif out.ndim == 4 and getattr(model, "output_fmt", "NCHW") == "NHWC":
        reshape, channels = ChannelsFirst(), out.shape[-1]
    elif out.ndim == 4:
        reshape, channels = None, out.shape[1]
    else:
        raise ValueError(f"timm model {name!r} gives {tuple(out.shape)} without pooling, not a feature map; "
                         f"choose a CNN or ViT-style model")
    info = getattr(model, "feature_info", None)
    if not info:
        raise ValueError(f"timm model {name!r} has no feature_info to find a CAM target layer; "
                         f"pass target_layer='backbone.<module>' to build_model")
    module = "backbone." + info[-1]["module"]
    if out.ndim == 3:
        try:
            resolve_layer(nn.ModuleDict({"backbone": model}), module + ".norm1")
            module += ".norm1"
        except ValueError:
            pass
    return BackboneSpec(name, name, module, reshape, size), int(channels)


def _create(timm_name: str, pretrained: bool, kwargs: dict[str, Any], vit_like_size: int | None) -> nn.Module:
    """``timm.create_model``; for an unregistered model with a size, try transformer sizing first."""
    import timm

    tries = [{"img_size": vit_like_size, "dynamic_img_size": True}, {"img_size": vit_like_size}]
    for extra in tries if vit_like_size is not None else []:
        try:  # transformers take img_size (position embeddings); CNNs reject it with TypeError
            return timm.create_model(timm_name, pretrained=pretrained, **extra, **kwargs)
        except TypeError:
            pass
    try:
        return timm.create_model(timm_name, pretrained=pretrained, **kwargs)
    except AssertionError as err:  # e.g. "Cannot disable pooling"
        raise ValueError(f"timm model {timm_name!r} cannot give an unpooled feature map ({err})") from err


def create_backbone(name: str, in_chans: int = 1, pretrained: bool = False,
                    weights: str | Path | None = None, image_size: int | None = None,
                    ) -> tuple[nn.Module, BackboneSpec, int]:
    """Build a timm backbone without pooling or classifier; return it, its spec and feature width C.

    Args:
        name: a key of :data:`BACKBONES` or any timm model name.
        in_chans: 1 (RGB kernel summed, default) or 3 (grey repeated in the model).
        pretrained: load timm hub weights (needs network or a populated cache).
        weights: path of a local state dict of this timm model (wins over ``pretrained``).
        image_size: training size (ViT position embeddings); default: the spec's.

    Raises:
        WeightsUnavailableError: ``pretrained=True`` and the hub cannot be reached
            (see :mod:`pneumoloc.models.weights`).
    """
    import timm

    spec = BACKBONES.get(name)
    timm_name = spec.timm_name if spec else name
    if spec is None and not timm.is_model(name):
        raise ValueError(f"unknown backbone {name!r}: not one of {sorted(BACKBONES)} nor a timm model name "
                         f"(see timm.list_models())")
    size = image_size or (spec.default_size if spec else None)
    kwargs: dict[str, Any] = dict(num_classes=0, global_pool="", in_chans=in_chans)
    if spec:
        kwargs.update(_TIMM_KWARGS[name](size))
    if weights is not None:
        sd = load_state_dict_file(weights)
        with torch.device("meta"):  # key names only: no memory, no initialization cost
            check_fits(sd, _create(timm_name, False, kwargs, None if spec else image_size), weights, timm_name)
        # timm's own loader adapts the first conv (3→in_chans), resamples ViT position
        # embeddings and drops the classifier, exactly as for hub weights.
        kwargs["pretrained_cfg_overlay"] = {"state_dict": sd}
        pretrained = True
    try:
        model = _create(timm_name, pretrained, kwargs, vit_like_size=None if spec else image_size)
    except Exception as err:  # network / hub errors come in many types
        if weights is not None or not pretrained:
            raise
        raise hub_unavailable(timm_name, err) from err
    if spec is None:
        return (model, *_derived_spec(name, model, image_size, in_chans))
    # MobileNet-V3 keeps its conv_head when unpooled: its width is head_hidden_size, not num_features.
    return model, spec, int(getattr(model, "head_hidden_size", None) or model.num_features)


class Classifier(nn.Module):
    """A backbone and a head, taking grey images ``[B, 1, S, S]`` (see module docstring).

    Attributes:
        backbone: the feature extractor (a timm model for built models).
        head: a head of :mod:`pneumoloc.models.heads` (features → logits).
        spec: the :class:`BackboneSpec` (``target_layer`` is a path inside this module).
        config: plain dict from which :func:`pneumoloc.models.kinds.model_from_config` rebuilds it.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, spec: BackboneSpec, config: dict[str, Any],
                 in_chans: int = 1):
        super().__init__()
        self.backbone, self.head, self.spec, self.config = backbone, head, spec, config
        self.in_chans = in_chans

    @property
    def positive_index(self) -> int:
        """Logit index of the pneumonia class (0 for sigmoid heads)."""
        return int(self.config.get("positive_index", 0))

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"expected grey images [B, 1, S, S], got shape {tuple(x.shape)}")
        return x.expand(-1, self.in_chans, -1, -1) if self.in_chans != 1 else x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map ``[B, C, h, w]`` the head pools (ViT tokens without class token as a grid)."""
        f = self.backbone(self._check(x))
        return f if self.spec.reshape_transform is None else self.spec.reshape_transform(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, K]``."""
        return self.head(self.forward_features(x))

    def class_maps(self, x: torch.Tensor) -> torch.Tensor:
        """The head's own localization maps ``[B, K, h, w]`` (wildcat, linear = CAM)."""
        if not hasattr(self.head, "class_maps"):
            raise ValueError(f"head {self.config.get('head')!r} has no class maps; use 'wildcat' or 'linear'")
        return self.head.class_maps(self.forward_features(x))

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Sigmoid of each logit, or P(pneumonia) ``[B, 1]`` for a 2-logit softmax head."""
        if self.config.get("activation", "sigmoid") == "softmax":
            p = self.positive_index
            return logits.softmax(dim=1)[:, p:p + 1]
        return torch.sigmoid(logits)


def build_model(backbone: str, head: str = "linear", num_outputs: int = 1, in_chans: int = 1,
                pretrained: bool = False, weights: str | Path | None = None, image_size: int | None = None,
                target_layer: str | None = None, output_names: list[str] | None = None,
                **head_options: Any) -> Classifier:
    """Build a :class:`Classifier` (see :func:`create_backbone` for the backbone arguments).

    Args:
        head: a key of :data:`pneumoloc.models.heads.HEADS`.
        num_outputs: 1 for the binary task (sigmoid), K for K independent findings.
        target_layer: override the spec's CAM layer (dotted path, e.g. ``"backbone.layer3"``).
        output_names: names of the K outputs (multi-label); ``positive_index`` is then the
            index of ``"pneumonia"`` (any case) when present, else 0.
        **head_options: passed to the head (e.g. ``k=0.2, alpha=0.7, maps=8`` for wildcat).
    """
    if in_chans not in (1, 3):
        raise ValueError(f"in_chans={in_chans}: use 1 (summed RGB kernel) or 3 (grey repeated)")
    if output_names is not None and len(output_names) != num_outputs:
        raise ValueError(f"output_names has {len(output_names)} names for num_outputs={num_outputs}")
    check_head(head, head_options)  # before the (slow) backbone
    net, spec, channels = create_backbone(backbone, in_chans, pretrained, weights, image_size)
    if target_layer is not None:
        spec = dataclasses.replace(spec, target_layer=target_layer)
    head_module = build_head(head, channels, num_outputs, **head_options)
    config = {"kind": "timm", "backbone": backbone, "head": head, "num_outputs": num_outputs,
              "in_chans": in_chans, "image_size": image_size or spec.default_size,
              "target_layer": target_layer, "head_options": dict(head_options),
              "init": str(weights) if weights is not None else ("timm-hub" if pretrained else "scratch")}
    if output_names is not None:
        names = [str(n) for n in output_names]
        lower = [n.lower() for n in names]
        config.update(output_names=names, positive_index=lower.index("pneumonia") if "pneumonia" in lower else 0)
    model = Classifier(net, head_module, spec, config, in_chans)
    resolve_layer(model, spec.target_layer)  # fail now, not in notebook 03
    return model


@register_model_kind("timm")
def _timm_from_config(backbone: str, head: str, num_outputs: int, in_chans: int, image_size: int,
                      target_layer: str | None, head_options: dict[str, Any], output_names: list[str] | None = None,
                      **_: Any) -> Classifier:
    # Weights come from the checkpoint: never ask the hub or a weights file again.
    return build_model(backbone, head, num_outputs, in_chans, pretrained=False, image_size=image_size,
                       target_layer=target_layer, output_names=output_names, **head_options)
