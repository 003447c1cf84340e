"""The training recipe: one config with every choice, and the registries it names.

Defaults are written once with a comment each; overrides with unknown keys or
wrong types are refused (nanoGPT's habit), so a typo in a papermill parameter is
an error, not a silently ignored option. The config travels inside every
checkpoint and ``config.json``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable

import numpy as np
import torch

from .losses import LOSSES

__all__ = ["TrainConfig", "TASKS", "OPTIMIZERS", "SCHEDULERS", "SAMPLERS"]

TASKS = ("binary", "multilabel")


@dataclass
class TrainConfig:
    """The training recipe; defaults are the paper-like recipe sized for a CPU."""

    backbone: str = "resnet18"  # registry name (pneumoloc.models.backbones) or any timm name
    head: str = "linear"  # linear | mlp | wildcat (pneumoloc.models.heads)
    head_options: dict = field(default_factory=dict)  # e.g. {"maps": 8, "k": 0.2, "alpha": 0.7} for wildcat
    task: str = "binary"  # binary: 1 logit P(pneumonia); multilabel: one logit per finding
    image_size: int = 128  # side of the squashed input (cache size)
    epochs: int = 8  # maximum epochs
    batch_size: int = 32
    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 1e-4
    optimizer: str = "adamw"  # adam | adamw
    scheduler: str = "plateau"  # plateau (ReduceLROnPlateau on val AUC) | cosine (with warm-up)
    warmup_epochs: float = 1.0  # cosine only: linear warm-up length
    plateau_factor: float = 0.5  # plateau only: lr multiplier when val AUC stalls
    plateau_patience: int = 1  # plateau only: epochs without improvement before reducing lr
    loss: str = "focal"  # focal | bce | cross_entropy | weighted_cross_entropy
    focal_gamma: float = 2.0  # Lin et al. 2017 default
    focal_alpha: Any = "inverse_frequency"  # None/"none" | "inverse_frequency" | number in (0, 1)
    sampler: str = "none"  # none | weighted (inverse class frequency, with replacement)
    patience: int = 3  # early stopping: epochs without a better val AUC
    pretrained: bool = False  # timm hub weights (needs network or a populated cache)
    weights: str = ""  # local weights file; overrides pretrained
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    max_train_images: int = 0  # 0 = all training images; else a seeded subset
    augment: bool = True  # the light policy of pneumoloc.training.transforms
    amp: bool = True  # float16 autocast, applied on CUDA only
    channels_last: bool = True  # weights and batches in channels_last: faster CNN kernels (bench_channels_last)
    eval_batch_size: int = 64

    @classmethod
    def from_dict(cls, overrides: dict) -> "TrainConfig":
        """Build from overrides; unknown keys and ill-typed values raise ``ValueError``."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise ValueError(f"unknown training option(s) {unknown}; known: {sorted(known)}")
        defaults = cls()
        for key, value in overrides.items():
            want = type(getattr(defaults, key))
            if key == "focal_alpha":
                ok = value is None or isinstance(value, (str, int, float)) and not isinstance(value, bool)
            elif want is float:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            elif want is int:
                ok = isinstance(value, int) and not isinstance(value, bool)
            else:
                ok = isinstance(value, want)
            if not ok:
                raise ValueError(f"training option {key}={value!r} must be {want.__name__}")
        cfg = cls(**{**asdict(defaults), **overrides})
        cfg.validate()
        return cfg

    @classmethod
    def from_params(cls, params: dict) -> "TrainConfig":
        """Build from a notebook's parameters: the keys that are config fields are options
        (checked as by :meth:`from_dict`), the others (run_dir, n_boot, ...) are not the recipe's."""
        names = {f.name for f in fields(cls)}
        return cls.from_dict({k: v for k, v in params.items() if k in names})

    def validate(self) -> None:
        for key, choices in (("task", TASKS), ("optimizer", OPTIMIZERS), ("scheduler", SCHEDULERS),
                             ("loss", LOSSES), ("sampler", SAMPLERS)):
            if getattr(self, key) not in choices:
                raise ValueError(f"{key}={getattr(self, key)!r} is unknown; choose one of {sorted(choices)}")
        for key in ("image_size", "epochs", "batch_size", "eval_batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.lr <= 0 or self.patience < 1 or self.max_train_images < 0:
            raise ValueError("lr must be > 0, patience >= 1 and max_train_images >= 0")

    def as_dict(self) -> dict:
        return asdict(self)


# -- registries: optimizer, scheduler, sampler -----------------------------------------
OPTIMIZERS: dict[str, Callable] = {
    "adam": lambda params, c: torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay),
    "adamw": lambda params, c: torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay),
}


def _cosine(opt, c: TrainConfig, steps_per_epoch: int):
    total, warm = c.epochs * steps_per_epoch, max(1, round(c.warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:  # linear warm-up then half-cosine to zero, per step
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))
    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


SCHEDULERS: dict[str, Callable] = {
    "plateau": lambda opt, c, steps: torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="max", factor=c.plateau_factor, patience=c.plateau_patience),
    "cosine": _cosine,
}


def _uniform_order(labels: np.ndarray, g: torch.Generator) -> np.ndarray:
    return torch.randperm(len(labels), generator=g).numpy()


def _weighted_order(labels: np.ndarray, g: torch.Generator) -> np.ndarray:
    # inverse class frequency: each class is drawn equally often on average
    counts = np.bincount(labels.astype(int), minlength=2).astype(float)
    w = torch.as_tensor(1.0 / counts[labels.astype(int)], dtype=torch.float64)
    return torch.multinomial(w, len(labels), replacement=True, generator=g).numpy()


SAMPLERS: dict[str, Callable] = {"none": _uniform_order, "weighted": _weighted_order}
