"""Per-image costs of the paper protocol's stages at 224 px on this machine (inputs of docs/scaling.md).

    .venv/bin/python bench/bench_scaling.py                      # the seven backbones, batch 8
    .venv/bin/python bench/bench_scaling.py --backbones resnet18,resnet50 --batch 4
    .venv/bin/python bench/bench_scaling.py --threads 1 --repeats 4  # steadier on a shared machine

For each stage, seconds per image (best of ``--repeats`` timed batches after one warm-up):
  decode   a Kermany-sized JPEG (1,500 x 1,200 grayscale, quality 95) read and squashed to 224 px,
           as the image cache does once per run (pneumoloc.data.images + cache.resize_square)
  train    one optimizer step of notebook 02's recipe per image: cached uint8 batch -> augmentation
           -> forward -> focal loss -> backward -> AdamW (pneumoloc.training.loop.train_epoch's body)
  predict  evaluation forward per image (validation every epoch, predictions once)
  gradcam  one Grad-CAM map per image (pneumoloc.explain.cams fast path, notebook 03)
Random weights and images: the cost of a step does not depend on their values. The best of
several repeats estimates the cost on an idle machine; on a shared one, one thread with more
repeats gives steadier ratios between backbones (docs/scaling.md uses ratios, not absolute times).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pneumoloc.data.cache import resize_square
from pneumoloc.data.images import read_grayscale
from pneumoloc.explain import cams, explainable
from pneumoloc.models.backbones import build_model
from pneumoloc.training.batches import make_batch, predict
from pneumoloc.training.config import OPTIMIZERS, TrainConfig
from pneumoloc.training.losses import build_loss
from pneumoloc.training.transforms import AugmentConfig

PAPER_BACKBONES = ("resnet18", "resnet50", "densenet121", "efficientnet_b0", "mobilenet_v2", "mobilenet_v3",
                   "vit_b_16")


def best_of(fn, repeats: int) -> float:
    fn()  # warm-up: allocator growth, oneDNN kernel choice
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def decode_cost(n: int, size: int) -> float:
    """Seconds per image to read a Kermany-sized JPEG and squash it to ``size``."""
    from PIL import Image

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(n):  # smooth structure plus noise: compresses like a radiograph, not like pure noise
            base = np.add.outer(np.sin(np.linspace(0, 6, 1200) + i), np.cos(np.linspace(0, 9, 1500))) * 60 + 120
            img = (base + rng.normal(0, 12, base.shape)).clip(0, 255).astype(np.uint8)
            paths.append(Path(tmp) / f"{i}.jpeg")
            Image.fromarray(img).save(paths[-1], quality=95)
        seconds = best_of(lambda: [resize_square(read_grayscale(p), size) for p in paths], 2)
    return seconds / n


def data_for(n: int, size: int):
    from bench_training import synthetic_data

    return synthetic_data(n, size)


def model_costs(backbone: str, size: int, batch: int, repeats: int) -> dict[str, float]:
    """Seconds per image for a training step, an evaluation forward and a Grad-CAM map."""
    torch.manual_seed(0)
    cfg = TrainConfig(backbone=backbone, image_size=size, batch_size=batch)
    data = data_for(batch, size)
    model = build_model(backbone, image_size=size).to(memory_format=torch.channels_last)
    loss_fn = build_loss(cfg.loss, targets=data.targets, gamma=cfg.focal_gamma, alpha=cfg.focal_alpha, num_outputs=1)
    opt = OPTIMIZERS[cfg.optimizer](model.parameters(), cfg)
    rows, aug = np.arange(batch), AugmentConfig()
    keys = np.arange(batch, dtype=np.uint64)

    def step():
        model.train()
        x, y = make_batch(data, rows, "cpu", aug, None, channels_last=True, keys=keys)
        loss = loss_fn(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    out = {"train": best_of(step, repeats) / batch,
           "predict": best_of(lambda: predict(model, data, rows, batch, "cpu"), repeats) / batch}
    ex = explainable.prepare_model(model)
    x = torch.randn(batch, 1, size, size)
    out["gradcam"] = best_of(lambda: cams.explain(ex, x, "gradcam"), repeats) / batch
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", default=",".join(PAPER_BACKBONES), help="comma-separated subset")
    ap.add_argument("--size", type=int, default=224, help="input side in pixels")
    ap.add_argument("--batch", type=int, default=8, help="images per timed batch")
    ap.add_argument("--repeats", type=int, default=2, help="timed batches per measurement (best kept)")
    ap.add_argument("--decode-images", type=int, default=16)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.size} px, batch {args.batch}")
    print(f"decode   {decode_cost(args.decode_images, args.size) * 1e3:8.1f} ms/image (JPEG 1500x1200 -> "
          f"{args.size} px)", flush=True)
    print(f"{'backbone':<16} {'train ms/img':>12} {'predict ms/img':>15} {'gradcam ms/img':>15} "
          f"{'train/predict':>14}")
    for backbone in args.backbones.split(","):
        c = model_costs(backbone, args.size, args.batch, args.repeats)
        print(f"{backbone:<16} {c['train'] * 1e3:>12.1f} {c['predict'] * 1e3:>15.1f} {c['gradcam'] * 1e3:>15.1f} "
              f"{c['train'] / c['predict']:>14.2f}", flush=True)


if __name__ == "__main__":
    main()
