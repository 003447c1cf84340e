"""The embedded default dataset: chest-radiograph-like images with exact lungs and lesion boxes.

No real chest X-ray can be downloaded on a fresh machine, so the default run uses this
generated dataset (DESIGN.md, "The embedded default"). It is realistic where it matters
for localization research:

* lung fields are the real v7labs lung masks shipped in ``torchxrayvision``, drawn with
  ribs, clavicles, mediastinum, heart, diaphragm, body outline, exposure and noise
  (:mod:`pneumoloc.anatomy`);
* pneumonia images carry 1-``max_opacities`` textured, soft-edged consolidations drawn
  only inside the lungs, at positions and sizes of real RSNA Pneumonia boxes (the
  stage-2 label table shipped in ``torchxrayvision``), mapped relative to the lungs;
* patients have several images sharing anatomy, so an image-level split leaks;
* the class balance defaults to Kermany's (~73% pneumonia).

Because the lung masks and lesion boxes are exact, the phantom is the ground truth
against which localization metrics are proven. Same config -> byte-identical images,
masks and tables (``phantom.json`` also records provenance and timing).
"""
from __future__ import annotations

import hashlib
import inspect
import io
import json
import re
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import storage
from .anatomy import (Anatomy, downsample, draw_opacities, jitter_frame, load_lung_mask, lung_mask_names,
                      place_lungs, render_anatomy, sample_anatomy, torchxrayvision_data)

__all__ = ["PhantomConfig", "PhantomImage", "generate_phantom", "plan_patients", "choose_lung_masks",
           "patient_images", "draw_patient_base", "render_image", "unpack_mask", "GENERATOR_VERSION"]

GENERATOR_VERSION = 2  # bump when the drawing changes: an existing phantom is then regenerated
_EXECUTION_ONLY = ("workers",)  # fields that do not change the output
_MIN_PATIENTS_FOR_POOL = 24  # below this, starting worker processes costs more than it saves


@dataclass(frozen=True)
class PhantomConfig:
    """Every parameter of the phantom, each with its default (CLI: ``--kebab-case`` flags)."""

    n_images: int = 2000  # number of images in total
    size: int = 256  # image width = height in pixels
    pneumonia_fraction: float = 0.73  # share of patients (and so ~of images) with pneumonia, as in Kermany
    images_per_patient: tuple[int, int] = (1, 4)  # min and max images per patient (uniform)
    seed: int = 0  # random seed: same seed and parameters -> identical files
    conspicuity: float = 1.0  # lesion contrast multiplier (1 = clearly visible, 0 = invisible)
    max_opacities: int = 3  # most opacities on one pneumonia image (at least 1)
    lung_width: tuple[float, float] = (0.64, 0.80)  # lung field width as a fraction of the image width
    jitter: float = 0.02  # per-image shift and scale of a patient's anatomy (fraction of size)
    noise: float = 0.02  # standard deviation of pixel noise (intensity scale 0-1)
    exposure_gamma: tuple[float, float] = (0.8, 1.25)  # range of the per-image exposure gamma
    exposure_shift: float = 0.05  # largest per-image brightness offset (intensity scale 0-1)
    rib_contrast: float = 1.0  # contrast multiplier of ribs and clavicles (distractors for CAMs)
    age_range: tuple[int, int] = (18, 85)  # patient age range in years (uniform)
    workers: int = 2  # processes drawing images (does not change the output; 1 = no pool)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):  # YAML / JSON give lists for tuples
                value = tuple(value)
            _check_type(f.name, value, f.default)
            if isinstance(f.default, float):  # 1 and 1.0 must give the same fingerprint
                value = float(value)
            elif isinstance(f.default, tuple):
                value = tuple(type(d)(v) for v, d in zip(value, f.default))
            object.__setattr__(self, f.name, value)
        lo, hi = self.images_per_patient
        checks = {
            "n_images": self.n_images >= 1, "size": self.size >= 32,
            "pneumonia_fraction": 0.0 <= self.pneumonia_fraction <= 1.0,
            "images_per_patient": 1 <= lo <= hi, "conspicuity": self.conspicuity >= 0,
            "max_opacities": self.max_opacities >= 1,
            "lung_width": 0.3 <= self.lung_width[0] <= self.lung_width[1] <= 0.9,
            "jitter": 0 <= self.jitter <= 0.1, "noise": self.noise >= 0,
            "exposure_gamma": 0 < self.exposure_gamma[0] <= self.exposure_gamma[1],
            "exposure_shift": 0 <= self.exposure_shift <= 0.5, "rib_contrast": self.rib_contrast >= 0,
            "age_range": 0 <= self.age_range[0] <= self.age_range[1], "workers": self.workers >= 1,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"PhantomConfig: invalid {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}"
                             f"; see PhantomConfig.help() for the meaning and ranges")

    @classmethod
    def help(cls) -> dict[str, str]:
        """Field name -> its trailing comment (the CLI's ``--help`` text)."""
        src = inspect.getsource(cls)
        return dict(re.findall(r"^\s+(\w+): [^=\n]+=[^#\n]+#\s*(.+)$", src, flags=re.M))

    @classmethod
    def from_overrides(cls, config: "PhantomConfig | None" = None, **overrides: Any) -> "PhantomConfig":
        """``config`` (or the defaults) with ``overrides``; unknown keys are a ValueError."""
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise ValueError(f"unknown phantom parameter(s) {unknown}; valid: {', '.join(names)}")
        base = asdict(config) if config is not None else {}
        return cls(**{**base, **overrides})

    def fingerprint(self) -> str:
        """SHA-256 of everything that changes the generated files."""
        d = {k: v for k, v in asdict(self).items() if k not in _EXECUTION_ONLY}
        d["generator_version"] = GENERATOR_VERSION
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def _check_type(name: str, value: Any, default: Any) -> None:
    ok = (isinstance(value, float) or (isinstance(value, int) and not isinstance(value, bool))
          if isinstance(default, float) else
          isinstance(value, type(default)) and not (isinstance(value, bool) and type(default) is int))
    if isinstance(default, tuple):
        ok = ok and len(value) == len(default) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool)
            and (isinstance(v, int) or isinstance(d, float)) for v, d in zip(value, default))
    if not ok:
        raise TypeError(f"PhantomConfig.{name} must be {type(default).__name__} like {default!r}, "
                        f"got {value!r}")


@dataclass
class PhantomImage:
    """One drawn image with its ground truth."""

    image: np.ndarray  # uint8 [S, S], lungs dark
    lungs: np.ndarray  # bool [S, S], exact lung mask
    opacity: np.ndarray  # float32 [S, S], intensity the lesions added (0 outside lesions)
    boxes: list[tuple[int, int, int, int]]  # x, y, w, h of each opacity's visible support


def draw_patient_base(cfg: PhantomConfig, anat: Anatomy, crop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A patient's anatomy drawn once: (float image, exact lung mask); images are jittered copies.

    The smooth anatomy is drawn at half size (4x fewer pixels) and upsampled by the
    per-image warp; lesions, noise and the mask stay at full size.
    """
    lungs = place_lungs(anat, crop, cfg.size)
    factor = 2 if cfg.size >= 128 and cfg.size % 2 == 0 else 1
    return render_anatomy(anat, downsample(lungs, factor), cfg.rib_contrast), lungs


def render_image(cfg: PhantomConfig, base: tuple[np.ndarray, np.ndarray], label: int,
                 seq: np.random.SeedSequence) -> PhantomImage:
    """Draw one image of a patient: per-image jitter of ``base``, lesions, exposure, noise.

    The random stream does not depend on ``conspicuity``, so the same image drawn with
    conspicuity 0 differs only where lesions are (the tests use this).
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
    image = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
    return PhantomImage(image=image, lungs=lungs, opacity=opacity, boxes=boxes)


def plan_patients(cfg: PhantomConfig) -> list[dict[str, Any]]:
    """Patients with their image count, label, demographics and random streams (serial, cheap)."""
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
    return plan


def _load_packed(name: str) -> tuple[tuple[int, int], np.ndarray] | None:
    crop = load_lung_mask(name)
    return None if crop is None else (crop.shape, np.packbits(crop))


def unpack_mask(packed: tuple[tuple[int, int], np.ndarray]) -> np.ndarray:
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
    return [render_image(cfg, base, patient["label"], seq) for seq in patient["image_seqs"]]


def _write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array, mode="L").save(buf, format="PNG", compress_level=3)
    storage.write_bytes(path, buf.getvalue())


@lru_cache(maxsize=1)
def _writer() -> ThreadPoolExecutor:
    """Threads for PNG encoding and fsync-ed writes (both release the GIL), one pool per process."""
    return ThreadPoolExecutor(4)


def _draw_chunk(cfg: PhantomConfig, out: str, tasks: list[tuple]) -> list[tuple[list, list]]:
    """Draw and write the images of a few patients (runs in a worker process)."""
    results, pending = [], []
    for patient, mask_name, packed in tasks:
        rows, boxes = [], []
        for k, im in enumerate(patient_images(cfg, patient, mask_name, packed)):
            image_id = f"{patient['patient_id']}_{k}"
            pending += [_writer().submit(_write_png, Path(out, "images", f"{image_id}.png"), im.image),
                        _writer().submit(_write_png, Path(out, "masks", f"{image_id}.png"),
                                         im.lungs.astype(np.uint8) * 255)]
            rows.append({"image_id": image_id, "patient_id": patient["patient_id"],
                         "path": f"images/{image_id}.png", "label": patient["label"],
                         "width": cfg.size, "height": cfg.size, "mask_path": f"masks/{image_id}.png",
                         "view": "PA", "sex": patient["sex"], "age": patient["age"],
                         "n_opacities": len(im.boxes), "lung_source": mask_name.rsplit("/", 1)[-1]})
            boxes += [{"image_id": image_id, "x": x, "y": y, "w": w, "h": h} for x, y, w, h in im.boxes]
        results.append((rows, boxes))
    for f in pending:
        f.result()  # re-raises a failed write
    return results


_OWN_ENTRIES = {"images", "masks", "images.csv", "boxes.csv", "phantom.json"}


def _is_complete(out: Path, cfg: PhantomConfig) -> bool:
    """True when ``out`` holds a finished phantom of this config (all listed files present)."""
    import pandas as pd

    try:
        if storage.load_json(out / "phantom.json").get("fingerprint") != cfg.fingerprint():
            return False
        table = pd.read_csv(out / "images.csv", usecols=["path", "mask_path"])
    except (OSError, ValueError, KeyError):
        return False
    return (out / "boxes.csv").exists() and all((out / p).exists() for p in table.to_numpy().ravel())


def _draw_all(cfg: PhantomConfig, out: Path, patients: list[dict]) -> tuple[list, dict]:
    """Choose masks and draw every patient, in a pool of ``cfg.workers`` spawned processes."""
    from tqdm.auto import tqdm

    pool = None
    if cfg.workers > 1 and len(patients) >= _MIN_PATIENTS_FOR_POOL:
        # spawn, not fork: a notebook kernel may hold torch threads that fork would copy
        pool = ProcessPoolExecutor(cfg.workers, mp_context=get_context("spawn"))
    pmap = map if pool is None else (lambda f, *xs: pool.map(f, *xs, chunksize=2))
    try:
        names, masks = choose_lung_masks(patients, map_fn=pmap)
        tasks = [(p, m, masks[m]) for p, m in zip(patients, names)]
        chunks = [tasks[i:i + 4] for i in range(0, len(tasks), 4)]
        results: list[tuple] = []
        with tqdm(total=cfg.n_images, desc="phantom images", unit="img") as bar:
            for chunk in pmap(_draw_chunk, [cfg] * len(chunks), [str(out)] * len(chunks), chunks):
                results += chunk
                bar.update(sum(len(rows) for rows, _ in chunk))
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return results, masks


def generate_phantom(out: str | Path, config: PhantomConfig | None = None, **overrides: Any) -> Path:
    """Write the phantom dataset to ``out`` (reused when it is already there with this config).

    Writes ``images/<id>.png``, ``masks/<id>.png`` (255 = lung), ``images.csv``,
    ``boxes.csv`` (x, y, w, h in pixels) and ``phantom.json`` (config, counts, provenance),
    each file atomically; ``phantom.json`` comes last and marks the dataset complete.
    With ``workers > 1`` processes are spawned: call it from a notebook, the CLI, or under
    ``if __name__ == "__main__":`` in a script.

    Args:
        out: dataset folder (relative paths are taken from the project root).
        config: the parameters; None -> :class:`PhantomConfig` defaults.
        **overrides: replace single parameters, e.g. ``n_images=200``.

    Returns:
        The absolute dataset folder.

    Raises:
        ValueError: an unknown or out-of-range parameter (the message lists valid ones), or
            ``out`` holds files that are not a phantom's (nothing is overwritten then).
    """
    import pandas as pd

    from .paths import resolve
    from .provenance import provenance

    cfg = PhantomConfig.from_overrides(config, **overrides)
    out = resolve(out)
    if _is_complete(out, cfg):
        return out
    foreign = sorted(p.name for p in out.glob("*") if p.name not in _OWN_ENTRIES) if out.is_dir() else []
    if foreign:
        raise ValueError(f"{out} holds {foreign[:5]}, which a phantom does not write: "
                         f"choose an empty or a phantom folder for --out")
    started = time.time()
    (out / "phantom.json").unlink(missing_ok=True)  # incomplete until rewritten at the end
    patients = plan_patients(cfg)
    results, masks = _draw_all(cfg, out, patients)
    images = pd.DataFrame([row for rows, _ in results for row in rows])
    boxes = pd.DataFrame([b for _, bs in results for b in bs], columns=["image_id", "x", "y", "w", "h"])
    keep = set(images["image_id"])
    for sub in ("images", "masks"):  # PNGs of an earlier phantom with another config
        for p in (out / sub).glob("*.png"):
            if p.stem not in keep:
                p.unlink()
    storage.save_table(out / "images.csv", images)
    storage.save_table(out / "boxes.csv", boxes)
    degenerate = sorted(name.rsplit("/", 1)[-1] for name, v in masks.items() if v is None)
    storage.save_json(out / "phantom.json", {
        "generator": "pneumoloc.phantom", "generator_version": GENERATOR_VERSION,
        "fingerprint": cfg.fingerprint(), "config": asdict(cfg),
        "counts": {"images": len(images), "patients": len(patients),
                   "pneumonia_images": int(images["label"].sum()),
                   "pneumonia_patients": sum(p["label"] for p in patients), "boxes": len(boxes)},
        "lung_masks": {"in_zip": len(lung_mask_names()), "used": int(images["lung_source"].nunique()),
                       "degenerate_seen": len(degenerate), "degenerate_names": degenerate},
        "sources": {"torchxrayvision_data": str(torchxrayvision_data())},
        "seconds": round(time.time() - started, 2), "provenance": provenance(),
    })
    return out
