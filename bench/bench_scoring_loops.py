"""Speed of the two loops that dominated notebook 04's ``score_run``: patient resamples and boxes by image.

Side by side, on inputs shaped like the demo run (156 test images of 70 patients, 200 resamples;
a box table of 1,377 boxes over 1,200 images, queried for 180 validation images):

  resamples  ``pneumoloc.evaluate.bootstrap.patient_resamples`` (one draw, one gather) against
             ``references.patient_resamples_loop`` (one concatenation per resample); score_run
             and its paired comparisons call it once per metric row (about 3,400 times in the demo)
  boxes      ``pneumoloc.localize.metrics.boxes_by_image`` (the table converted once) against
             ``references.boxes_by_image_groupby`` (each group's columns converted on its own);
             score_run calls it twice per model x method, failure_inputs once per system
  paired     ``pneumoloc.localize.tables.paired_comparisons`` (common images by one index lookup
             on numpy arrays) against ``references.paired_comparisons_loc`` (pandas intersection
             and ``.loc`` per pair), on 7 models x 5 methods x 2 metrics of the 156 images

Prints milliseconds per call (best of ``--repeat`` interleaved runs of CPU time of this process,
``time.process_time``: the 2 cores here are shared), the ratio reference / library and a check
that both return identical arrays.

Run: .venv/bin/python bench/bench_scoring_loops.py [--repeat 5]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from references import boxes_by_image_groupby, paired_comparisons_loc, patient_resamples_loop

from pneumoloc.evaluate.bootstrap import patient_resamples
from pneumoloc.localize.metrics import boxes_by_image
from pneumoloc.localize.tables import paired_comparisons


def best_ms(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return 1e3 * best


def demo_shaped_inputs(seed: int = 0):
    """Patient ids of 156 images (70 patients) and a box table of 1,377 boxes over 1,200 images."""
    rng = np.random.default_rng(seed)
    groups = np.concatenate([np.arange(70), rng.integers(0, 70, 86)]).astype(str)
    ids = np.array([f"img{i:04d}" for i in range(1200)])
    boxes = pd.DataFrame({"image_id": rng.choice(ids[:800], 1377), **{c: rng.random(1377) * 200 for c in "xywh"}})
    return groups, boxes, ids[1000:1180]


def demo_shaped_per_image(groups: np.ndarray, seed: int = 0) -> pd.DataFrame:
    """Per-image scores of 7 models x 5 methods x 2 metrics on the images of ``groups``, each
    system missing a random tenth of them (invalid rows)."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"t{i:03d}" for i in range(len(groups))])
    parts = []
    for model in range(7):
        for method in range(5):
            for metric in ("hit", "energy"):
                keep = rng.random(len(ids)) > 0.1
                parts.append(pd.DataFrame({"model": f"m{model}", "method": f"k{method}", "variant": "maps",
                                           "metric": metric, "image_id": ids[keep], "patient_id": groups[keep],
                                           "value": rng.random(keep.sum())}))
    return pd.concat(parts, ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    groups, boxes, query = demo_shaped_inputs()
    per_image = demo_shaped_per_image(groups)
    cases = {"resamples": (lambda: patient_resamples(groups, 200, 0), lambda: patient_resamples_loop(groups, 200, 0)),
             "boxes": (lambda: boxes_by_image(boxes, query), lambda: boxes_by_image_groupby(boxes, query)),
             "paired": (lambda: [paired_comparisons(per_image)], lambda: [paired_comparisons_loc(per_image)])}
    print(f"{'case':<10} {'reference ms':>13} {'library ms':>11} {'ratio':>7}  identical")
    for name, (ours, ref) in cases.items():
        same = all(a.equals(b) if isinstance(a, pd.DataFrame) else np.array_equal(a, b) and a.dtype == b.dtype
                   for a, b in zip(ours(), ref()))
        t_ours, t_ref = best_ms(ours, args.repeat), best_ms(ref, args.repeat)
        print(f"{name:<10} {t_ref:>13.2f} {t_ours:>11.2f} {t_ref / t_ours:>6.1f}x  {same}")


if __name__ == "__main__":
    main()
