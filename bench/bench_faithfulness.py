"""Maps per second of pneumoloc's faithfulness metrics against a per-image loop and grad-cam.

    .venv/bin/python bench/bench_faithfulness.py            # ResNet-18 @128, 8 maps, 16 steps
    .venv/bin/python bench/bench_faithfulness.py --quick    # 4 maps (shared machine)

On the same random images, maps and random-weight model:
  ours      deletion + insertion curves of pneumoloc.explain.faithfulness.perturbation_curves:
            every perturbed copy of every image in forward passes of --batch copies, the model
            in channels_last as run_faithfulness loads it
  loop      the same curves one image and one step at a time (bench/references.py, RISE's way),
            the model as built (contiguous)
  road      pneumoloc's ROAD (grad-cam's equations, one vectorized assembly and a symmetric LU per
            image and percentile, forward passes batched), --percentiles
  road_lib  grad-cam's ROADCombined one image at a time, as its docs call it
Prints maps per second and the ratios ours/loop and road/road_lib.
"""
from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch

from pneumoloc.explain import faithfulness as F
from pneumoloc.models.backbones import build_model
from references import deletion_insertion_loop


def seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def library_road(model, x: torch.Tensor, maps: np.ndarray, percentiles: list[int]) -> None:
    """grad-cam's ROADCombined, one image per call, scored on P(pneumonia)."""
    from pytorch_grad_cam.metrics.road import ROADCombined

    target = [lambda out: torch.sigmoid(out[0])]
    road = ROADCombined(percentiles)
    for i in range(len(x)):
        road(x[i:i + 1], maps[i:i + 1], target, model)


def bench(backbone: str, size: int, n: int, steps: int, batch: int, percentiles: list[int]) -> dict:
    torch.manual_seed(0)
    model = build_model(backbone, image_size=size).eval()
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((n, 1, size, size), dtype=np.float32))
    maps = torch.from_numpy(rng.random((n, size, size), dtype=np.float32))
    with torch.inference_mode():  # warm-up: allocator growth, oneDNN kernel choice
        model(x[:batch].repeat(max(1, batch // n + 1), 1, 1, 1)[:batch])
    orders = np.argsort(F.removal_ranks(maps).numpy(), axis=1)

    def prob(t):
        with torch.inference_mode():
            return torch.sigmoid(model(t))[0, 0]

    fast = copy.deepcopy(model).to(memory_format=torch.channels_last)
    with torch.inference_mode():
        fast(x[:batch])
    out = {"ours": n / seconds(lambda: F.perturbation_curves(fast, x, maps, steps=steps, batch_size=batch)),
           "loop": n / seconds(lambda: deletion_insertion_loop(prob, x[:, 0].numpy(), orders, steps))}
    if percentiles:
        out["road"] = n / seconds(lambda: F.road_scores(model, x, maps, percentiles=percentiles, batch_size=batch))
        out["road_lib"] = n / seconds(lambda: library_road(model, x, maps.numpy(), percentiles))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 maps, for a busy machine")
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--size", type=int, default=128, help="input side in pixels")
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--batch", type=int, default=64, help="perturbed copies per forward pass")
    ap.add_argument("--percentiles", default="20,50,80", help="ROAD percentiles ('' skips ROAD)")
    args = ap.parse_args()
    n = 4 if args.quick else 8
    pct = [int(p) for p in args.percentiles.split(",") if p]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.backbone} @ {args.size} px, "
          f"{n} maps, {args.steps} steps, batch {args.batch}, ROAD percentiles {pct}")
    r = bench(args.backbone, args.size, n, args.steps, args.batch, pct)
    print(f"{'ours':>8} {'loop':>8} {'road':>8} {'road_lib':>8}   ours/loop  road/road_lib")
    print(f"{r['ours']:>8.2f} {r['loop']:>8.2f} {r.get('road', float('nan')):>8.2f} "
          f"{r.get('road_lib', float('nan')):>8.2f}   {r['ours'] / r['loop']:>9.2f} "
          f"{r.get('road', float('nan')) / r.get('road_lib', float('nan')):>14.2f}", flush=True)
    print("(maps per second: deletion + insertion curves for ours/loop, MoRF + LeRF for road/road_lib)")


if __name__ == "__main__":
    main()
