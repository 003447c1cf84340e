"""Fuzzing: corrupted JPEG, 16-bit PNG and DICOM files never raise, they load or are skipped.

Each example corrupts one real-layout file (a Kermany/CheXpert-like JPEG, a 16-bit PNG, a
MIMIC-like 12-bit windowed DICOM: truncation, byte flips, header field edits, zero length)
and lists it between two good files of the same kind. Probing (the readers) and cache
building must both account for every listed file: loaded + skipped == listed, each skip
with a reason that names the file.
"""
from __future__ import annotations

import struct
import tempfile
import warnings
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fixtures.images import write_dicom, write_jpeg, write_png, xray_like
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pneumoloc.data.cache import load_cache
from pneumoloc.data.images import probe_images

pytestmark = pytest.mark.slow

SIZE = 32
# DICOM header attributes a corruption may set (value) or delete (None); US range 0..65535.
DICOM_FIELDS = ("Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "SamplesPerPixel",
                "PixelRepresentation", "NumberOfFrames", "PlanarConfiguration")
PNG_FIELDS = ("width", "height", "bit_depth", "color_type")
JPEG_FIELDS = ("precision", "height", "width", "components")


@lru_cache(maxsize=None)
def good_bytes(kind: str) -> bytes:
    """The uncorrupted file of ``kind`` (``jpeg``, ``png16``, ``dcm``)."""
    with tempfile.TemporaryDirectory() as d:
        arr = xray_like(SIZE, seed=3)
        if kind == "jpeg":
            path = write_jpeg(Path(d) / "a.jpeg", arr, quality=90)
        elif kind == "png16":
            path = write_png(Path(d) / "a.png", arr.astype(np.uint16) * 257)
        else:
            path = write_dicom(Path(d) / "a.dcm", arr.astype(np.uint16) * 16, bits_stored=12,
                               window=(2048, 4096), PatientID="p1", ViewPosition="PA")
        return path.read_bytes()


def _png_header(data: bytes, field: str, value: int) -> bytes:
    """Rewrite one IHDR field and its CRC (so the edit passes PNG's checksum)."""
    out = bytearray(data)
    offset, fmt = {"width": (16, ">I"), "height": (20, ">I"), "bit_depth": (24, ">B"),
                   "color_type": (25, ">B")}[field]
    out[offset:offset + struct.calcsize(fmt)] = struct.pack(fmt, value % (256 if fmt == ">B" else 2**32))
    out[29:33] = struct.pack(">I", zlib.crc32(bytes(out[12:29])) & 0xFFFFFFFF)
    return bytes(out)


def _jpeg_header(data: bytes, field: str, value: int) -> bytes:
    """Rewrite one field of the SOF0 frame header (ITU-T T.81 B.2.2)."""
    out = bytearray(data)
    sof = out.index(b"\xff\xc0")
    offset, fmt = {"precision": (4, ">B"), "height": (5, ">H"), "width": (7, ">H"),
                   "components": (9, ">B")}[field]
    value %= 256 if fmt == ">B" else 65536
    out[sof + offset:sof + offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
    return bytes(out)


def _dicom_header(data: bytes, field: str, value: int | None, path: Path) -> bytes:
    import pydicom

    path.write_bytes(data)
    ds = pydicom.dcmread(path)
    if value is None:
        if field in ds:
            delattr(ds, field)
    else:
        setattr(ds, field, value)
    ds.save_as(path)
    return path.read_bytes()


def corrupt(kind: str, how: tuple, scratch: Path) -> bytes:
    """Apply one corruption ``how`` to the good file of ``kind``."""
    data = good_bytes(kind)
    op = how[0]
    if op == "empty":
        return b""
    if op == "truncate":
        return data[: how[1] % len(data)]
    if op == "flip":
        out = bytearray(data)
        for pos, mask in how[1]:
            out[pos % len(out)] ^= mask
        return bytes(out)
    _, field_index, value = how
    if kind == "png16":
        return _png_header(data, PNG_FIELDS[field_index % len(PNG_FIELDS)], value or 0)
    if kind == "jpeg":
        return _jpeg_header(data, JPEG_FIELDS[field_index % len(JPEG_FIELDS)], value or 0)
    return _dicom_header(data, DICOM_FIELDS[field_index % len(DICOM_FIELDS)], value, scratch)


CORRUPTIONS = st.one_of(
    st.just(("empty",)),
    st.tuples(st.just("truncate"), st.integers(0, 2**20)),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.integers(0, 2**20), st.integers(1, 255)), min_size=1,
                                        max_size=8)),
    st.tuples(st.just("header"), st.integers(0, 8),
              st.one_of(st.none(), st.integers(0, 4), st.integers(0, 65535))),
)
SUFFIX = {"jpeg": ".jpeg", "png16": ".png", "dcm": ".dcm"}


def _check_accounts_for_every_file(kind: str, how: tuple) -> None:
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        paths = [d / f"{name}{SUFFIX[kind]}" for name in ("good0", "bad", "good1")]
        for p in paths:
            p.write_bytes(good_bytes(kind))
        paths[1].write_bytes(corrupt(kind, how, d / "scratch.dcm"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom and PIL warn about what they repair
            sizes, skipped = probe_images(paths, progress=False)
            df = pd.DataFrame({"image_id": ["g0", "bad", "g1"], "path": [str(p) for p in paths]})
            cache = load_cache(df, 16, d / "cache", workers=1, progress=False)
        assert sizes["ok"].tolist()[::2] == [True, True]  # the good neighbours are unaffected
        assert int(sizes["ok"].sum()) + len(skipped) == len(paths)
        assert skipped["path"].tolist() == ([] if sizes.loc[1, "ok"] else [str(paths[1])])
        assert (skipped["reason"].str.len() > 0).all()
        assert cache.valid.tolist()[::2] == [True, True]
        assert int(cache.valid.sum()) + len(cache.failed) == len(paths)
        assert all(str(paths[1]) in r for r in cache.failed["reason"])  # the reason names the file
        assert cache.images.shape == (3, 16, 16)


# 3 x 167 = 501 corrupted files; derandomized so every run tries the same ones.
@pytest.mark.parametrize("kind", ["jpeg", "png16", "dcm"])
@settings(max_examples=167, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(how=CORRUPTIONS)
def test_corrupted_file_loads_or_is_skipped_with_a_reason(kind, how):
    _check_accounts_for_every_file(kind, how)


@pytest.mark.parametrize("kind", ["jpeg", "png16", "dcm"])
def test_the_uncorrupted_files_load(kind):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"a{SUFFIX[kind]}"
        path.write_bytes(good_bytes(kind))
        sizes, skipped = probe_images([path], progress=False)
        assert sizes["ok"].all() and skipped.empty and sizes.loc[0, "width"] == SIZE
