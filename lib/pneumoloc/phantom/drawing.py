"""Drawing the phantom in memory: patients planned from the seed, their lungs, their images.

:func:`plan_patients` splits the seed into one random stream per patient (and per image),
so every image is the same however the work is batched or spread over processes.
:func:`patient_images` draws a patient's anatomy once (:mod:`pneumoloc.phantom.anatomy`) and each
of its images as a jittered copy with lesions (:mod:`pneumoloc.phantom.lesions`),
exposure and noise. Nothing here touches the disk; :mod:`pneumoloc.phantom.writer` writes files.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..data.xrv_assets import load_lung_mask, lung_mask_names, torchxrayvision_data
from .anatomy import Anatomy, downsample, jitter_frame, place_lungs, render_anatomy, sample_anatomy
from .config import PhantomConfig
from .lesions import draw_opacities
from .markers import burn_marker, plan_markers

__all__ = ["PhantomImage", "plan_patients", "choose_lung_masks", "patient_images", "draw_patient_base",
           "render_image", "unpack_mask"]


@dataclass
class PhantomImage:
    """One drawn image with its ground truth."""

    image: np.ndarray  # uint8 [S, S], lungs dark
    lungs: np.ndarray  # bool [S, S], exact lung mask
    opacity: np.ndarray  # float32 [S, S], intensity the lesions added (0 outside lesions)
    boxes: list[tuple[int, int, int, int]]  # x, y, w, h of each opacity's visible support
    marker: tuple[int, int, int, int] | None = None  # x, y, w, h of the burned-in marker's letter, if any


def draw_patient_base(cfg: PhantomConfig, anat: Anatomy, crop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A patient's anatomy drawn once: (float image, exact lung mask); images are jittered copies.

    The smooth anatomy is drawn at half size (4x fewer pixels) and upsampled by the
    per-image warp; lesions, noise and the mask stay at full size.
    """
    lungs = place_lungs(anat, crop, cfg.size)
    factor = 2 if cfg.size >= 128 and cfg.size % 2 == 0 else 1
    return render_anatomy(anat, downsample(lungs, factor), cfg.rib_contrast), lungs


def render_image(cfg: PhantomConfig, base: tuple[np.ndarray, np.ndarray], label: int,
                 seq: np.random.SeedSequence, marker: dict[str, Any] | None = None) -> PhantomImage:
    """Draw one image of a patient: per-image jitter of ``base``, lesions, exposure, noise, marker.

    The random stream does not depend on ``conspicuity`` or the marker, so the same image
    drawn with conspicuity 0 differs only where lesions are, and without its marker only
    inside the marker box (the tests use this). ``marker`` comes from
    :func:`pneumoloc.phantom.markers.plan_markers`; it is burned in last, as a real
    burned-in marker sits on top of the exposed image.
    """
    rng = np.random.default_rng(seq)
    s, j = cfg.size, cfg.jitter
    img, lungs = jitter_frame(*base, scale=1 + rng.uniform(-j, j), dx=rng.uniform(-j, j) * s,
                              dy=rng.uniform(-j, j) * s)
    if not lungs.any():  # cannot happen for jitter <= 0.1, but never draw lesions on nothing
        raise RuntimeError("jitter moved the lungs out of the frame")
    if label:
        opacity, boxes = draw_opacities(rng, lungs, cfg.max_opacities, cfg.conspicuity)
    else:
        opacity, boxes = np.zeros_like(img), []
    img = img + opacity
    # Exposure: film/detector response as a gamma curve plus contrast and offset.
    gamma = rng.uniform(*cfg.exposure_gamma)
    contrast, shift = rng.uniform(0.9, 1.1), rng.uniform(-cfg.exposure_shift, cfg.exposure_shift)
    img = np.clip(img, 0, 1) ** gamma * contrast + shift
    # Quantum mottle: white noise whose level varies per image.
    img += cfg.noise * rng.uniform(0.6, 1.4) * rng.standard_normal((s, s), dtype=np.float32)
    marker_box = None
    if marker is not None:
        img, marker_box = burn_marker(img, lungs, marker, max(1, int(round(cfg.marker_size * s))))
    image = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
    return PhantomImage(image=image, lungs=lungs, opacity=opacity, boxes=boxes, marker=marker_box)


def plan_patients(cfg: PhantomConfig) -> list[dict[str, Any]]:
    """Patients with their image count, label, demographics and random streams (serial, cheap).

    With a marker (``cfg.has_marker``) each patient also gets its ``split`` and per-image
    ``markers`` (:func:`pneumoloc.phantom.markers.plan_markers`).
    """
    plan_seq, patients_seq = np.random.SeedSequence(cfg.seed).spawn(2)
    rng = np.random.default_rng(plan_seq)
    lo, hi = cfg.images_per_patient
    counts: list[int] = []
    while sum(counts) < cfg.n_images:
        counts.append(int(rng.integers(lo, hi + 1)))
    counts[-1] -= sum(counts) - cfg.n_images
    n = len(counts)
    labels = np.zeros(n, dtype=int)
    labels[rng.permutation(n)[:int(round(cfg.pneumonia_fraction * n))]] = 1
    sexes = rng.choice(["F", "M"], size=n)
    ages = rng.integers(cfg.age_range[0], cfg.age_range[1] + 1, size=n)
    plan = []
    for p, seq in enumerate(patients_seq.spawn(n)):
        mask_seq, anat_seq, *image_seqs = seq.spawn(2 + counts[p])
        plan.append({"patient_id": f"PH{p:05d}", "n": counts[p], "label": int(labels[p]),
                     "sex": str(sexes[p]), "age": int(ages[p]), "mask_seq": mask_seq,
                     "anat_seq": anat_seq, "image_seqs": image_seqs})
    if cfg.has_marker:
        plan_markers(cfg, plan)
    return plan


def _load_packed(name: str) -> tuple[tuple[int, int], np.ndarray] | None:
    crop = load_lung_mask(name)
    return None if crop is None else (crop.shape, np.packbits(crop))


def unpack_mask(packed: tuple[tuple[int, int], np.ndarray]) -> np.ndarray:
    """The bool lung crop from ``(shape, packbits)`` (masks cross process boundaries packed: 8x smaller)."""
    shape, bits = packed
    return np.unpackbits(bits, count=shape[0] * shape[1]).reshape(shape).astype(bool)


def choose_lung_masks(patients: list[dict[str, Any]],
                      map_fn: Callable = map) -> tuple[list[str], dict[str, Any]]:
    """Give each patient a usable v7labs mask; decode every candidate mask once.

    Each patient draws candidates from its own stream until one is not degenerate, so
    the choice is the same however decoding is batched or parallelised (``map_fn``).

    Returns:
        The mask name per patient and ``{name: packed crop or None (degenerate)}``.
    """
    names = lung_mask_names()
    rngs = [np.random.default_rng(p["mask_seq"]) for p in patients]
    current = [names[int(r.integers(len(names)))] for r in rngs]
    known: dict[str, Any] = {}
    while True:
        for i, rng in enumerate(rngs):
            while current[i] in known and known[current[i]] is None:
                if len(known) == len(names) and not any(v is not None for v in known.values()):
                    raise RuntimeError(f"no usable lung mask in {torchxrayvision_data()}")
                current[i] = names[int(rng.integers(len(names)))]
        todo = sorted({c for c in current if c not in known})
        if not todo:
            return current, known
        known.update(zip(todo, map_fn(_load_packed, todo)))


def patient_images(cfg: PhantomConfig, patient: dict[str, Any], mask_name: str,
                   packed: Any) -> list[PhantomImage]:
    """Draw every image of one patient (the anatomy once, then per-image jitter and lesions)."""
    anat = sample_anatomy(np.random.default_rng(patient["anat_seq"]), mask_name, cfg.lung_width)
    base = draw_patient_base(cfg, anat, unpack_mask(packed))
    markers = patient.get("markers") or [None] * len(patient["image_seqs"])
    return [render_image(cfg, base, patient["label"], seq, marker)
            for seq, marker in zip(patient["image_seqs"], markers)]
