"""Training steps per second in channels_last against contiguous memory format, per backbone.

    .venv/bin/python bench/bench_channels_last.py                  # the demo's backbones and sizes
    .venv/bin/python bench/bench_channels_last.py --backbones resnet18 --batch 16

For each backbone, the same seeded model and batch, one AdamW step (forward, BCE loss,
backward, update) timed best of ``--repeats`` in both formats side by side; prints images/s
and the ratio channels_last / contiguous. ``TrainConfig.channels_last`` (default True) and
``cams.prepare_model(channels_last=True)`` rely on this.
"""
from __future__ import annotations

import argparse
import copy
import time

import torch

from pneumoloc.models.backbones import build_model

# The demo spec's input size per backbone (papermill_runs/demo.yaml).
DEMO_SIZES = {"resnet18": 128, "mobilenet_v3": 128, "mobilenet_v2": 128, "efficientnet_b0": 128,
              "densenet121": 96, "resnet50": 96, "vit_b_16": 64}


def step_rate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, repeats: int) -> float:
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    step()  # warm-up: allocator growth, oneDNN kernel choice
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - t0)
    return len(x) / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", default=",".join(DEMO_SIZES), help="comma-separated registry names")
    ap.add_argument("--batch", type=int, default=32, help="images per step")
    ap.add_argument("--repeats", type=int, default=3, help="timed steps per format (best kept)")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}")
    print(f"{'backbone':<16} {'size':>4} {'contiguous':>11} {'channels_last':>14}   ratio")
    for name in args.backbones.split(","):
        size = DEMO_SIZES.get(name, 128)
        torch.manual_seed(0)
        base = build_model(name, image_size=size).train()
        x, y = torch.randn(args.batch, 1, size, size), torch.rand(args.batch, 1)
        plain = step_rate(copy.deepcopy(base), x, y, args.repeats)
        fast = step_rate(copy.deepcopy(base).to(memory_format=torch.channels_last),
                         x.contiguous(memory_format=torch.channels_last), y, args.repeats)
        print(f"{name:<16} {size:>4} {plain:>11.1f} {fast:>14.1f}   {fast / plain:5.2f}x", flush=True)
    print("(training images per second, one AdamW step per timing)")


if __name__ == "__main__":
    main()
