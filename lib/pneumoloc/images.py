"""Decoding any chest X-ray file into a grayscale uint8 array.

(Minimal first version: PNG/JPEG through PIL. The readers issue extends it to
DICOM, 16-bit PNG, EXIF orientation and skip-and-count of unreadable files.)
"""
from __future__ import annotations

import os

import numpy as np

__all__ = ["ImageError", "read_grayscale"]


class ImageError(ValueError):
    """An image file that cannot be decoded; the message names the file and why."""


def read_grayscale(path: str | os.PathLike) -> np.ndarray:
    """Read ``path`` as a 2-D uint8 array (lungs dark, as in a standard radiograph)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L"))
    except (OSError, ValueError) as e:
        raise ImageError(f"{path}: cannot decode image ({e})") from e
