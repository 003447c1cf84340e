"""Loader throughput: uint8 cache + batched augmentation vs decode-and-resize every epoch.

Baseline (the paper's loader, Shahi & Bagale): a torch DataLoader with 2 workers that
PIL-decodes each 1024 x 1024 JPEG, resizes it, and augments it image by image, every
epoch. New way (pneumoloc): images decoded once into the uint8 memory-mapped cache,
then every epoch gathers batches from the memory map and augments each batch as one
tensor. Both apply the same augmentation policy (pneumoloc.training.transforms.AugmentConfig)
at the same size, on JPEGs this bench writes to a temporary folder.

Run: .venv/bin/python bench/bench_loader.py [--images 128] [--size 224] [--epochs 3]
Prints images/s of each, measured side by side in this run, and their ratio (goal >= 5x).
"""
from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from pneumoloc.data.cache import load_cache
from pneumoloc.data.images import read_grayscale
from pneumoloc.training.batches import epoch_order, make_batch, prepare_data
from pneumoloc.training.config import TrainConfig
from pneumoloc.training.transforms import AugmentConfig, augment_batch, normalize, to_unit


def write_jpegs(folder: Path, n: int, side: int = 1024, seed: int = 0) -> pd.DataFrame:
    """Radiograph-sized JPEGs with smooth structure (so JPEG decoding costs what it does on X-rays)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side] / side
    rows = []
    for i in range(n):
        base = 120 + 60 * np.sin(6 * xx + rng.random() * 6) * np.cos(4 * yy + rng.random() * 6)
        img = (base + rng.normal(0, 12, (side, side))).clip(0, 255).astype(np.uint8)
        path = folder / f"img{i:04d}.jpg"
        Image.fromarray(img).save(path, quality=90)
        rows.append({"image_id": f"img{i:04d}", "patient_id": f"p{i}", "path": str(path), "label": i % 2,
                     "width": side, "height": side, "split": "train"})
    return pd.DataFrame(rows)


class DecodeEveryEpoch(torch.utils.data.Dataset):
    """The paper's way: decode, resize and augment one image per ``__getitem__``."""

    def __init__(self, table: pd.DataFrame, size: int, epoch: int = 0):
        self.paths, self.labels, self.size, self.epoch = list(table["path"]), list(table["label"]), size, epoch
        self.aug = AugmentConfig()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        img = read_grayscale(self.paths[i])
        img = np.asarray(Image.fromarray(img).resize((self.size, self.size), Image.BILINEAR))
        g = torch.Generator().manual_seed(self.epoch * 100_003 + i)
        x = augment_batch(to_unit(img[None]), self.aug, g)  # one image at a time, as albumentations does
        return normalize(x)[0], torch.tensor([float(self.labels[i])])


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (workers): robust to a busy machine."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _worker_init(_):
    torch.set_num_threads(1)


def bench_baseline(table, size, batch, epochs, workers) -> tuple[float, float]:
    """images/s and CPU-ms per image of the decode-every-epoch loader."""
    ds = DecodeEveryEpoch(table, size)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers,
                                         worker_init_fn=_worker_init, persistent_workers=workers > 0)
    n, t0, c0 = 0, time.perf_counter(), cpu_seconds()
    for epoch in range(epochs):
        for x, y in loader:
            n += len(x)
    wall = time.perf_counter() - t0
    del loader  # joins the workers so their CPU time is counted
    return n / wall, 1000 * (cpu_seconds() - c0) / n


def bench_cached(table, size, batch, epochs, cache_dir) -> tuple[float, float, float]:
    """images/s, CPU-ms per image, and the one-time cache build seconds."""
    cfg = TrainConfig.from_dict({"image_size": size, "batch_size": batch})
    t0 = time.perf_counter()
    load_cache(table, size, folder=cache_dir, progress=False)  # one-time decode, reported separately
    build = time.perf_counter() - t0
    data = prepare_data(table, cfg, cache_dir=cache_dir, progress=False)
    aug = AugmentConfig()
    n, t0, c0 = 0, time.perf_counter(), cpu_seconds()
    for epoch in range(epochs):
        g = torch.Generator().manual_seed(epoch)
        order = epoch_order(data, cfg, epoch)
        for s in range(0, len(order), batch):
            x, y = make_batch(data, order[s:s + batch], "cpu", aug, g)
            n += len(x)
    return n / (time.perf_counter() - t0), 1000 * (cpu_seconds() - c0) / n, build


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    # one thread per process on both sides (the baseline's workers too): on a shared 2-core machine
    # idle OpenMP threads spin and inflate CPU time, and training needs the other core anyway
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        table = write_jpegs(tmp, args.images)
        base, base_cpu = bench_baseline(table, args.size, args.batch, args.epochs, args.workers)
        new, new_cpu, build = bench_cached(table, args.size, args.batch, args.epochs, tmp / "cache")
    print(f"loader, {args.images} JPEGs 1024x1024 -> {args.size}px, batch {args.batch}, {args.epochs} epochs, "
          f"torch threads {torch.get_num_threads()}")
    print(f"  baseline  decode+resize+per-image augmentation every epoch ({args.workers} workers): "
          f"{base:8.1f} img/s  {base_cpu:6.2f} CPU-ms/img")
    print(f"  pneumoloc uint8 memmap cache + batched augmentation:                    "
          f"{new:8.1f} img/s  {new_cpu:6.2f} CPU-ms/img")
    print(f"  ratio new / baseline: {new / base:.1f}x in images/s, {base_cpu / new_cpu:.1f}x in CPU cost per image "
          "(goal >= 5x; on a shared machine the CPU-cost ratio is the fair one)")
    print(f"  one-time cache build: {build:.1f} s ({args.images / build:.1f} img/s), amortized over all epochs "
          f"and every backbone of a run at this size")


if __name__ == "__main__":
    main()
