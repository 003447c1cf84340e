"""Seconds of notebook 04's faithfulness per model: map-independent copies per map or shared.

    .venv/bin/python bench/bench_faithfulness_endpoints.py             # ResNet-18 @128, demo settings
    .venv/bin/python bench/bench_faithfulness_endpoints.py --repeat 1  # one run each (shared machine)

On the same random images, maps and random-weight model (channels_last, as run_faithfulness
loads it), with the demo's settings (4 images, 6 map sets: 5 methods and the random maps,
8 deletion / insertion steps, ROAD at percentiles 20, 50, 80):

  per map  ``faithfulness_scores`` of each map set on its own: the image, its fully deleted copy
           and its blurred copy go through the model again for every map
  shared   ``endpoint_probabilities`` once, passed to ``faithfulness_scores`` of every map set,
           as ``run_faithfulness`` does

Prints the images forwarded, CPU seconds of this process (best of ``--repeat`` interleaved runs,
``time.process_time``: the 2 cores here are shared) and the ratio per map / shared, and the
largest score difference (float32 rounding of differently composed batches).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from pneumoloc.explain import faithfulness as F
from pneumoloc.models.backbones import build_model
from pneumoloc.training.transforms import to_input


class Counting(torch.nn.Module):
    """The model, counting the images it is shown."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model, self.seen = model, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += len(x)
        return self.model(x)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return self.model.probabilities(logits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--maps", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = Counting(build_model(args.backbone, image_size=args.size).eval().to(memory_format=torch.channels_last))
    rng = np.random.default_rng(0)
    pixels = (rng.random((args.images, args.size, args.size)) * 255).astype(np.uint8)
    maps = [rng.random((args.images, 16, 16), dtype=np.float32) for _ in range(args.maps)]
    kw = dict(steps=8, road_percentiles=(20, 50, 80), seed=0)

    def per_map():
        return [F.faithfulness_scores(model, pixels, m, **kw) for m in maps]

    def shared():
        ends = F.endpoint_probabilities(model, to_input(pixels.copy()))
        return [F.faithfulness_scores(model, pixels, m, endpoints=ends, **kw) for m in maps]

    best, seen, out = {}, {}, {}
    for _ in range(args.repeat):
        for name, fn in (("per map", per_map), ("shared", shared)):
            model.seen, t0 = 0, time.process_time()
            out[name] = fn()
            best[name] = min(best.get(name, np.inf), time.process_time() - t0)
            seen[name] = model.seen
    diff = max(float(np.abs(a.to_numpy() - b.to_numpy()).max()) for a, b in zip(out["per map"], out["shared"]))
    print(f"{args.backbone} @{args.size}, {args.images} images x {args.maps} map sets")
    print(f"{'path':<8} {'forwarded':>9} {'cpu s':>7}")
    for name in best:
        print(f"{name:<8} {seen[name]:>9} {best[name]:>7.2f}")
    print(f"ratio per map / shared: {best['per map'] / best['shared']:.2f}x; largest score difference {diff:.1e}")


if __name__ == "__main__":
    main()
