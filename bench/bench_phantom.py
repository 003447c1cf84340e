"""Phantom generation speed: draw-once-per-patient at half size vs redrawing every image.

Run: ``.venv/bin/python bench/bench_phantom.py [--n 200] [--size 256] [--workers 2]``

Prints images/s for
  * baseline: every image's anatomy drawn from scratch at full size (what a direct
    generator does), one process, PNGs encoded in memory;
  * new: each patient's anatomy drawn once at half size and warped per image (the
    library's :func:`pneumoloc.phantom.writer.patient_images`), same conditions;
  * end to end: :func:`pneumoloc.phantom.writer.generate_phantom` with the process pool,
    files written, and the extrapolated time for 2,000 images.
Both in-process measurements use CPU time (``time.process_time``) as well as wall time,
because this machine is shared and wall time depends on the other users.
"""
from __future__ import annotations

import argparse
import io
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from pneumoloc.phantom.anatomy import place_lungs, render_anatomy, sample_anatomy
from pneumoloc.phantom.config import PhantomConfig
from pneumoloc.phantom.drawing import choose_lung_masks, patient_images, plan_patients, render_image, unpack_mask
from pneumoloc.phantom.writer import generate_phantom


def _encode(a: np.ndarray) -> int:
    buf = io.BytesIO()
    Image.fromarray(a, mode="L").save(buf, format="PNG", compress_level=3)
    return len(buf.getvalue())


def _baseline(cfg, plan, names, masks) -> None:
    for p, name in zip(plan, names):
        anat = sample_anatomy(np.random.default_rng(p["anat_seq"]), name, cfg.lung_width)
        for seq in p["image_seqs"]:  # anatomy redrawn at full size for every image
            lungs = place_lungs(anat, unpack_mask(masks[name]), cfg.size)
            im = render_image(cfg, (render_anatomy(anat, lungs, cfg.rib_contrast), lungs), p["label"], seq)
            _encode(im.image), _encode(im.lungs.astype(np.uint8) * 255)


def _new(cfg, plan, names, masks) -> None:
    for p, name in zip(plan, names):
        for im in patient_images(cfg, p, name, masks[name]):
            _encode(im.image), _encode(im.lungs.astype(np.uint8) * 255)


def _timed(fn, *args) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - w, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="images per measurement")
    ap.add_argument("--size", type=int, default=256, help="image size in pixels")
    ap.add_argument("--workers", type=int, default=2, help="processes for the end-to-end run")
    args = ap.parse_args()
    cfg = PhantomConfig(n_images=args.n, size=args.size)
    plan = plan_patients(cfg)
    names, masks = choose_lung_masks(plan)  # decoded once, outside both timings
    base_wall, base_cpu = _timed(_baseline, cfg, plan, names, masks)
    new_wall, new_cpu = _timed(_new, cfg, plan, names, masks)
    n = args.n
    print(f"phantom {n} images at {args.size} px (one process, PNG encoded in memory)")
    for name, wall, cpu in (("baseline (redraw each image, full size)", base_wall, base_cpu),
                            ("new (draw once per patient, half size)", new_wall, new_cpu)):
        print(f"  {name:40s} {n / cpu:7.1f} img/s CPU {n / wall:7.1f} img/s wall")
    print(f"  ratio new/baseline: {base_cpu / new_cpu:.2f}x CPU, {base_wall / new_wall:.2f}x wall")
    out = Path(tempfile.mkdtemp(prefix="bench_phantom_"))
    try:
        wall = time.perf_counter()
        generate_phantom(out / "p", n_images=n, size=args.size, workers=args.workers)
        wall = time.perf_counter() - wall
    finally:
        shutil.rmtree(out, ignore_errors=True)
    print(f"  end to end generate_phantom(workers={args.workers}, files written, masks decoded): "
          f"{n / wall:.1f} img/s wall -> 2,000 images in ~{2000 / (n / wall):.0f} s")


if __name__ == "__main__":
    main()
