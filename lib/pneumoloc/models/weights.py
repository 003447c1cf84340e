"""Pretrained backbone weights: local files, fit checks, and the one offline error.

``build_model(..., pretrained=True)`` asks timm's hub (Hugging Face); ``weights=<path>``
reads a local file instead and hands it to timm's own loader, so the first convolution is
adapted to the model's input channels exactly as for hub weights (``in_chans=1``: the RGB
kernel summed over its 3 channels), ViT position embeddings are resampled to the training
size, and the ImageNet classifier is dropped. Files are read with ``weights_only=True``.
"""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

__all__ = ["WeightsUnavailableError", "load_state_dict_file", "check_fits", "hub_unavailable", "cached_hub_weights"]

# Where timm-style training scripts keep the weights inside a checkpoint dict (EMA first,
# as timm's own loader does); "model_state" is the pneumoloc checkpoint layout.
_CONTAINER_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model", "model_state")


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights were asked for but cannot be obtained."""


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Backbone weights from a local file: a state dict, a timm-style checkpoint dict, or a
    pneumoloc checkpoint (its ``backbone.`` tensors: transfer from an earlier run).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file holds no state dict of tensors.
    """
    from ..storage import load_torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights={str(path)!r} does not exist; pass the path of a saved state dict")
    obj = load_torch(path, check=False)  # foreign file: no sidecar, still weights_only=True
    for key in _CONTAINER_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if isinstance(obj, dict) and any(str(k).startswith("backbone.") for k in obj):
        obj = {k.removeprefix("backbone."): v for k, v in obj.items() if k.startswith("backbone.")}
    if not isinstance(obj, dict) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        raise ValueError(f"weights={str(path)!r} is not a state dict of tensors (nor a checkpoint holding one)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def check_fits(state: dict[str, torch.Tensor], model: nn.Module, path: str | Path, timm_name: str) -> None:
    """Raise ValueError unless every weight of ``model`` (a meta-device probe is enough) is in ``state``.

    timm's loader is lenient (``strict=False`` once the classifier is dropped), so without
    this check a file of another architecture would load nothing and say nothing.
    """
    missing = [k for k in model.state_dict() if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise ValueError(f"weights={str(path)!r} does not fit timm model {timm_name!r}: "
                         f"{len(missing)} missing keys, e.g. {missing[:5]}")


def hub_unavailable(timm_name: str, err: BaseException) -> WeightsUnavailableError:
    """The single error for ``pretrained=True`` without reachable weights, naming both ways out."""
    return WeightsUnavailableError(
        f"pretrained=True could not fetch {timm_name!r} weights from the timm/Hugging Face hub "
        f"({type(err).__name__}: {err}). Offline, pass weights=<path to a saved state dict>, "
        f"or pretrained=False to train from scratch.")


def cached_hub_weights(timm_name: str) -> str | None:
    """The local file ``timm.create_model(timm_name, pretrained=True)`` would load, or None when
    it is not cached; looks at the caches only, never the network.

    timm (``timm/models/_builder.py``, ``_resolve_pretrained_source``) loads a model's default
    weights from the Hugging Face hub when the model has a hub id (its ``hf_hub_filename``, else
    ``pytorch_model.bin``, preferring a ``.safetensors`` alternative), else from the torch hub
    cache of its URL (``$TORCH_HOME/hub/checkpoints``).
    """
    import timm
    import torch
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(timm_name)
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        repo, _, revision = cfg.hf_hub_id.partition("@")
        name = cfg.hf_hub_filename or "pytorch_model.bin"
        for candidate in (name.removesuffix(".bin") + ".safetensors", "model.safetensors", name):
            found = try_to_load_from_cache(repo, candidate, revision=revision or None)
            if isinstance(found, str):
                return found
        return None
    if cfg.url:
        path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(cfg.url).path)
        return str(path) if path.is_file() else None
    return None
