"""Probing images (header + end marker) vs decoding them fully: images/s side by side.

Readers probe every listed image to skip-and-count bad files; this shows why that is
affordable on a 100k-image dataset while a full decode is not.
Run: .venv/bin/python bench/bench_probe.py
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fixtures.images import write_dicom, write_jpeg, xray_like  # noqa: E402

from pneumoloc.data.images import probe_image, read_grayscale  # noqa: E402


def _rate(fn, paths, repeat: int = 2) -> float:
    t = time.perf_counter()
    for _ in range(repeat):
        for p in paths:
            fn(p)
    return repeat * len(paths) / (time.perf_counter() - t)


def main(n: int = 40, size: int = 1024) -> None:
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        base = np.kron(xray_like(64), np.ones((size // 64, size // 64), np.uint8))
        jpegs = [write_jpeg(d / f"{i}.jpeg", np.roll(base, i, axis=1)) for i in range(n)]
        dcms = [write_dicom(d / f"{i}.dcm", np.roll(base, i, axis=1).astype(np.uint16) * 16, bits_stored=12,
                            window=(2048, 4096)) for i in range(n)]
        for kind, paths in (("JPEG", jpegs), (f"DICOM 12-bit", dcms)):
            probe, decode = _rate(probe_image, paths), _rate(read_grayscale, paths)
            print(f"{kind} {size}x{size}: probe {probe:8.0f} images/s | full decode {decode:7.0f} images/s "
                  f"| ratio {probe / decode:5.1f}x")


if __name__ == "__main__":
    main()
