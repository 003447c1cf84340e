"""Model kinds: rebuilding the untrained model a checkpoint's ``config`` describes.

Every :class:`~pneumoloc.models.backbones.Classifier` records a plain ``config`` whose
``"kind"`` names the function that rebuilds its architecture, ``fn(**config) -> Classifier``:

=========  ===================================  ===========================================
kind       registered in                        what it rebuilds
=========  ===================================  ===========================================
``timm``   :mod:`pneumoloc.models.backbones`    a timm backbone under a pneumoloc head
``paper``  :mod:`pneumoloc.models.paper`        the published PneumoniaNet, split in two
=========  ===================================  ===========================================

The modules that register kinds are listed in :data:`MODEL_KINDS` and imported on first use
(as the dataset readers are), so checkpoints need not import the paper's networks and the
kind modules need not import checkpoints.
"""
from __future__ import annotations

from typing import Any, Callable

from ..registry import Registry

__all__ = ["MODEL_KINDS", "register_model_kind", "model_from_config"]

MODEL_KINDS: Registry[Callable[..., Any]] = Registry(
    "model kind", modules=("pneumoloc.models.backbones", "pneumoloc.models.paper"))


def register_model_kind(kind: str) -> Callable:
    """Decorator: ``@register_model_kind("timm")`` on ``fn(**config) -> Classifier`` (untrained)."""
    return MODEL_KINDS.register(kind)


def model_from_config(config: dict[str, Any]):
    """Rebuild an untrained :class:`~pneumoloc.models.backbones.Classifier` from its ``config``.

    Raises:
        UnknownNameError: ``config["kind"]`` is not a registered kind (the message lists them).
    """
    model = MODEL_KINDS.lookup(config.get("kind"))(**config)
    model.config = dict(config)  # keep provenance keys (e.g. "init") of the original
    return model
