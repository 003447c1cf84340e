"""Class-activation maps: one registry of map methods, one fast gradient path.

Every map method (the grad-cam package's CAMs here, captum's attributions in
:mod:`pneumoloc.explain.attributions`, the WILDCAT head's own maps) is registered in
:data:`METHODS` under a name and called the same way::

    ex = prepare_model(model)                    # copy: eval, frozen, channels_last
    maps = explain(ex, x, "gradcam", target="pneumonia")   # [B, T, S, S] in [0, 1]

Targets are explicit, never a silent argmax (registry :data:`TARGETS`): ``"pneumonia"``
explains the pneumonia logit (a 1-logit model is ``BinaryClassifierOutputTarget(1)``,
a 2-logit one ``ClassifierOutputTarget(positive_index)``); ``"predicted"`` explains
the predicted class (a negative 1-logit prediction is explained with the sign
flipped, ``BinaryClassifierOutputTarget(0)``); ``"findings"`` gives one map per
output of a multi-label model (``T = K``).

The fast path for the gradient-weighted CAMs (GradCAM, GradCAM++, XGradCAM,
HiResCAM, LayerCAM): the parameters need no gradients, and the maps need only
dScore/dA for the activation A of the target layer. A forward hook returns A as a
fresh leaf tensor that requires grad, so autograd records only the part of the
network after the target layer and ``torch.autograd.grad(score, A)`` costs a
fraction of a forward pass. The copy runs in channels_last memory format (oneDNN on CPU
and cuDNN on GPU pick faster convolution kernels for it) and keeps the model's in-place
activations, which the hook makes safe by handing the network a copy of A
(``bench/bench_cams.py`` compares this path with the package's call on the model as trained).
The maps equal the grad-cam package's, which
:func:`library_cams` calls and the tests compare against.

In-place changes of a target activation: a network may overwrite a target layer's output
after the layer (torchvision's DenseNet-121 applies ``F.relu(features, inplace=True)`` to
the output of ``features.norm5``). The hook hands the network a copy and compares that copy's
version counter (``Tensor._version``, bumped by every in-place operation) at hook time with
its value after the forward pass. A change is reported with an
:class:`InplaceActivationWarning` naming the layer, and ``Explainable.activation`` picks the
value the map weights: the output as produced (default) or, with ``"as_library"``, the value
the grad-cam package reads (:data:`pneumoloc.explain.explainable.ACTIVATIONS`).
"""
from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..registry import Registry
from .explainable import Explainable

__all__ = ["InplaceActivationWarning", "METHODS", "TARGETS", "MapMethod", "register_method", "register_target",
           "method_names", "get_method",
           "explain", "fast_cams", "library_cams", "normalize_maps", "upsample_maps", "resolve_targets",
           "FAST_CAMS", "LIBRARY_CAMS"]

MapFn = Callable[["Explainable", torch.Tensor, str], torch.Tensor]


@dataclass(frozen=True)
class MapMethod:
    """A registered map method.

    Attributes:
        name: registry key (file name of the stored maps).
        compute: ``(explainable, x [B,1,S,S], target) -> maps [B,T,S,S]`` in [0, 1].
        family: ``"cam"`` (grad-cam package), ``"attribution"`` (captum) or ``"native"``.
        description: one line with the paper.
    """

    name: str
    compute: MapFn
    family: str
    description: str


# Map methods; the modules listed register more of them (imported on first registry use).
METHODS: Registry[MapMethod] = Registry("map method", modules=("pneumoloc.explain.attributions",))
TARGETS: Registry[Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]] = Registry("target")
# Fast gradient-weighted CAMs: name -> combine(A [B,C,h,w], dS/dA [B,C,h,w]) -> cam [B,h,w].
FAST_CAMS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {}
# Every grad-cam package method: name -> class name in ``pytorch_grad_cam``.
LIBRARY_CAMS: dict[str, str] = {}


def register_method(name: str, family: str, description: str):
    """Decorator registering ``compute(explainable, x, target) -> [B,T,S,S]`` as ``name``."""
    return METHODS.register(name, wrap=lambda fn: MapMethod(name, fn, family, description))


def register_target(name: str):
    """Decorator: ``fn(logits [B,K], positive_index) -> (index [B,T] long, sign [B,T] float)``."""
    return TARGETS.register(name)


def method_names() -> list[str]:
    return sorted(METHODS.names())


def get_method(name: str) -> MapMethod:
    return METHODS.lookup(name)


# --- targets: what a map explains, chosen explicitly ------------------------------------
@register_target("pneumonia")
def _pneumonia(logits: torch.Tensor, positive_index: int):
    b = logits.shape[0]
    return torch.full((b, 1), positive_index, dtype=torch.long), torch.ones(b, 1)


@register_target("predicted")
def _predicted(logits: torch.Tensor, positive_index: int):
    b, k = logits.shape
    if k == 1:  # sigmoid: a negative prediction explains "normal" = -logit
        return torch.zeros(b, 1, dtype=torch.long), torch.where(logits >= 0, 1.0, -1.0).cpu()
    return logits.argmax(1, keepdim=True).cpu(), torch.ones(b, 1)


@register_target("findings")
def _findings(logits: torch.Tensor, positive_index: int):
    b, k = logits.shape
    return torch.arange(k).expand(b, k).clone(), torch.ones(b, k)


def resolve_targets(logits: torch.Tensor, positive_index: int, target: str):
    """Logit index and sign per image and map; the explained score is ``sign * logit[index]``."""
    return TARGETS.lookup(target)(logits.detach(), positive_index)


def explain(ex: Explainable, x: torch.Tensor, method: str, target: str = "pneumonia") -> torch.Tensor:
    """Maps of ``method`` for input ``x`` [B,1,S,S]: float32 [B,T,S,S], each min-max in [0, 1]."""
    fn = get_method(method).compute
    resolve_targets(torch.zeros(1, 1), 0, target)  # validate the name before any work
    x = x.to(ex.device, memory_format=ex.memory_format) if x.dim() == 4 else x.to(ex.device)
    return fn(ex, x, target).detach().float().cpu()


# --- normalization, as the grad-cam package's scale_cam_image --------------------------
def normalize_maps(m: torch.Tensor) -> torch.Tensor:
    """Min-max each map over its last two dims; an all-constant map becomes 0 (1e-7 guard)."""
    lo = m.amin(dim=(-2, -1), keepdim=True)
    m = m - lo
    return m / (1e-7 + m.amax(dim=(-2, -1), keepdim=True))


def upsample_maps(cam: torch.Tensor | list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """[B,h,w] per layer -> normalize, bilinear to ``size`` (half-pixel centres, as cv2.resize),
    mean over layers, normalize: the grad-cam package's ``scale_cam_image`` and
    ``aggregate_multi_layers``, so one layer or several give the library's maps."""
    layers = [cam] if isinstance(cam, torch.Tensor) else cam
    up = [F.interpolate(normalize_maps(c)[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
          for c in layers]
    return normalize_maps(torch.stack(up).mean(0))


# --- the fast gradient path -------------------------------------------------------------
class InplaceActivationWarning(UserWarning):
    """A target layer's output was changed in place after the layer (e.g. by an in-place ReLU)."""


@dataclass
class _Handed:
    """The copy of a target layer's output that the hook handed on to the network."""

    tensor: torch.Tensor
    version: int  # its version counter at hook time

    @property
    def changed(self) -> bool:
        return self.tensor._version != self.version


def _capture(ex: Explainable, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], list[_Handed]]:
    """Forward pass returning logits, each target layer's output (in ``ex.layer_names`` order)
    and the copy of it that the network went on with.

    The first target layer the forward pass reaches returns its output as a fresh leaf that
    requires grad: the graph starts there, nothing before it is recorded. Later target layers
    are inside that graph already and are kept as they are. Every hook hands the network a
    copy, so an in-place activation after a target layer cannot overwrite what was captured;
    the copy's version counter tells whether one did.
    """
    store: dict[int, torch.Tensor] = {}
    handed: dict[int, _Handed] = {}

    def hook(k: int):
        def capture(module, inputs, output):
            if not store:
                output = output.detach().requires_grad_(True)
            store[k] = output
            copy = output.clone()
            handed[k] = _Handed(copy, copy._version)
            return copy
        return capture

    handles = [layer.register_forward_hook(hook(k)) for k, layer in enumerate(ex.layers)]
    try:
        with torch.enable_grad():
            logits = ex.model(x)
    finally:
        for h in handles:
            h.remove()
    missing = [name for k, name in enumerate(ex.layer_names) if k not in store]
    if missing:
        raise RuntimeError(f"target layers {missing} were not called in the forward pass")
    order = range(len(ex.layer_names))
    return logits, [store[k] for k in order], [handed[k] for k in order]


def _forward_capture(ex: Explainable, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Logits and each target layer's output as produced (see :func:`_capture`)."""
    logits, acts, _ = _capture(ex, x)
    return logits, acts


def _caller_stacklevel() -> int:
    """``stacklevel`` of the first frame outside this package, for the caller of ``warnings.warn``:
    the default warning filter then shows a warning once per call site in the caller's code."""
    here = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1  # 1: the function calling warnings.warn
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == here:
        frame, level = frame.f_back, level + 1
    return level


def _package_sees_change(output: torch.Tensor, reshape: Callable | None) -> bool:
    """Whether pytorch-grad-cam's stored ``reshape(output).cpu()`` aliases ``output``, so that it
    reads the value after an in-place change (its ``ActivationsAndGradients.save_activation``)."""
    if output.device.type != "cpu":
        return False  # .cpu() copies at hook time
    stored = reshape(output) if reshape is not None else output
    return stored.untyped_storage().data_ptr() == output.untyped_storage().data_ptr()


def _activation_values(ex: Explainable, acts: list[torch.Tensor], handed: list[_Handed]) -> list[torch.Tensor]:
    """The activation each map weights, per ``ex.activation``; warns when the network changed a
    target layer's output in place and the maps use it as produced."""
    changed = [name for name, h in zip(ex.layer_names, handed) if h.changed]
    if changed and ex.activation == "as_produced":
        warnings.warn(f"the output of target layer(s) {', '.join(changed)} is changed in place after the "
                      f"layer (e.g. an in-place ReLU): maps use it as the layer produced it, pytorch-grad-cam "
                      f"(on CPU) reads the changed value; prepare_model(..., activation='as_library') "
                      f"reproduces pytorch-grad-cam",
                      InplaceActivationWarning, stacklevel=_caller_stacklevel())
    reshape = ex.reshape_transform or (lambda t: t)
    values = []
    for a, h in zip(acts, handed):
        use_changed = (ex.activation == "as_library" and h.changed
                       and _package_sees_change(h.tensor, ex.reshape_transform))
        values.append(reshape((h.tensor if use_changed else a).detach()).float())
    return values


def fast_cams(ex: Explainable, x: torch.Tensor, target: str, combine) -> torch.Tensor:
    """Gradient-weighted CAMs from dScore/dA only (no parameter gradients); [B,T,S,S]."""
    logits, acts, handed = _capture(ex, x)
    index, sign = resolve_targets(logits, ex.positive_index, target)
    scores = logits.gather(1, index.to(logits.device)) * sign.to(logits.device)
    reshape = ex.reshape_transform or (lambda t: t)
    values = _activation_values(ex, acts, handed)
    out = []
    for t in range(scores.shape[1]):
        grads = torch.autograd.grad(scores[:, t].sum(), acts, retain_graph=t + 1 < scores.shape[1])
        # ReLU: Selvaraju et al. 2017, eq. 2
        per_layer = [combine(a, reshape(g).float()).clamp_min(0) for a, g in zip(values, grads)]
        out.append(upsample_maps(per_layer, tuple(x.shape[-2:])))
    return torch.stack(out, 1)


def _register_cam(name: str, library_class: str, description: str):
    """Register a gradient-weighted CAM computed by the fast path (reference: the library)."""
    def deco(combine):
        FAST_CAMS[name] = combine
        LIBRARY_CAMS[name] = library_class
        register_method(name, "cam", description)(
            lambda ex, x, target, _c=combine: fast_cams(ex, x, target, _c))
        return combine
    return deco


def _spatial_sum(t: torch.Tensor) -> torch.Tensor:
    return t.sum(dim=(2, 3), keepdim=True)


@_register_cam("gradcam", "GradCAM", "Grad-CAM, Selvaraju et al. 2017")
def _gradcam(a, g):
    # eq. 1: alpha_k = mean_ij dS/dA_k,ij; eq. 2: sum_k alpha_k A_k
    return (g.mean(dim=(2, 3), keepdim=True) * a).sum(1)


@_register_cam("gradcam++", "GradCAMPlusPlus", "Grad-CAM++, Chattopadhay et al. 2018")
def _gradcampp(a, g):
    # eq. 19 with the exponential score: alpha = g^2 / (2 g^2 + sum(A) g^3), where g != 0
    g2 = g * g
    alpha = g2 / (2 * g2 + _spatial_sum(a) * g2 * g + 1e-6)
    alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
    w = (g.clamp_min(0) * alpha).sum(dim=(2, 3), keepdim=True)
    return (w * a).sum(1)


@_register_cam("xgradcam", "XGradCAM", "XGrad-CAM, Fu et al. 2020")
def _xgradcam(a, g):
    # eq. 9: alpha_k = sum_ij (A_k,ij / sum A_k) dS/dA_k,ij
    w = (g * a / (_spatial_sum(a) + 1e-7)).sum(dim=(2, 3), keepdim=True)
    return (w * a).sum(1)


@_register_cam("hirescam", "HiResCAM", "HiResCAM, Draelos & Carin 2020")
def _hirescam(a, g):
    return (g * a).sum(1)  # element-wise gradient x activation, summed over channels


@_register_cam("layercam", "LayerCAM", "LayerCAM, Jiang et al. 2021")
def _layercam(a, g):
    return (g.clamp_min(0) * a).sum(1)  # eq. 6: ReLU(gradient) as spatial weights


# --- the grad-cam package itself ------------------------------------------------------------
def _library_target(index: int, sign: float, k: int):
    from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget, ClassifierOutputTarget

    if k == 1:  # single logit: the sign picks pneumonia (1) or normal (0)
        return BinaryClassifierOutputTarget(1 if sign > 0 else 0)
    return ClassifierOutputTarget(index)


def library_cams(ex: Explainable, x: torch.Tensor, target: str, method: str,
                 batch_size: int = 32) -> torch.Tensor:
    """Maps from the grad-cam package's own class for ``method`` (reference and slow methods)."""
    import pytorch_grad_cam as pgc

    if method not in LIBRARY_CAMS:
        raise KeyError(f"{method!r} is not a grad-cam package method; known: {', '.join(sorted(LIBRARY_CAMS))}")
    with torch.no_grad():
        logits = ex.model(x)
    index, sign = resolve_targets(logits, ex.positive_index, target)
    kwargs = {}
    if method == "ablationcam":
        from pytorch_grad_cam.ablation_layer import AblationLayer, AblationLayerVit

        kwargs = {"batch_size": batch_size,
                  "ablation_layer": AblationLayerVit() if ex.reshape_transform else AblationLayer()}
    out = []
    with ex.trainable() as model:
        cam = getattr(pgc, LIBRARY_CAMS[method])(model=model, target_layers=ex.layers,
                                                  reshape_transform=ex.reshape_transform, **kwargs)
        cam.batch_size = batch_size  # ScoreCAM reads it
        try:
            for t in range(index.shape[1]):
                targets = [_library_target(int(index[b, t]), float(sign[b, t]), logits.shape[1])
                           for b in range(len(x))]
                out.append(torch.from_numpy(np.asarray(cam(input_tensor=x, targets=targets))))
        finally:
            cam.activations_and_grads.release()
    return normalize_maps(torch.stack(out, 1).float())


def _register_library(name: str, library_class: str, description: str) -> None:
    LIBRARY_CAMS[name] = library_class
    register_method(name, "cam", description)(
        lambda ex, x, target, _n=name: library_cams(ex, x, target, _n))


_register_library("eigencam", "EigenCAM", "Eigen-CAM, Muhammad & Yeasin 2020 (gradient-free)")
_register_library("scorecam", "ScoreCAM", "Score-CAM, Wang et al. 2020 (one forward per channel)")
_register_library("ablationcam", "AblationCAM", "Ablation-CAM, Desai & Ramaswamy 2020")
