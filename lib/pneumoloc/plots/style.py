"""One look for every figure: model order and colours, method names as the literature spells them.

Notebooks 02, 04 and 05 draw models and map methods in many figures; a reader compares them
across figures only if ResNet-18 has the same colour and place everywhere and Grad-CAM++ is
written as its authors wrote it. This module holds the one order, the one palette and the one
display-name map:

* :func:`model_order` — registered backbones in registry order (ResNet-18, ResNet-50,
  DenseNet-121, EfficientNet-B0, MobileNet-V2, MobileNet-V3, ViT-B/16), then any other model
  alphabetically, then ensembles (``ens_*``).
* :func:`model_color` — a fixed colour per registered backbone (tab10, by registry position);
  other models and ensembles get the remaining tab10 colours by their name's place in
  :func:`model_order` of the models shown.
* :func:`method_label` and :func:`method_color` — ``gradcam++`` -> "Grad-CAM++",
  ``gradcam@layer3`` -> "Grad-CAM (layer3)"; one colour per base method (:data:`METHOD_COLORS`:
  the ten most used methods on tab10, the rarer CAMs on tab20's light shades), the same at every
  layer; figures tell layers apart by marker (:func:`variant_marker`).
* :data:`CHANCE_STYLE` — line style and grey of each chance baseline
  (:mod:`pneumoloc.localize.chance`), so a chance line is never mistaken for a method.
"""
from __future__ import annotations

from typing import Iterable

__all__ = ["COLUMN_IN", "TWO_COLUMN_IN", "MAX_HEIGHT_IN", "MIN_FONT_PT", "METHOD_NAMES", "MODEL_NAMES", "CHANCE_STYLE", "model_order", "model_label", "model_color",
           "method_label", "method_order", "method_color", "variant_marker", "chance_label", "METHOD_COLORS"]

# Paper sizes (two-column layout, e.g. IEEE/Elsevier): one column and the full text width in inches,
# the tallest figure that leaves room for its caption, and the smallest legible printed font.
COLUMN_IN = 3.5
TWO_COLUMN_IN = 7.16
MAX_HEIGHT_IN = 9.0
MIN_FONT_PT = 6.0

# Registered map methods (pneumoloc.explain.cams.METHODS) as their papers name them.
METHOD_NAMES = {
    "gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "xgradcam": "XGrad-CAM", "hirescam": "HiResCAM",
    "layercam": "LayerCAM", "eigencam": "Eigen-CAM", "scorecam": "Score-CAM", "ablationcam": "Ablation-CAM",
    "gradient": "Gradient", "smoothgrad": "SmoothGrad", "intgrad": "Integrated Gradients",
    "smoothgrad_ig": "SmoothGrad-IG", "guided_backprop": "Guided Backprop", "guided_gradcam": "Guided Grad-CAM",
    "wildcat": "WILDCAT", "cam": "CAM",
}
# Registered backbones (pneumoloc.models.specs.BACKBONES) and their small demo relatives.
MODEL_NAMES = {
    "resnet18": "ResNet-18", "resnet50": "ResNet-50", "densenet121": "DenseNet-121",
    "efficientnet_b0": "EfficientNet-B0", "mobilenet_v2": "MobileNet-V2", "mobilenet_v3": "MobileNet-V3",
    "vit_b_16": "ViT-B/16", "vit_tiny_patch16_224": "ViT-Ti/16", "vit_ti_16": "ViT-Ti/16",
}
_KNOWN_MODELS = list(MODEL_NAMES)
_BACKBONE_COLORS = ("resnet18", "resnet50", "densenet121", "efficientnet_b0", "mobilenet_v2", "mobilenet_v3",
                    "vit_b_16")  # tab10 C0..C6 in this order; ViT-Ti/16 shares its family's colour
METHOD_COLORS = {
    "gradcam": "C0", "gradcam++": "C1", "hirescam": "C2", "guided_gradcam": "C3", "gradient": "C4",
    "smoothgrad": "C5", "intgrad": "C6", "smoothgrad_ig": "C7", "guided_backprop": "C8", "wildcat": "C9",
    "cam": "#aec7e8", "xgradcam": "#ffbb78", "layercam": "#98df8a", "eigencam": "#ff9896", "scorecam": "#c5b0d5",
    "ablationcam": "#c49c94",
}
_VARIANT_MARKERS = ("o", "s", "^", "D", "v", "P")
# Chance baselines: (line style, grey level) — dashed greys, distinct from the method colours.
CHANCE_STYLE = {"uniform_image": ("--", "0.2"), "uniform_lung": (":", "0.35"), "box_prior": ("-.", "0.5"),
                "shuffled_boxes": ("o", "0.0")}
_CHANCE_NAMES = {"uniform_image": "uniform over image", "uniform_lung": "uniform in lungs",
                 "box_prior": "training-box prior", "shuffled_boxes": "shuffled boxes"}


def _tab10(k: int) -> str:
    return f"C{k % 10}"


def model_order(models: Iterable[str]) -> list[str]:
    """``models`` (duplicates dropped) in the one order: registry, then others, then ensembles."""
    models = list(dict.fromkeys(models))
    known = [m for m in _KNOWN_MODELS if m in models]
    ens = sorted(m for m in models if m.startswith("ens_"))
    return known + sorted(m for m in models if m not in known and m not in ens) + ens


def model_label(model: str) -> str:
    """``resnet18`` -> "ResNet-18"; other names unchanged (ensembles ``ens_mean`` -> "ensemble: mean")."""
    if model.startswith("ens_"):
        return f"ensemble: {model[4:]}"
    return MODEL_NAMES.get(model, model)


def model_color(model: str, shown: Iterable[str] = ()) -> str:
    """The model's colour: fixed for registered backbones (by registry position among the first
    seven tab10 colours); another model takes the next free colour by its place in
    :func:`model_order` of ``shown``."""
    if model in _BACKBONE_COLORS:
        return _tab10(_BACKBONE_COLORS.index(model))
    if model in MODEL_NAMES:  # ViT-Ti/16: the family's colour
        return _tab10(_BACKBONE_COLORS.index("vit_b_16"))
    others = [m for m in model_order([*shown, model]) if m not in MODEL_NAMES]
    return _tab10(len(_BACKBONE_COLORS) + others.index(model))


def _split(method: str) -> tuple[str, str]:
    base, _, variant = method.partition("@")
    return base, variant


def method_label(method: str) -> str:
    """``gradcam++`` -> "Grad-CAM++"; ``gradcam@layer3`` -> "Grad-CAM (layer3)"; unknown names unchanged."""
    base, variant = _split(method)
    name = METHOD_NAMES.get(base, base)
    return f"{name} ({variant})" if variant else name


def method_order(methods: Iterable[str]) -> list[str]:
    """``methods`` in :data:`METHOD_NAMES` order (a method's layer variants right after it)."""
    known = list(METHOD_NAMES)
    return sorted(dict.fromkeys(methods), key=lambda m: (known.index(_split(m)[0]) if _split(m)[0] in known
                                                         else len(known), _split(m)[0], _split(m)[1]))


def method_color(method: str) -> str:
    """One colour per base method (:data:`METHOD_COLORS`), the same at every layer; "0.5" if unknown."""
    return METHOD_COLORS.get(_split(method)[0], "0.5")


def variant_marker(method: str, methods: Iterable[str]) -> str:
    """Marker of ``method`` among the layer variants of its base method in ``methods``: the
    default layer a circle, then square, triangle, ... in :func:`method_order`."""
    base = _split(method)[0]
    same = [m for m in method_order(methods) if _split(m)[0] == base]
    return _VARIANT_MARKERS[same.index(method) % len(_VARIANT_MARKERS)] if method in same else "o"


def chance_label(name: str) -> str:
    """``uniform_image`` -> "chance: uniform over image"."""
    return f"chance: {_CHANCE_NAMES.get(name, name)}"
