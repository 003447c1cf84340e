"""Dropout whose mask for an image is a function of that image's key (seed, epoch, position).

``torch.nn.Dropout`` draws one mask for the whole batch from the global generator, so the mask an
image gets depends on the batch it sits in and on the rank that holds it: two ranks holding the
halves of a batch would drop other units than one process holding all of it. :func:`key_dropout`
makes every ``nn.Dropout`` of a model draw each image's mask from its own generator, seeded by the
image's key (:func:`pneumoloc.training.batches.sample_keys`) and the layer's index, while the
training loop declares the batch's keys with :func:`batch_keys`. The expected mask and the
``1 / (1 - p)`` scaling are those of ``nn.Dropout`` (Srivastava et al. 2014, inverted dropout).
Outside :func:`batch_keys` and in eval mode the layers behave as before.
"""
from __future__ import annotations

import contextvars
import types
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch

from .transforms import generator_seeds

__all__ = ["batch_keys", "key_dropout"]

_KEYS: contextvars.ContextVar[np.ndarray | None] = contextvars.ContextVar("pneumoloc_batch_keys", default=None)
_SALT = 1 << 20  # layer i draws with counter _SALT + i, apart from the augmentation's counters


@contextmanager
def batch_keys(keys: np.ndarray) -> Iterator[None]:
    """Within the block, keyed dropout layers use ``keys[i]`` for row ``i`` of their input."""
    token = _KEYS.set(np.asarray(keys))
    try:
        yield
    finally:
        _KEYS.reset(token)


def _masks(keys: np.ndarray, layer: int, shape: tuple[int, ...], p: float) -> torch.Tensor:
    seeds = generator_seeds(keys, salt=_SALT + layer)
    return torch.stack([torch.rand(shape, generator=torch.Generator().manual_seed(s)) >= p for s in seeds])


def _keyed_forward(layer: int, plain):
    def forward(self: torch.nn.Dropout, x: torch.Tensor) -> torch.Tensor:
        keys = _KEYS.get()
        if not self.training or self.p == 0 or keys is None:
            return plain(x)
        if len(keys) != x.shape[0]:
            raise ValueError(f"keyed dropout: {len(keys)} keys for a batch of {x.shape[0]}; "
                             "batch_keys must wrap the forward of exactly this batch")
        keep = _masks(keys, layer, tuple(x.shape[1:]), self.p).to(x.device)
        return x * keep.to(x.dtype) / (1 - self.p)
    return forward


def key_dropout(model: torch.nn.Module) -> int:
    """Make every ``nn.Dropout`` of ``model`` draw per-image masks from the keys; returns their count.

    Parameters, buffers and state-dict keys are unchanged (a checkpoint loads into the plain model).
    """
    layers = [m for m in model.modules() if type(m) is torch.nn.Dropout]
    for i, m in enumerate(layers):
        m.forward = types.MethodType(_keyed_forward(i, m.forward), m)
    return len(layers)
