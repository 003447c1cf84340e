"""Decode every image once into a uint8 memory-mapped cache at the training size.

The paper's loader decodes and resizes each 1024-2048 px JPEG on every epoch; on a
CPU that costs more than the model step for small backbones. Here each image is
decoded (:func:`pneumoloc.data.images.read_grayscale`) and squashed to S x S once, and
every epoch reads the ``[N, S, S]`` uint8 array from a memory map (page cache),
so an epoch costs compute, not decoding (docs/design.md, data flow 3).

The cache is keyed by the manifest and the size: a SHA-256 over ``size`` and each
row's ``image_id``, ``path`` and the file's byte size and modification time. A
changed manifest, a replaced file, or another size gives another key, so a stale
cache is never read; it is simply rebuilt. Files are written to a temporary name
and renamed, and the JSON sidecar (written last) marks a complete cache, so an
interrupted build is rebuilt rather than used.

Unreadable images are skipped and counted: their rows stay (the array is
row-aligned with the manifest) filled with zeros, and :attr:`ImageCache.failed`
lists them with the reason naming the file, so training can leave them out and
decoded + failed always equals the manifest's length. Only a compressed DICOM whose
decoder package is missing (:class:`~pneumoloc.data.images.MissingDecoderError`) stops
the build.
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..environment import PROJECT_ROOT
from ..storage import load_json, save_json
from .images import ImageError, read_grayscale

__all__ = ["CACHE_DIR", "ImageCache", "cache_key", "load_cache", "cached_images", "resize_square"]

CACHE_DIR = PROJECT_ROOT / ".cache" / "images"  # git-ignored (.gitignore: .cache/)
_VERSION = 1  # bump when the resize method changes so old caches are not reused


@dataclass
class ImageCache:
    """A built cache.

    Attributes:
        images: uint8 memmap ``[N, S, S]`` row-aligned with the manifest.
        failed: ``image_id, path, reason`` of rows that could not be decoded (zeros in ``images``).
        path: the ``.npy`` file.
        built: True when this call decoded the images (False: reused).
    """

    images: np.ndarray
    failed: pd.DataFrame
    path: Path
    built: bool

    @property
    def valid(self) -> np.ndarray:
        """Boolean mask of rows that decoded."""
        ok = np.ones(len(self.images), dtype=bool)
        ok[self.failed.index.to_numpy(dtype=int)] = False
        return ok


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Squash a 2-D uint8 image to ``size x size`` (no crop: coordinates scale linearly).

    PIL's bilinear filter widens its support when shrinking, so a 1024 px image
    reduced to 128 px is low-pass filtered rather than aliased.
    """
    from PIL import Image

    if image.shape == (size, size):
        return np.ascontiguousarray(image, dtype=np.uint8)
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR), dtype=np.uint8)


def cache_key(images_df: pd.DataFrame, size: int) -> str:
    """SHA-256 (hex, 24 chars) over the size and each row's id, path, file size and mtime."""
    h = hashlib.sha256(f"v{_VERSION}|{int(size)}|{len(images_df)}".encode())
    for image_id, path in zip(images_df["image_id"].astype(str), images_df["path"].astype(str)):
        try:
            st = os.stat(path)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        h.update(f"\n{image_id}|{path}|{stamp}".encode())
    return h.hexdigest()[:24]


def _decode(path: str, size: int) -> tuple[np.ndarray | None, str]:
    """The squashed image and ``""``, or ``None`` and the reason naming the file.

    Every failure is a counted row except :class:`MissingDecoderError`: a package to
    install, not a bad file, so the build stops rather than zero-filling readable images.
    """
    try:
        image = read_grayscale(path)  # raises ImageError (naming the file) for any bad file
    except ImageError as e:
        return None, str(e)
    try:
        return resize_square(image, size), ""
    except Exception as e:  # noqa: BLE001 - an array PIL cannot resize is a bad row, not a crash
        return None, (f"{path}: cannot resize the decoded {image.shape} {image.dtype} array "
                      f"({type(e).__name__}: {e})")


def _build(images_df: pd.DataFrame, size: int, target: Path, workers: int, progress: bool) -> pd.DataFrame:
    from tqdm.auto import tqdm

    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(images_df), size, size))
    failed = []
    paths = images_df["path"].astype(str).tolist()
    try:
        # PIL releases the GIL while decoding, so threads decode in parallel
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            results = pool.map(lambda p: _decode(p, size), paths)
            for i, (img, reason) in enumerate(tqdm(results, total=len(paths), disable=not progress,
                                                   desc=f"caching {len(paths)} images at {size}px")):
                if img is None:
                    arr[i] = 0
                    failed.append((i, images_df["image_id"].iloc[i], paths[i], reason))
                else:
                    arr[i] = img
        arr.flush()
        del arr
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return pd.DataFrame(failed, columns=["row", "image_id", "path", "reason"]).set_index("row")


def load_cache(images_df: pd.DataFrame, size: int, folder: str | os.PathLike | None = None,
               workers: int = 2, progress: bool = True) -> ImageCache:
    """Return the cache for ``(images_df, size)``, building it when missing or stale.

    Args:
        images_df: manifest rows (needs ``image_id`` and ``path``); row order is kept.
        size: side S of the squashed images.
        folder: where caches live; defaults to ``<project>/.cache/images``.
        workers: decoding threads.
        progress: show a tqdm bar while building.
    """
    if size <= 0:
        raise ValueError(f"image size must be positive, got {size}")
    for col in ("image_id", "path"):
        if col not in images_df:
            raise ValueError(f"images table lacks column {col!r} needed to build the image cache")
    folder = Path(folder) if folder is not None else CACHE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    key = cache_key(images_df, size)
    target, meta_path = folder / f"{key}_{size}px.npy", folder / f"{key}_{size}px.json"
    built = False
    if meta_path.exists() and target.exists():
        meta = load_json(meta_path)
        failed = pd.DataFrame(meta["failed"], columns=["row", "image_id", "path", "reason"]).set_index("row")
    else:
        failed = _build(images_df, size, target, workers, progress)
        save_json(meta_path, {"key": key, "size": int(size), "n": int(len(images_df)),
                              "failed": failed.reset_index().values.tolist()})
        built = True
    images = np.load(target, mmap_mode="r")
    if images.shape != (len(images_df), size, size):
        raise RuntimeError(f"cache {target} has shape {images.shape}, expected "
                           f"{(len(images_df), size, size)}; delete it and rerun")
    return ImageCache(images=images, failed=failed, path=target, built=built)


def cached_images(images_df: pd.DataFrame, size: int, folder: str | os.PathLike | None = None,
                  progress: bool = True) -> np.ndarray:
    """uint8 memmap ``[N, S, S]`` row-aligned with ``images_df`` (undecodable rows are zeros).

    Use :func:`load_cache` to also get the list of undecodable rows.
    """
    return load_cache(images_df, size, folder=folder, progress=progress).images
