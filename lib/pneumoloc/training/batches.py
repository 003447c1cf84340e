"""Batches for training and prediction, straight from the uint8 image cache.

A batch is a fancy index into the cache's memory map, converted and augmented as
one tensor (:mod:`pneumoloc.training.transforms`), so an epoch costs model compute, not
decoding. The training order of an epoch is a function of ``(seed, epoch)`` only,
which is what makes a resumed run identical to an uninterrupted one. With N ranks
every rank draws the same epoch order and takes a strided shard of each global batch
(:func:`rank_positions`), and each image is augmented from its own key (seed, epoch,
position in the epoch: :func:`sample_keys`), so N ranks see the batches of one process.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .config import SAMPLERS, TrainConfig
from .transforms import AugmentConfig, augment_batch, normalize, to_unit

__all__ = ["TrainData", "prepare_data", "epoch_order", "rank_positions", "sample_keys", "make_batch", "predict",
           "predictions_table"]


@dataclass
class TrainData:
    """Cached images and targets of the usable rows of a run's images table.

    Attributes:
        images: uint8 ``[N, S, S]`` (memmap) row-aligned with ``table``.
        table: the images table rows in use (undecodable and unselected rows dropped).
        targets: float32 ``[N, K]`` (NaN = not scored).
        outputs: names of the K outputs (``["pneumonia"]`` or the findings).
        skipped: rows left out because their image could not be decoded.
    """

    images: np.ndarray
    table: pd.DataFrame
    targets: np.ndarray
    outputs: list[str]
    skipped: pd.DataFrame

    def indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.table["split"].to_numpy() == split)

    def __getstate__(self) -> dict:
        # a cached memmap travels to other processes (training ranks) by file name, not by value
        state = dict(self.__dict__)
        img = self.images
        if _whole_file(img):
            state["images"] = ("memmap", img.filename, img.dtype.str, img.shape, img.offset)
        return state

    def __setstate__(self, state: dict) -> None:
        img = state["images"]
        if isinstance(img, tuple) and img[0] == "memmap":
            _, name, dtype, shape, offset = img
            state["images"] = np.memmap(name, dtype=np.dtype(dtype), mode="r", shape=shape, offset=offset)
        self.__dict__.update(state)


def _whole_file(img: np.ndarray) -> bool:
    """Whether ``img`` maps all of its file's data (the cache), not a view that another offset would miss."""
    if not isinstance(img, np.memmap) or not img.filename or img.base is None or not img.flags.c_contiguous:
        return False
    try:
        return img.offset + img.nbytes == os.path.getsize(img.filename)
    except OSError:
        return False


def prepare_data(images: pd.DataFrame, cfg: TrainConfig, findings: list[str] | tuple = (),
                 cache_dir=None, progress: bool = True) -> TrainData:
    """Cache the images at ``cfg.image_size`` and assemble targets for ``cfg.task``."""
    from ..data.cache import load_cache

    if "split" not in images:
        raise ValueError("images table has no 'split' column: run notebook 01 (patient split) first")
    images = images.reset_index(drop=True)
    outputs = ["pneumonia"] if cfg.task == "binary" else list(findings)
    if not outputs:
        raise ValueError("task='multilabel' needs finding columns; this dataset lists none (use task='binary')")
    cache = load_cache(images, cfg.image_size, folder=cache_dir, progress=progress)
    keep = cache.valid
    if cfg.max_train_images:
        train = np.flatnonzero(keep & (images["split"] == "train").to_numpy())
        if len(train) > cfg.max_train_images:
            rng = np.random.default_rng(cfg.seed)
            drop = np.setdiff1d(train, rng.choice(train, cfg.max_train_images, replace=False))
            keep[drop] = False
    rows = np.flatnonzero(keep)
    table = images.iloc[rows].reset_index(drop=True)
    cols = ["label"] if cfg.task == "binary" else outputs
    targets = table[cols].to_numpy(dtype=np.float32)
    arr = cache.images if keep.all() else np.asarray(cache.images[rows])
    return TrainData(images=arr, table=table, targets=targets, outputs=outputs, skipped=cache.failed)


def epoch_order(data: TrainData, cfg: TrainConfig, epoch: int) -> np.ndarray:
    """Training row indices of one epoch, a function of (seed, epoch) only."""
    idx = data.indices("train")
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
    order = SAMPLERS[cfg.sampler](data.table["label"].to_numpy()[idx], g)
    return idx[order]


def rank_positions(n: int, batch_size: int, rank: int = 0, world: int = 1):
    """Positions in an epoch of ``n`` draws that ``rank`` trains on, one array per step.

    Step k's global batch is positions ``[k B, (k + 1) B)``; a rank takes every ``world``-th of
    them starting at ``rank`` (DistributedSampler's strided split, applied per global batch), so
    the ranks' shards of a step make up exactly the batch one process would take. A tail too
    small to give every rank an image (or BatchNorm two) is dropped, as one process drops a
    tail of one image.
    """
    for start in range(0, n, batch_size):
        if min(batch_size, n - start) >= max(2, world):
            yield np.arange(start + rank, min(start + batch_size, n), world)


def sample_keys(seed: int, epoch: int, positions: np.ndarray) -> np.ndarray:
    """Augmentation key of each position of an epoch: a function of (seed, epoch, position) only."""
    base = np.uint64((seed * 1_000_003 + epoch) % 2 ** 31) << np.uint64(32)
    return base | np.asarray(positions).astype(np.uint64)


def make_batch(data: TrainData, rows: np.ndarray, device, augment: AugmentConfig | None,
               generator: torch.Generator | None, channels_last: bool = False, keys: np.ndarray | None = None):
    """Gather cached rows, augment them as one batch on ``device``, normalize; returns ``(x, y)``.

    ``keys`` (one per row, :func:`sample_keys`) fix each image's augmentation; without them the
    keys are drawn from ``generator``.
    """
    perm = np.argsort(rows, kind="stable")  # memmap reads in file order; batch order does not matter to the loss
    srt = rows[perm]
    x = to_unit(np.asarray(data.images[srt])).to(device, non_blocking=True)
    if augment is not None:
        x = augment_batch(x, augment, generator, keys=None if keys is None else np.asarray(keys)[perm])
    x = normalize(x)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, torch.from_numpy(data.targets[srt]).to(device)


@torch.no_grad()
def predict(model: torch.nn.Module, data: TrainData, rows: np.ndarray, batch_size: int = 64,
            device="cpu", loss_fn=None) -> tuple[np.ndarray, float]:
    """Probabilities ``[n, K]`` for ``rows`` (eval mode, no augmentation) and the mean loss."""
    model.eval()
    probs, losses, n = [], 0.0, 0
    for start in range(0, len(rows), batch_size):
        r = rows[start:start + batch_size]
        x, y = make_batch(data, r, device, None, None)
        logits = model(x).float()
        probs.append(model.probabilities(logits).cpu().numpy()[np.argsort(np.argsort(r))])
        if loss_fn is not None:
            losses += float(loss_fn(logits, y)) * len(r)
            n += len(r)
    empty = np.zeros((0, len(data.outputs)), dtype=np.float32)
    return (np.concatenate(probs) if probs else empty), (losses / n if n else float("nan"))


def predictions_table(model, data: TrainData, device="cpu", batch_size: int = 64,
                      splits: tuple[str, ...] = ("val", "test")) -> pd.DataFrame:
    """The predictions contract: ``image_id, patient_id, split, label, prob`` (+ per finding)."""
    parts = []
    for split in splits:
        rows = data.indices(split)
        probs, _ = predict(model, data, rows, batch_size, device)
        t = data.table.iloc[rows][["image_id", "patient_id", "split", "label"]].reset_index(drop=True)
        if data.outputs == ["pneumonia"]:
            t["prob"] = probs[:, 0]
        else:
            for k, f in enumerate(data.outputs):
                t[f"label_{f}"], t[f"prob_{f}"] = data.targets[rows, k], probs[:, k]
            if "pneumonia" in [o.lower() for o in data.outputs]:
                t["prob"] = probs[:, [o.lower() for o in data.outputs].index("pneumonia")]
        parts.append(t)
    return pd.concat(parts, ignore_index=True)
