"""Classification heads that turn a feature map ``[B, C, h, w]`` into logits ``[B, K]``.

Every head takes the unpooled feature map, so the map Grad-CAM explains is the
map the head sees. Heads are registered by name in :data:`HEADS` and built with
:func:`build_head`:

- ``linear`` (default): global average pooling + one linear layer. Its
  :meth:`LinearHead.class_maps` is the classic CAM of Zhou et al. 2016 (the
  linear layer applied at every location; pooling it gives the logit).
- ``mlp``: the head of Shahi & Bagale 2025 (repo ``src/model.py``): pooling, then
  Linear→512, BatchNorm, ReLU, Dropout 0.3, Linear→128, ReLU, Dropout 0.2, Linear.
- ``wildcat``: Durand et al. 2017 (WILDCAT, CVPR): a 1×1 convolution to ``M`` maps
  per class, class-wise average over the ``M`` maps, then spatial pooling
  ``s = mean(top-k) + alpha · mean(bottom-k)`` (their Eq. 2). Its
  :meth:`WildcatHead.class_maps` are a localization output of their own.
"""
from __future__ import annotations

import inspect
from typing import Callable

import torch
from torch import nn

__all__ = ["HEADS", "register_head", "check_head", "build_head", "head_options", "LinearHead", "MLPHead",
           "WildcatHead", "wildcat_pool", "region_count"]

HEADS: dict[str, type[nn.Module]] = {}


def register_head(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator adding a head to :data:`HEADS` under ``name``."""
    def add(cls: type[nn.Module]) -> type[nn.Module]:
        if name in HEADS:
            raise ValueError(f"head {name!r} is registered twice")
        HEADS[name] = cls
        return cls
    return add


def head_options(name: str) -> dict[str, object]:
    """The options a head accepts (beyond ``in_features`` and ``num_outputs``) with defaults."""
    sig = inspect.signature(HEADS[name].__init__)
    return {p.name: p.default for p in list(sig.parameters.values())[3:]}


def check_head(name: str, options: dict[str, object]) -> None:
    """Raise ValueError for an unknown head name or option (cheap: call before building a backbone)."""
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}; known heads: {sorted(HEADS)}")
    allowed = head_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"head {name!r} got unknown option(s) {unknown}; it accepts {allowed}")


def build_head(name: str, in_features: int, num_outputs: int, **options: object) -> nn.Module:
    """Build a registered head.

    Raises:
        ValueError: unknown head name (lists known ones) or unknown option (lists accepted ones).
    """
    check_head(name, options)
    return HEADS[name](in_features, num_outputs, **options)


@register_head("linear")
class LinearHead(nn.Module):
    """Global average pooling + dropout + one linear layer (the default head)."""

    def __init__(self, in_features: int, num_outputs: int, dropout: float = 0.0):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, num_outputs)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(features.mean(dim=(2, 3))))

    def class_maps(self, features: torch.Tensor) -> torch.Tensor:
        """CAM (Zhou et al. 2016): ``[B,K,h,w]`` whose spatial mean equals the logits (eval mode)."""
        w = self.fc.weight[:, :, None, None]
        return nn.functional.conv2d(features, w, self.fc.bias)


@register_head("mlp")
class MLPHead(nn.Module):
    """The paper's head (Shahi & Bagale 2025): GAP → 512 → BN → ReLU → Drop → 128 → ReLU → Drop → K."""

    def __init__(self, in_features: int, num_outputs: int, hidden: tuple[int, int] = (512, 128),
                 dropout: tuple[float, float] = (0.3, 0.2)):
        super().__init__()
        h1, h2 = hidden
        d1, d2 = dropout
        self.mlp = nn.Sequential(
            nn.Linear(in_features, h1), nn.BatchNorm1d(h1), nn.ReLU(inplace=True), nn.Dropout(d1),
            nn.Linear(h1, h2), nn.ReLU(inplace=True), nn.Dropout(d2),
            nn.Linear(h2, num_outputs),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(features.mean(dim=(2, 3)))


def region_count(k: int | float, n: int) -> int:
    """Number of regions WILDCAT pools over among ``n``: ``k`` as a count (int) or a fraction (float in (0, 1])."""
    if isinstance(k, bool) or not isinstance(k, (int, float)) or k <= 0:
        raise ValueError(f"wildcat k={k!r} must be a positive int (count) or a float in (0, 1] (fraction)")
    if isinstance(k, float):
        if k > 1:
            raise ValueError(f"wildcat k={k} is a float above 1; pass an int for a count of regions")
        return max(1, min(n, round(k * n)))
    return min(int(k), n)


def wildcat_pool(maps: torch.Tensor, k: int | float, alpha: float, kmin: int | float | None = None) -> torch.Tensor:
    """WILDCAT spatial pooling (Durand et al. 2017, Eq. 2) of class maps ``[B,K,h,w]`` → ``[B,K]``.

    ``s = mean of the k highest values + alpha × mean of the kmin lowest values``
    (``kmin`` defaults to ``k``; ``alpha = 0`` keeps only the top-k term).
    """
    flat = maps.flatten(2)
    n = flat.shape[-1]
    k_hi = region_count(k, n)
    k_lo = region_count(k if kmin is None else kmin, n)
    top = flat.topk(k_hi, dim=-1, largest=True).values.mean(-1)
    if alpha == 0:
        return top
    low = flat.topk(k_lo, dim=-1, largest=False).values.mean(-1)
    return top + alpha * low


@register_head("wildcat")
class WildcatHead(nn.Module):
    """WILDCAT head (Durand et al. 2017): multi-map transfer, class-wise and spatial pooling.

    Defaults follow the authors' VOC recipe (``--k 0.2 --maps 8 --alpha 0.7``).

    Args:
        in_features: channels of the feature map.
        num_outputs: classes ``K``.
        maps: ``M`` modality maps per class.
        k: regions kept in the top (and bottom) pooling: int count or fraction in (0, 1].
        alpha: weight of the bottom-k (negative evidence) term.
        kmin: regions in the bottom pooling if different from ``k``.
    """

    def __init__(self, in_features: int, num_outputs: int, maps: int = 8, k: int | float = 0.2,
                 alpha: float = 0.7, kmin: int | float | None = None):
        super().__init__()
        if maps < 1:
            raise ValueError(f"wildcat maps={maps} must be >= 1")
        for value in (k, k if kmin is None else kmin):  # fail at build time, not mid-training
            region_count(value, 1)
        self.num_outputs, self.maps, self.k, self.alpha, self.kmin = num_outputs, maps, k, alpha, kmin
        self.transfer = nn.Conv2d(in_features, num_outputs * maps, kernel_size=1)

    def class_maps(self, features: torch.Tensor) -> torch.Tensor:
        """Class maps ``[B,K,h,w]``: the mean of each class's ``M`` modality maps."""
        z = self.transfer(features)
        b, _, h, w = z.shape
        return z.view(b, self.num_outputs, self.maps, h, w).mean(dim=2)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return wildcat_pool(self.class_maps(features), self.k, self.alpha, self.kmin)
