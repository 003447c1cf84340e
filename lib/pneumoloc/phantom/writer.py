"""The embedded default dataset: chest-radiograph-like images with exact lungs and lesion boxes.

No real chest X-ray can be downloaded on a fresh machine, so the default run uses this
generated dataset (docs/design.md, "The embedded default"). It is realistic where it matters
for localization research:

* lung fields are the real v7labs lung masks shipped in ``torchxrayvision``, drawn with
  ribs, clavicles, mediastinum, heart, diaphragm, body outline, exposure and noise
  (:mod:`pneumoloc.phantom.anatomy`);
* pneumonia images carry 1-``max_opacities`` textured, soft-edged consolidations drawn
  only inside the lungs, at positions and sizes of real RSNA Pneumonia boxes (the
  stage-2 label table shipped in ``torchxrayvision``), mapped relative to the lungs;
* patients have several images sharing anatomy, so an image-level split leaks;
* the class balance defaults to Kermany's (~73% pneumonia);
* optionally, a burned-in laterality marker outside the lungs correlated with the label in
  train/val and independent of it in test: a shortcut with an exact box
  (:mod:`pneumoloc.phantom.markers`). Off by default, and then nothing it writes exists.

Because the lung masks and lesion boxes are exact, the phantom is the ground truth
against which localization metrics are proven. Same config -> byte-identical images,
masks and tables (``phantom.json`` also records provenance and timing).

This module writes the dataset (PNGs, tables, ``phantom.json``; a process pool for
large phantoms). The parameters live in :mod:`pneumoloc.phantom.config`, the in-memory
drawing of patients and images in :mod:`pneumoloc.phantom.drawing`.
"""
from __future__ import annotations

import io
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from .. import storage
from ..data.xrv_assets import lung_mask_names, torchxrayvision_data
from .config import GENERATOR_VERSION, PhantomConfig
from .drawing import choose_lung_masks, patient_images, plan_patients
from .markers import MARKER_COLUMNS

__all__ = ["generate_phantom"]

_MIN_PATIENTS_FOR_POOL = 24  # below this, starting worker processes costs more than it saves


def _write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array, mode="L").save(buf, format="PNG", compress_level=3)
    storage.write_bytes(path, buf.getvalue())


@lru_cache(maxsize=1)
def _writer() -> ThreadPoolExecutor:
    """Threads for PNG encoding and fsync-ed writes (both release the GIL), one pool per process."""
    return ThreadPoolExecutor(4)


def _draw_chunk(cfg: PhantomConfig, out: str, tasks: list[tuple]) -> list[tuple[list, list, list]]:
    """Draw and write the images of a few patients (runs in a worker process)."""
    results, pending = [], []
    for patient, mask_name, packed in tasks:
        rows, boxes, markers = [], [], []
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
            if cfg.has_marker:  # marker columns exist only then: a phantom without one is unchanged
                rows[-1].update(marker=int(im.marker is not None), marker_split=patient["split"])
                markers += [dict(zip(MARKER_COLUMNS, (image_id, *im.marker)))] if im.marker else []
        results.append((rows, boxes, markers))
    for f in pending:
        f.result()  # re-raises a failed write
    return results


_OWN_ENTRIES = {"images", "masks", "images.csv", "boxes.csv", "markers.csv", "phantom.json"}


def _is_complete(out: Path, cfg: PhantomConfig) -> bool:
    """True when ``out`` holds a finished phantom of this config (all listed files present)."""
    import pandas as pd

    try:
        if storage.load_json(out / "phantom.json").get("fingerprint") != cfg.fingerprint():
            return False
        table = pd.read_csv(out / "images.csv", usecols=["path", "mask_path"])
    except (OSError, ValueError, KeyError):
        return False
    tables = ("boxes.csv", "markers.csv") if cfg.has_marker else ("boxes.csv",)
    return all((out / t).exists() for t in tables) and all((out / p).exists() for p in table.to_numpy().ravel())


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
                bar.update(sum(len(rows) for rows, _, _ in chunk))
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return results, masks


def generate_phantom(out: str | Path, config: PhantomConfig | None = None, **overrides: Any) -> Path:
    """Write the phantom dataset to ``out`` (reused when it is already there with this config).

    Writes ``images/<id>.png``, ``masks/<id>.png`` (255 = lung), ``images.csv``,
    ``boxes.csv`` (x, y, w, h in pixels) and ``phantom.json`` (config, counts, provenance),
    each file atomically; ``phantom.json`` comes last and marks the dataset complete. With a
    marker (any ``marker_rate_*`` > 0) also ``markers.csv`` (the letter's x, y, w, h per
    marked image) and the ``images.csv`` columns ``marker`` (0/1) and ``marker_split`` (the
    patient split the rates were drawn for).
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

    from ..environment import resolve
    from ..environment import provenance

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
    images = pd.DataFrame([row for rows, _, _ in results for row in rows])
    boxes = pd.DataFrame([b for _, bs, _ in results for b in bs], columns=["image_id", "x", "y", "w", "h"])
    markers = pd.DataFrame([m for _, _, ms in results for m in ms], columns=list(MARKER_COLUMNS))
    keep = set(images["image_id"])
    for sub in ("images", "masks"):  # PNGs of an earlier phantom with another config
        for p in (out / sub).glob("*.png"):
            if p.stem not in keep:
                p.unlink()
    storage.save_table(out / "images.csv", images)
    storage.save_table(out / "boxes.csv", boxes)
    if cfg.has_marker:
        storage.save_table(out / "markers.csv", markers)
    else:
        (out / "markers.csv").unlink(missing_ok=True)  # of an earlier phantom with a marker
    degenerate = sorted(name.rsplit("/", 1)[-1] for name, v in masks.items() if v is None)
    storage.save_json(out / "phantom.json", {
        "generator": "pneumoloc.phantom.writer", "generator_version": GENERATOR_VERSION,
        "fingerprint": cfg.fingerprint(), "config": asdict(cfg),
        "counts": {"images": len(images), "patients": len(patients),
                   "pneumonia_images": int(images["label"].sum()),
                   "pneumonia_patients": sum(p["label"] for p in patients), "boxes": len(boxes),
                   **({"marked_images": len(markers)} if cfg.has_marker else {})},
        "lung_masks": {"in_zip": len(lung_mask_names()), "used": int(images["lung_source"].nunique()),
                       "degenerate_seen": len(degenerate), "degenerate_names": degenerate},
        "sources": {"torchxrayvision_data": str(torchxrayvision_data())},
        "seconds": round(time.time() - started, 2), "provenance": provenance(),
    })
    return out
