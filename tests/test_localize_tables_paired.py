"""Paired comparisons of notebook 04 against the index-intersection reference (bench/references.py)."""
from __future__ import annotations

import numpy as np
import pandas as pd
from references import paired_comparisons_loc

from pneumoloc.localize.tables import paired_comparisons


def _per_image(seed: int = 0) -> pd.DataFrame:
    """Three models x two methods x two metrics on 40 images of 15 patients; each system keeps a
    different random subset of images (invalid rows are absent) in a shuffled order, one system
    keeps a single image (no comparison) and a shuffled-boxes variant must be ignored."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"i{k:02d}" for k in range(40)])
    patients = {i: f"p{k % 15}" for k, i in enumerate(ids)}
    parts = []
    for model in ("resnet18", "densenet121", "vit_b_16"):
        for method in ("gradcam", "gradient"):
            for metric in ("hit", "energy"):
                n = 1 if (model, method, metric) == ("vit_b_16", "gradient", "hit") else rng.integers(20, 40)
                keep = rng.permutation(ids)[:n]
                for variant in ("maps", "shuffled_boxes"):
                    parts.append(pd.DataFrame({"model": model, "method": method, "variant": variant, "metric": metric,
                                               "image_id": keep, "patient_id": [patients[i] for i in keep],
                                               "value": rng.random(n)}))
    return pd.concat(parts, ignore_index=True)


def test_paired_comparisons_equal_the_reference_exactly():
    per_image = _per_image()
    fast, ref = paired_comparisons(per_image, n_boot=50, seed=3), paired_comparisons_loc(per_image, n_boot=50, seed=3)
    assert len(ref) == 15  # 9 pairs per metric; the one-image system of "hit" is in 3 of them
    pd.testing.assert_frame_equal(fast, ref, check_exact=True)


def test_paired_comparisons_of_nothing_is_empty():
    assert paired_comparisons(_per_image().iloc[:0]).empty
