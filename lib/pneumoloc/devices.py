"""Device choice: CUDA when present, CPU otherwise, always overridable."""
from __future__ import annotations

import os

__all__ = ["pick_device"]


def pick_device(requested: str = "auto"):
    """Return a ``torch.device``.

    Args:
        requested: ``"auto"`` (CUDA if available, else CPU; the environment variable
            ``PNEUMOLOC_DEVICE`` overrides auto), or any torch device string such as
            ``"cpu"``, ``"cuda"``, ``"cuda:1"``.

    Raises:
        ValueError: a CUDA device was requested on a machine without CUDA.
    """
    import torch

    if requested == "auto":
        requested = os.environ.get("PNEUMOLOC_DEVICE", "auto")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(requested)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={requested!r} but CUDA is not available here; use device='auto' or 'cpu'")
    return dev
