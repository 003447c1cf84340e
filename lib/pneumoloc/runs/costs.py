"""What a run should cost: per-image costs measured on one CPU thread, and one GPU ratio.

The numbers are those of ``docs/scaling.md``, measured with
``.venv/bin/python bench/bench_scaling.py --threads 1 --repeats 4`` (torch 2.14.1, one thread of the
project's 2-core machine, batch 8, best of 4 after a warm-up, random weights, 224 px). Rerun the
bench and update :data:`BACKBONE_COSTS` together with the document.

Assumptions, each stated where it is used:

* **Image size**: model compute per image grows with the pixel count, ``(size / 224) ** 2``
  (exact for the convolutions at a fixed batch; ViT's attention grows faster, so large ViT
  inputs are underestimated).
* **GPU**: one ratio for every backbone and stage, :data:`GPU_SPEEDUP` = 424 (an A100 with mixed
  precision at batch 32 against one thread of this CPU; ``docs/scaling.md``, "From CPU to GPU",
  assumption 3). It is optimistic for the depthwise networks (EfficientNet, MobileNets) and
  pessimistic for ViT-B/16. Decoding stays on the CPU.
* **Map methods** are counted in passes of the measured costs (:data:`METHOD_PASSES`): a gradient
  CAM is one ``gradcam`` unit, a gradient-free or native map one ``predict`` unit, a backward pass
  to the input one ``train`` unit (the measured training step: forward and full backward, plus the
  optimizer and loader, so an upper bound), Score-CAM / Ablation-CAM one forward per channel of
  the target layer. ``target: findings`` multiplies by the number of findings.
* **Early stopping** is ignored: training costs are for the maximum ``epochs``.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..explain.attributions import PARAMETERS as ATTRIBUTION_PARAMETERS

__all__ = ["BackboneCost", "BACKBONE_COSTS", "MEASURED_SIZE", "DECODE_SECONDS", "GPU_SPEEDUP",
           "STAGE_STARTUP_SECONDS", "METHOD_PASSES", "size_factor", "map_seconds"]


@dataclass(frozen=True)
class BackboneCost:
    """Seconds per image on one CPU thread at :data:`MEASURED_SIZE` px."""

    train: float  # one optimizer step per image: loader, augmentation, forward, focal loss, backward, AdamW
    predict: float  # evaluation forward
    gradcam: float  # one Grad-CAM map (forward and backward to the target layer)
    channels: int  # channels of the registry's CAM target layer (Score-CAM: one forward each)


MEASURED_SIZE = 224
# docs/scaling.md, "Measured per-image costs (this CPU)"; channels from the timm models.
BACKBONE_COSTS: dict[str, BackboneCost] = {
    "resnet18": BackboneCost(0.118, 0.050, 0.037, 512),
    "resnet50": BackboneCost(0.271, 0.066, 0.067, 2048),
    "densenet121": BackboneCost(0.199, 0.056, 0.057, 1024),
    "efficientnet_b0": BackboneCost(0.082, 0.023, 0.018, 1280),
    "mobilenet_v2": BackboneCost(0.054, 0.012, 0.012, 1280),
    "mobilenet_v3": BackboneCost(0.069, 0.013, 0.017, 960),
    "vit_b_16": BackboneCost(0.791, 0.249, 0.275, 768),
    # not measured: ViT-B/16's costs scaled by the FLOP ratio at 224 px (DeiT-Ti 1.3 / ViT-B 17.6 GFLOPs)
    "vit_ti_16": BackboneCost(0.791 * 1.3 / 17.6, 0.249 * 1.3 / 17.6, 0.275 * 1.3 / 17.6, 192),
}
# A Kermany-sized JPEG (1,500 x 1,200) read and squashed to 224 px, on the cache builder's 2 threads
# (docs/scaling.md); DICOM and 1,024 px PNG are assumed to cost the same.
DECODE_SECONDS = 0.0149
GPU_SPEEDUP = 424.0  # docs/scaling.md, assumption 3: 0.271 s x 1,567 images/s (ResNet-50 training)
STAGE_STARTUP_SECONDS = 10.0  # Jupyter kernel start and library import (5.7 s measured), per stage

_SG, _IG, _SGIG = (ATTRIBUTION_PARAMETERS[m] for m in ("smoothgrad", "intgrad", "smoothgrad_ig"))
# Map method -> passes per image and target, in units of BackboneCost fields ("channels": one
# predict per target-layer channel). Every registered method has an entry (tests/test_runs_check.py).
METHOD_PASSES: dict[str, dict[str, float]] = {
    **{m: {"gradcam": 1} for m in ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam")},
    "eigencam": {"predict": 1},  # gradient-free: one forward and an SVD of the activation
    "cam": {"predict": 1}, "wildcat": {"predict": 1},  # native maps of the head: one forward
    "scorecam": {"channels": 1}, "ablationcam": {"channels": 1},
    "gradient": {"train": 1}, "guided_backprop": {"train": 1},
    "guided_gradcam": {"train": 1, "gradcam": 1},
    "smoothgrad": {"train": _SG["nt_samples"]},
    "intgrad": {"train": _IG["n_steps"]},
    "smoothgrad_ig": {"train": _SGIG["nt_samples"] * _SGIG["n_steps"]},
}


def size_factor(image_size: int) -> float:
    """Model compute at ``image_size`` relative to the measured 224 px: the pixel ratio."""
    return (image_size / MEASURED_SIZE) ** 2


def map_seconds(method: str, cost: BackboneCost) -> float | None:
    """CPU seconds for one map of one image and target at 224 px; None for an unknown method."""
    passes = METHOD_PASSES.get(method.split("@")[0])
    if passes is None:
        return None
    unit = {"train": cost.train, "predict": cost.predict, "gradcam": cost.gradcam,
            "channels": cost.channels * cost.predict}
    return sum(n * unit[k] for k, n in passes.items())
