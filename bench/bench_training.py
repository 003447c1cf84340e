"""Training throughput: the full loop (cache loader, augmentation, logging) vs the bare model step.

Both run in the same process on the same batches: the bare step replays batches the
loop's own loader produced (same order, same augmentation) as ready tensors, so the
ratio end-to-end / bare is the share of time the model step gets inside
``pneumoloc.training.loop.train_epoch``. Rounds alternate between the two to share the
machine's load fairly; medians are reported.

Run: .venv/bin/python bench/bench_training.py [--images 48] [--batch 16] [--rounds 3]
Goal: ratio >= 0.9 for ResNet-18 at 224 px and MobileNet-V3 at 128 px.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd
import torch

from pneumoloc.models.backbones import build_model
from pneumoloc.training.batches import TrainData, epoch_order, make_batch
from pneumoloc.training.config import OPTIMIZERS, SCHEDULERS, TrainConfig
from pneumoloc.training.loop import train_epoch
from pneumoloc.training.losses import build_loss
from pneumoloc.training.transforms import AugmentConfig

CASES = (("resnet18", 224), ("mobilenet_v3", 128))


def synthetic_data(n: int, size: int, seed: int = 0) -> TrainData:
    """An in-memory uint8 'cache' of n images (the loop cannot tell it from a memmap)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
    table = pd.DataFrame({"image_id": [str(i) for i in range(n)], "patient_id": [str(i) for i in range(n)],
                          "label": np.arange(n) % 2, "split": "train"})
    return TrainData(images=images, table=table, targets=table[["label"]].to_numpy(np.float32),
                     outputs=["pneumonia"], skipped=pd.DataFrame(columns=["path", "reason"]))


def bench(backbone: str, size: int, n: int, batch: int, rounds: int) -> tuple[float, float]:
    cfg = TrainConfig.from_dict({"backbone": backbone, "image_size": size, "batch_size": batch, "epochs": 1})
    data = synthetic_data(n, size)
    torch.manual_seed(0)
    model = build_model(backbone, image_size=size)
    loss_fn = build_loss(cfg.loss, targets=data.targets, gamma=cfg.focal_gamma, alpha=cfg.focal_alpha)
    opt = OPTIMIZERS[cfg.optimizer](model.parameters(), cfg)
    sched = SCHEDULERS[cfg.scheduler](opt, cfg, 1)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    device = torch.device("cpu")
    # the bare step's batches: exactly what the loop's loader yields for epoch 0
    order, gen = epoch_order(data, cfg, 0), torch.Generator().manual_seed(cfg.seed * 1_000_003 + 13)
    batches = [make_batch(data, order[s:s + batch], device, AugmentConfig(), gen) for s in range(0, n, batch)]

    def bare() -> float:
        model.train()
        t0 = time.perf_counter()
        for x, y in batches:
            loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return n / (time.perf_counter() - t0)

    def loop() -> float:
        t0 = time.perf_counter()
        _, seen = train_epoch(model, data, cfg, 0, loss_fn, opt, sched, scaler, device, progress=True)
        return seen / (time.perf_counter() - t0)

    bare()  # warm-up (allocator, kernels)
    e2e, raw = [], []
    for _ in range(rounds):
        raw.append(bare())
        e2e.append(loop())
    return statistics.median(e2e), statistics.median(raw)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(f"training throughput, {args.images} images/epoch, batch {args.batch}, median of {args.rounds} "
          f"alternating rounds, torch threads {torch.get_num_threads()}")
    for backbone, size in CASES:
        e2e, raw = bench(backbone, size, args.images, args.batch, args.rounds)
        print(f"  {backbone:13s} {size}px  end-to-end {e2e:7.2f} img/s   bare step {raw:7.2f} img/s   "
              f"ratio {e2e / raw:.3f}  (goal >= 0.9)")


if __name__ == "__main__":
    main()
