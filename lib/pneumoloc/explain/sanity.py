"""The cascading model-parameter randomization test (Adebayo et al., NeurIPS 2018, Sec. 3.1).

Layers are re-initialized from the top (the head) down, cumulatively, and after each
step the maps are compared with the original ones by Spearman rank correlation and
SSIM. A method whose maps are a function of the model should lose their similarity as
the weights are destroyed; maps that barely change explain the input (edges, intensity)
rather than the classifier, and the method is flagged.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch
from torch import nn

from .cams import explain
from .explainable import Explainable, prepare_model

__all__ = ["CascadeGroup", "cascade_groups", "reinitialize", "map_similarity", "cascading_randomization",
           "sanity_subset", "run_sanity", "sanity_table", "sanity_summary"]


@dataclass(frozen=True)
class CascadeGroup:
    """Parameters re-initialized together: a module, or only its own (direct) parameters."""

    name: str
    module: nn.Module
    own_only: bool = False

    def parameters(self) -> list[nn.Parameter]:
        return list(self.module.parameters(recurse=not self.own_only))


def _n_params(g: CascadeGroup) -> int:
    return sum(p.numel() for p in g.parameters())


def _split(g: CascadeGroup) -> list[CascadeGroup]:
    kids = [CascadeGroup(f"{g.name}.{n}" if g.name else n, m) for n, m in g.module.named_children()]
    own = [CascadeGroup(f"{g.name}:own", g.module, True)] if list(g.module.parameters(recurse=False)) else []
    return own + [k for k in kids if _n_params(k) > 0]  # own parameters (embeddings) come first


def _splittable(g: CascadeGroup) -> bool:
    return not g.own_only and any(p.numel() for c in g.module.children() for p in c.parameters())


def cascade_groups(model: nn.Module, max_groups: int = 6) -> list[CascadeGroup]:
    """Blocks of ``model`` from the output to the input (the order of re-initialization).

    Starting from the model's children, the largest block is split into its children
    until there are at least ``max_groups`` blocks or nothing is left to split; the list
    is then reversed. Registration order is forward order in timm models and in
    :class:`~pneumoloc.models.backbones.Classifier` (backbone, then head), so the head comes first.
    """
    groups = _split(CascadeGroup("", model))
    while len(groups) < max_groups:
        candidates = [i for i, g in enumerate(groups) if _splittable(g)]
        if not candidates:
            break
        i = max(candidates, key=lambda i: _n_params(groups[i]))
        groups[i:i + 1] = _split(groups[i])
    return groups[::-1]


@torch.no_grad()
def reinitialize(group: CascadeGroup, seed: int) -> None:
    """Draw ``group``'s parameters afresh from each layer's own initializer (``reset_parameters``);
    parameters of modules without one (ViT position embedding, class token) ~ N(0, 0.02)."""
    torch.manual_seed(seed)
    covered: set[int] = set()
    if not group.own_only:
        for m in group.module.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
                covered.update(id(p) for p in m.parameters(recurse=False))
    for p in group.parameters():
        if id(p) not in covered:
            nn.init.normal_(p, std=0.02)


def map_similarity(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image Spearman rank correlation and SSIM of original maps ``a`` and new maps ``b``.

    A constant original map has no ranks (NaN: the image is left out); a new map that became
    constant (e.g. all zero after the ReLU) keeps none of the original's structure: 0.
    """
    from scipy.stats import spearmanr
    from skimage.metrics import structural_similarity

    rho = np.full(len(a), np.nan)
    ssim = np.full(len(a), np.nan)
    for i in range(len(a)):
        x, y = a[i].astype(np.float64), b[i].astype(np.float64)
        if np.ptp(x) > 0:
            rho[i] = spearmanr(x.ravel(), y.ravel()).statistic if np.ptp(y) > 0 else 0.0
        ssim[i] = structural_similarity(x, y, data_range=1.0, win_size=min(7, (min(x.shape) // 2) * 2 - 1))
    return rho, ssim


def cascading_randomization(model: nn.Module | Explainable, x: torch.Tensor, method: str, *,
                            target: str = "pneumonia", target_layer: str = "", max_groups: int = 6,
                            seed: int = 0) -> pd.DataFrame:
    """Similarity to the original maps after each cumulative re-initialization step.

    Returns:
        ``step, layer, spearman, ssim, n`` (step 0 = original; means over images with a
        non-constant map; ``n`` = how many).
    """
    ex = model if isinstance(model, Explainable) else prepare_model(model, target_layer)
    ex = replace(ex, model=copy.deepcopy(ex.model))
    base = explain(ex, x, method, target)[:, 0].numpy()
    rows = [{"step": 0, "layer": "original", "spearman": 1.0, "ssim": 1.0, "n": len(base)}]
    for step, group in enumerate(cascade_groups(ex.model, max_groups), start=1):
        reinitialize(group, seed + step)
        rho, ssim = map_similarity(base, explain(ex, x, method, target)[:, 0].numpy())
        ok = ~np.isnan(rho)
        rows.append({"step": step, "layer": group.name, "spearman": float(rho[ok].mean()) if ok.any() else np.nan,
                     "ssim": float(np.nanmean(ssim)), "n": int(ok.sum())})
    return pd.DataFrame(rows)


def sanity_table(models: dict[str, nn.Module], x: torch.Tensor, methods: list[str], **kwargs) -> pd.DataFrame:
    """:func:`cascading_randomization` for every backbone x method; long table with both keys."""
    from tqdm.auto import tqdm

    parts = []
    for (name, model), method in tqdm([(m, meth) for m in models.items() for meth in methods], desc="sanity"):
        parts.append(cascading_randomization(model, x, method, **kwargs).assign(backbone=name, method=method))
    cols = ["backbone", "method", "step", "layer", "spearman", "ssim", "n"]
    return pd.concat(parts, ignore_index=True)[cols]


def sanity_subset(backbones: list[str], chosen: list[str]) -> list[str]:
    """The backbones of the randomization test: ``chosen`` in the order of ``backbones``, or all
    of them when ``chosen`` is empty.

    The test asks each model the same question (do its maps depend on its learned weights?), so a
    subset spanning the architecture families (residual, depthwise-separable, transformer) answers
    it for the run at a fraction of the cost.

    Raises:
        ValueError: ``chosen`` names a backbone that is not in ``backbones``.
    """
    unknown = [b for b in chosen if b not in backbones]
    if unknown:
        raise ValueError(f"sanity_backbones: {', '.join(map(repr, unknown))} not among the run's backbones "
                         f"({', '.join(backbones)}); choose from them, or pass [] to test every backbone")
    return [b for b in backbones if b in chosen] if chosen else list(backbones)


def run_sanity(run, images: pd.DataFrame, backbones: list[str], methods: list[str], *, target: str = "pneumonia",
               device: str = "cpu", **kwargs) -> pd.DataFrame:
    """:func:`sanity_table` on a run's trained models: each backbone's ``best.pt`` on ``images``
    (rows of the images table) decoded at its training size. ``target="findings"`` is tested on
    the pneumonia logit (one map per image); ``kwargs`` go to :func:`cascading_randomization`."""
    from ..data.cache import cached_images
    from ..models.checkpoints import load_model
    from ..training.transforms import to_input
    from .stored import model_input_size

    parts = []
    for backbone in backbones:
        model = load_model(run.model_dir(backbone) / "best.pt", device=device)
        x = to_input(np.array(cached_images(images, model_input_size(model)))).to(device)
        parts.append(sanity_table({backbone: model}, x, methods, target="pneumonia" if target == "findings" else target,
                                  **kwargs))
    return pd.concat(parts, ignore_index=True)


def sanity_summary(table: pd.DataFrame, threshold: float = 0.5) -> pd.DataFrame:
    """One row per backbone x method at full randomization; ``flagged`` when the maps barely
    changed: final Spearman or SSIM still >= ``threshold``."""
    final = table.groupby(["backbone", "method"])["step"].transform("max") == table["step"]
    last = table[final].copy()  # the fully randomized row itself (groupby.last would skip NaN)
    last = last.rename(columns={"spearman": "final_spearman", "ssim": "final_ssim", "step": "steps"})
    last["flagged"] = (last["final_spearman"] >= threshold) | (last["final_ssim"] >= threshold)
    return last.reset_index(drop=True)[["backbone", "method", "steps", "final_spearman", "final_ssim", "flagged"]]
