"""Drawing the phantom in memory: patient plans, lung-mask choice, lesions only where boxes say."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pneumoloc.phantom.anatomy import sample_anatomy
from pneumoloc.phantom.config import PhantomConfig
from pneumoloc.phantom.drawing import (choose_lung_masks, draw_patient_base, plan_patients, render_image,
                                       unpack_mask)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 300), frac=st.floats(0, 1), lo=st.integers(1, 3), extra=st.integers(0, 3),
       seed=st.integers(0, 2**32 - 1))
def test_plan_properties(n, frac, lo, extra, seed):
    cfg = PhantomConfig(n_images=n, pneumonia_fraction=frac, images_per_patient=(lo, lo + extra), seed=seed)
    plan = plan_patients(cfg)
    counts = [p["n"] for p in plan]
    assert sum(counts) == n and all(lo <= c <= lo + extra for c in counts[:-1]) and 1 <= counts[-1]
    assert sum(p["label"] for p in plan) == round(frac * len(plan))
    assert len({p["patient_id"] for p in plan}) == len(plan)
    assert [p["label"] for p in plan] == [p["label"] for p in plan_patients(cfg)]


def test_each_patient_gets_a_usable_mask_whatever_the_batching():
    plan = plan_patients(PhantomConfig(n_images=40))
    names, known = choose_lung_masks(plan)
    one_at_a_time, _ = choose_lung_masks(plan, map_fn=lambda f, xs: [f(x) for x in reversed(xs)][::-1])
    assert names == one_at_a_time and all(known[n] is not None for n in names)
    for name in names:
        crop = unpack_mask(known[name])
        assert crop[0].any() and crop[-1].any() and crop[:, 0].any() and crop[:, -1].any()  # cropped


def test_lesions_change_pixels_only_inside_lungs_and_boxes():
    cfg = PhantomConfig(n_images=10, size=64)
    faint = PhantomConfig(n_images=10, size=64, conspicuity=0.0)
    checked = 0
    positives = [p for p in plan_patients(cfg) if p["label"]][:3]
    for patient, name in zip(positives, choose_lung_masks(positives)[0]):
        crop = unpack_mask(choose_lung_masks([patient])[1][name])
        anat = sample_anatomy(np.random.default_rng(patient["anat_seq"]), name, cfg.lung_width)
        base = draw_patient_base(cfg, anat, crop)
        for seq in patient["image_seqs"]:
            im, plain = render_image(cfg, base, 1, seq), render_image(faint, base, 1, seq)
            assert (plain.lungs == im.lungs).all() and plain.boxes == im.boxes
            changed = im.image != plain.image
            in_box = np.zeros_like(changed)
            for x, y, w, h in im.boxes:
                in_box[y:y + h, x:x + w] = True
                edges = im.opacity[y:y + h, x:x + w]
                assert edges[0].max() > 0 and edges[-1].max() > 0 and edges[:, 0].max() > 0 \
                    and edges[:, -1].max() > 0  # tight box of the opacity
            assert not (changed & ~im.lungs).any() and not (changed & ~in_box).any()
            assert not ((im.opacity > 0) & ~im.lungs).any()
            # clearly visible at the default conspicuity: mean lift inside the lesions
            lesion = im.opacity > 0
            lift = im.image[lesion].astype(float).mean() - plain.image[lesion].astype(float).mean()
            assert lift > 15
            checked += 1
    assert checked >= 3
