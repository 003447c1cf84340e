"""Checkpoints that hold tensors and plain metadata only, and load safely.

A checkpoint is a dict ``{"format": "pneumoloc-checkpoint/1", "model_state": {name: tensor},
"config": model.config, **metadata}`` written through :func:`pneumoloc.storage.save_torch`
(temp file in the same folder, fsync, atomic rename; the SHA-256 inside the file, so a kill at
any instant leaves a file that matches its checksum). Loading verifies the checksum (a
truncated file raises :class:`~pneumoloc.storage.CorruptFileError`) and always
passes ``weights_only=True`` to ``torch.load`` explicitly, so the environment variable
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` cannot turn it off: a pickle that would run code is
refused before anything runs. Metadata must be plain (numbers, strings, lists, dicts,
tensors); anything else is rejected at save time rather than producing a file that
cannot be loaded safely.

Checkpoints published with the paper are imported with
:func:`pneumoloc.models.paper.import_paper_checkpoint`; :mod:`pneumoloc.models.kinds` rebuilds
the architecture a checkpoint's config names.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable

import torch

from ..storage import load_torch, save_torch
from .backbones import Classifier
from .kinds import model_from_config

__all__ = ["FORMAT", "save_checkpoint", "load_checkpoint", "load_model", "latest_good_checkpoint"]

FORMAT = "pneumoloc-checkpoint/1"
# Exact types: numpy.float64 subclasses float but pickles as a numpy global weights_only refuses.
_PLAIN = (str, int, float, bool, type(None))


def _check_plain(value: Any, where: str) -> None:
    """Reject values ``weights_only=True`` could not load back (custom classes, numpy, Paths)."""
    if type(value) in (dict, OrderedDict):  # state_dict() objects are OrderedDicts
        for k, v in value.items():
            if type(k) not in (str, int):
                raise TypeError(f"checkpoint metadata {where}: key {k!r} must be str or int")
            _check_plain(v, f"{where}.{k}")
    elif type(value) in (list, tuple):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
    elif type(value) not in _PLAIN and not isinstance(value, torch.Tensor):
        raise TypeError(f"checkpoint metadata {where} is a {type(value).__name__}; store plain values "
                        f"only (str/int/float/bool/None/tensor, lists and dicts of them), e.g. str(path), "
                        f"float(x), array.tolist()")


def save_checkpoint(path: str | os.PathLike, model: Classifier, **metadata: Any) -> Path:
    """Write ``model``'s weights, its config and plain ``metadata`` (epoch, metrics, optimizer state...).

    Args:
        path: destination (``best.pt`` / ``last.pt``), written with its SHA-256 inside.
        model: the :class:`~pneumoloc.models.backbones.Classifier` (its ``config`` rebuilds it).
        **metadata: plain values; the keys ``format``, ``model_state`` and ``config`` are reserved.
    """
    reserved = {"format", "model_state", "config"} & set(metadata)
    if reserved:
        raise ValueError(f"metadata keys {sorted(reserved)} are reserved by the checkpoint format")
    _check_plain(metadata, "metadata")
    _check_plain(model.config, "config")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return save_torch(path, {"format": FORMAT, "model_state": state, "config": dict(model.config), **metadata})


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint dict, after verifying its checksum, loaded with ``weights_only=True``.

    Raises:
        CorruptFileError: missing file, missing checksum, or truncated/corrupted contents.
        pickle.UnpicklingError: the file holds objects other than tensors and plain values.
        ValueError: the file is not a pneumoloc checkpoint (e.g. a paper checkpoint: use
            :func:`pneumoloc.models.paper.import_paper_checkpoint`).
    """
    ckpt = load_torch(path, map_location="cpu", check=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} file; for checkpoints published with the paper "
                         f"use pneumoloc.models.paper.import_paper_checkpoint({str(path)!r})")
    return ckpt


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> Classifier:
    """Rebuild the model recorded in a checkpoint, load its weights, move it to ``device``, eval mode."""
    ckpt = load_checkpoint(path)
    model = model_from_config(ckpt["config"])
    model.load_state_dict(ckpt["model_state"], strict=True)
    return model.to(device).eval()


def latest_good_checkpoint(paths: Iterable[str | os.PathLike]) -> Path | None:
    """The most recently written of ``paths`` that verifies and loads; ``None`` if none does.

    Resume falls back through this: an interrupted write leaves the previous file intact
    (atomic rename), and a file damaged afterwards fails its checksum and is skipped.
    Recency is the ``epoch`` stored in the checkpoint when present, else the file time.
    """
    good: list[tuple[float, float, Path]] = []
    for p in map(Path, paths):
        if not p.exists():
            continue
        try:
            ckpt = load_checkpoint(p)
        except Exception:  # corrupt, foreign or unsafe files are all "not good"; keep looking
            continue
        epoch = ckpt.get("epoch")
        epoch = float(epoch) if isinstance(epoch, (int, float)) else float("-inf")
        good.append((epoch, p.stat().st_mtime, p))
    return max(good)[2] if good else None
