"""The model a map explains: a private copy made safe and fast to explain.

:func:`prepare_model` copies a classifier (eval mode, parameters frozen, channels_last) into
an :class:`Explainable` that knows its target layer(s), the ViT token reshape and the
positive logit. The map methods in :mod:`pneumoloc.explain.cams` and
:mod:`pneumoloc.explain.attributions` take it.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn

__all__ = ["ACTIVATIONS", "Explainable", "check_activation", "prepare_model", "resolve_layer", "feature_sizes"]

# Which value of a target activation the gradient CAMs weight, when the network changes the
# layer's output in place after the layer (torchvision's DenseNet-121 applies
# ``F.relu(features, inplace=True)`` to the output of ``features.norm5``).
ACTIVATIONS: dict[str, str] = {
    "as_produced": "the layer's output as the layer returned it (before any in-place change)",
    "as_library": "what pytorch-grad-cam reads: its hook keeps the output tensor (on CPU, unless a "
                  "reshape copies it) and reads it after the forward pass, so it sees the in-place change",
}


@dataclass
class Explainable:
    """A private copy of a classifier made safe to explain (see :func:`prepare_model`)."""

    model: nn.Module
    layer_name: str
    reshape_transform: Callable | None
    positive_index: int
    memory_format: torch.memory_format = torch.contiguous_format
    activation: str = "as_produced"  # a key of ACTIVATIONS

    @property
    def layer_names(self) -> list[str]:
        """The target layers: ``layer_name`` may join several with ``+`` (combined CAM)."""
        return self.layer_name.split("+")

    @property
    def layers(self) -> list[nn.Module]:
        return [resolve_layer(self.model, name) for name in self.layer_names]

    @property
    def layer(self) -> nn.Module:
        if len(self.layer_names) > 1:
            raise ValueError(f"{self.layer_name!r} names several layers: use Explainable.layers")
        return self.layers[0]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @contextmanager
    def no_inplace(self) -> Iterator[nn.Module]:
        """In-place activations off inside the block.

        DenseNet's and MobileNet's ``ReLU(inplace=True)`` overwrite a tensor that a
        forward hook captured or a backward hook receives, which breaks the grad-cam
        package's and captum's hooks; every module with ``inplace=True`` is switched
        off here and restored afterwards (the fast path does not need this).
        """
        switched = [m for m in self.model.modules() if getattr(m, "inplace", None) is True]
        for m in switched:
            m.inplace = False
        try:
            yield self.model
        finally:
            for m in switched:
                m.inplace = True

    @contextmanager
    def trainable(self) -> Iterator[nn.Module]:
        """Parameters require grad and in-place ops are off inside the block (the grad-cam
        package and captum's guided backprop need a graph from the input and hooks that see
        intact tensors); frozen again, gradients dropped, afterwards."""
        self.model.requires_grad_(True)
        try:
            with self.no_inplace() as model:
                yield model
        finally:
            self.model.requires_grad_(False)
            self.model.zero_grad(set_to_none=True)


def resolve_layer(model: nn.Module, dotted: str) -> nn.Module:
    """The sub-module at ``dotted`` (``"backbone.layer4"``, ``"backbone.blocks.11.norm1"``)."""
    from ..models.backbones import resolve_layer as _resolve

    return _resolve(model, dotted)


def check_activation(activation: str, where: str) -> None:
    """A ValueError naming ``where`` and the choices unless ``activation`` is a key of ACTIVATIONS."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"{where}: activation={activation!r} unknown; choose one of "
                         f"{', '.join(sorted(ACTIVATIONS))}")


def prepare_model(model: nn.Module, target_layer: str = "", reshape_transform: Callable | None = None,
                  device: str | torch.device | None = None, channels_last: bool = True,
                  activation: str = "as_produced") -> Explainable:
    """Copy ``model`` for explaining: eval mode, parameters frozen, channels_last.

    The caller's model is untouched. In-place activations stay on for the fast path;
    methods that hook the whole network run inside :meth:`Explainable.no_inplace`
    (through :meth:`Explainable.trainable`).

    Args:
        model: a :class:`pneumoloc.models.backbones.Classifier` (or any module with
            ``spec.target_layer``), or any module when ``target_layer`` is given.
        target_layer: dotted module path; ``""`` = the backbone registry default; several
            joined by ``+`` (``"backbone.layer3+backbone.layer4"``) give one map per layer,
            averaged as the grad-cam package does for several ``target_layers``.
        reshape_transform: tokens -> [B,C,h,w]; ``None`` = the registry's (ViT) or none.
        device: move the copy there (default: where the model is).
        channels_last: store the copy's weights and feed inputs in channels_last memory
            format (same maps to float rounding, faster convolutions; False = contiguous).
        activation: which value of a target activation the gradient CAMs use when the network
            changes the layer's output in place after the layer (e.g. torchvision DenseNet-121's
            ``F.relu(features, inplace=True)`` after ``features.norm5``; detected through the
            tensor's version counter, see :mod:`pneumoloc.explain.cams`):

            - ``"as_produced"`` (default): the output as the layer returned it, the activation
              the target layer defines; a warning names the layer when a change is detected.
            - ``"as_library"``: the value pytorch-grad-cam uses, to reproduce its maps exactly.
              Its forward hook keeps ``reshape_transform(output).cpu()`` and reads it after the
              forward pass: on CPU without a copying reshape that is the output tensor itself,
              so it sees the changed value (after DenseNet's ReLU); where ``.cpu()`` or the
              reshape copies (GPU, ViT tokens) it reads the output as produced, and so does this.
              Its gradient is the one its tensor hook receives, which PyTorch gives with respect
              to the value before the in-place change; both choices use that gradient.
    """
    check_activation(activation, "prepare_model")
    spec = getattr(model, "spec", None)
    layer = target_layer or getattr(spec, "target_layer", "")
    if not layer:
        raise ValueError("target_layer is empty and the model has no spec.target_layer: "
                         "pass target_layer='backbone.layer4' (a dotted module path)")
    reshape = reshape_transform if reshape_transform is not None else getattr(spec, "reshape_transform", None)
    copied = copy.deepcopy(model).eval().requires_grad_(False)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    copied.to(device=device, memory_format=memory_format)
    for name in layer.split("+"):
        resolve_layer(copied, name)  # fail early with the path in the message
    return Explainable(copied, layer, reshape, int(getattr(model, "positive_index", 0)), memory_format, activation)


def feature_sizes(ex: Explainable, input_size: int) -> list[tuple[int, int]]:
    """Spatial size (h, w) of each target layer's activation for a ``input_size`` square input:
    the native resolution of the CAM before upsampling (4x4 for ResNet-18 layer4 at 128 px)."""
    sizes: dict[int, tuple[int, int]] = {}

    def hook(k: int):
        def record(module, inputs, output):
            a = ex.reshape_transform(output) if ex.reshape_transform is not None else output
            sizes[k] = (int(a.shape[-2]), int(a.shape[-1]))
        return record

    handles = [layer.register_forward_hook(hook(k)) for k, layer in enumerate(ex.layers)]
    try:
        with torch.no_grad():
            ex.model(torch.zeros(1, 1, input_size, input_size, device=ex.device))
    finally:
        for h in handles:
            h.remove()
    return [sizes[k] for k in range(len(ex.layer_names))]
