"""Maps per second of pneumoloc's GradCAM path against its floor and pytorch-grad-cam.

    .venv/bin/python bench/bench_cams.py                 # DenseNet-121 @224 b32, ViT-B/16 @224 b8
    .venv/bin/python bench/bench_cams.py --quick         # smaller batches (shared machine)

For each backbone, on the same random batch and random weights:
  floor   forward pass only (no_grad) of the model pneumoloc explains (channels_last):
          no map can be cheaper
  ours    pneumoloc.explain.cams fast path: frozen parameters, dScore/dA only, batched
  lib     pytorch-grad-cam's GradCAM on the whole batch, on the model as trained (contiguous,
          in-place ops off so its hooks work): full backward incl. parameter grads
  single  pytorch-grad-cam one image at a time, as the paper's script does
Prints images (maps) per second and the ratios ours/floor (expect >= 0.8), ours/lib (>= 4),
and floor/lib: the most any map method at the floor could gain over the library's call.
"""
from __future__ import annotations

import argparse
import time

import torch

from pneumoloc.explain import cams, explainable
from pneumoloc.models.backbones import build_model


def rate(fn, n_images: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n_images / best


def library_gradcam(ex: cams.Explainable, x: torch.Tensor):
    """pytorch-grad-cam's own batched call, as a user writes it (no extra forward for targets)."""
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget

    with ex.trainable() as model, pgc.GradCAM(model=model, target_layers=[ex.layer],
                                              reshape_transform=ex.reshape_transform) as cam:
        return cam(input_tensor=x, targets=[BinaryClassifierOutputTarget(1)] * len(x))


def bench(backbone: str, size: int, batch: int, n_single: int, repeats: int) -> dict:
    torch.manual_seed(0)
    model = build_model(backbone, image_size=size)
    ex = explainable.prepare_model(model)
    plain = explainable.prepare_model(model, channels_last=False)  # what a user hands the library
    x = torch.randn(batch, 1, size, size)
    x_ours = x.contiguous(memory_format=ex.memory_format)
    with torch.no_grad():  # warm-up at full batch: allocator growth, oneDNN kernel choice
        ex.model(x_ours)
    cams.explain(ex, x, "gradcam")
    library_gradcam(plain, x[:2])

    def floor():
        with torch.no_grad():
            ex.model(x_ours)

    out = {"floor": rate(floor, batch, repeats),
           "ours": rate(lambda: cams.explain(ex, x, "gradcam"), batch, repeats),
           "lib": rate(lambda: library_gradcam(plain, x), batch, repeats),
           "single": rate(lambda: [library_gradcam(plain, x[i:i + 1]) for i in range(n_single)], n_single, 1)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="batches 8 / 4, for a busy machine")
    ap.add_argument("--repeats", type=int, default=1, help="timed repeats (best kept)")
    ap.add_argument("--size", type=int, default=224, help="input side in pixels")
    ap.add_argument("--backbones", default="densenet121,vit_b_16", help="comma-separated subset")
    args = ap.parse_args()
    batches = {"densenet121": 8 if args.quick else 32, "vit_b_16": 4 if args.quick else 8}
    configs = [(b, batches.get(b, 8 if args.quick else 16)) for b in args.backbones.split(",")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, input {args.size} px")
    print(f"{'backbone':<12} {'batch':>5} {'floor':>8} {'ours':>8} {'lib':>8} {'single':>8}   "
          f"ours/floor  ours/lib  ours/single  floor/lib")
    for backbone, batch in configs:
        r = bench(backbone, args.size, batch, n_single=min(batch, 4), repeats=args.repeats)
        print(f"{backbone:<12} {batch:>5} {r['floor']:>8.2f} {r['ours']:>8.2f} {r['lib']:>8.2f} {r['single']:>8.2f}   "
              f"{r['ours'] / r['floor']:>10.2f} {r['ours'] / r['lib']:>9.2f} {r['ours'] / r['single']:>12.2f}"
              f" {r['floor'] / r['lib']:>10.2f}",
              flush=True)
    print("(images or maps per second; floor = forward only, lib = pytorch-grad-cam batched, "
          "single = pytorch-grad-cam one image at a time)")


if __name__ == "__main__":
    main()
