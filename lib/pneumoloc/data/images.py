"""Decoding any chest X-ray file (JPEG, PNG, DICOM) into a grayscale uint8 array.

Two entry points:

* :func:`read_grayscale` decodes the pixels: 8/16-bit PNG, JPEG, grayscale / RGB /
  RGBA / palette, EXIF orientation applied; DICOM through pydicom with the modality
  LUT (rescale slope/intercept), then the VOI LUT or window centre/width, then
  ``MONOCHROME1`` inverted so lungs are always dark (DICOM PS3.3 C.7.6.3.1.2,
  C.11.1, C.11.2). Images with more than 8 bits and no window are mapped min-max to
  0..255 (the whole recorded range, as a viewer with no preset shows it).
* :func:`probe_image` reads only the header (and the last bytes of the file) to get
  the size and catch the files a dataset copy typically contains by accident: empty
  files, HTML pages saved as ``.jpeg``, truncated downloads, DICOMs without pixel
  data, decompression bombs. Readers probe every listed image and skip-and-count
  the failures (:func:`probe_images`) instead of crashing hours later in training.

Both raise :class:`ImageError` (naming the file and the reason) for *any* failure of
the decoders, whatever they raise (Pillow's ``struct.error``, ``IndexError``,
``DecompressionBombError``, pydicom's ``InvalidDicomError``, a pixel handler's
``RuntimeError``, ...), so a reader or the cache can always skip and count a bad
file. Three rules keep the probe and the decoder in agreement:

* Only PNG and JPEG (every reader's non-DICOM format) are opened: ``Image.open`` is
  given ``formats=ACCEPTED_FORMATS``, so a GIF/TIFF/BMP/WebP saved as ``.png`` is
  refused instead of being decoded by a parser nobody tested on radiographs.
* EXIF orientation (tag 274; JPEG APP1 or a PNG ``eXIf`` chunk before the pixels) is
  read at open time by both: the decoder transposes the pixels and the probe reports
  the transposed width and height (orientations 5-8 swap them; Exif 2.32, tag 274
  Orientation). The readers refuse such an image when it has boxes
  (:func:`pneumoloc.data.readers.base.finish`), because a box table does not say whether
  its boxes were drawn on the stored or the displayed pixels.
* A DICOM must have one frame: a multi-frame object (tomosynthesis, cine, a stack
  of captures) is refused with its frame count, since no single frame is *the*
  radiograph and picking the first would silently train on an arbitrary one.
  ``NumberOfFrames`` 0, missing ``Rows``/``Columns``/``BitsAllocated`` or a
  ``BitsAllocated`` other than 8/16/32 are refused with the attribute named.

A compressed DICOM transfer syntax whose decoder is not installed is not a bad
file but a missing package: :class:`MissingDecoderError` (never skipped) names the
package to install.
"""
from __future__ import annotations

import functools
import os
import re
import warnings
from typing import Callable, TypeVar

import numpy as np
import pandas as pd

__all__ = [
    "ImageError", "MissingDecoderError", "read_grayscale", "probe_image", "probe_images",
    "is_dicom", "window_to_uint8", "MAX_PIXELS", "ACCEPTED_FORMATS",
]

# Larger than any radiograph (~4k x 4k) by far; PIL's own default limit (89 Mpx).
MAX_PIXELS = 89_478_485
# The Pillow formats any reader needs (Kermany/CheXpert/MIMIC-JPG: JPEG; NIH, phantom: PNG).
ACCEPTED_FORMATS = ("PNG", "JPEG")
# Exif Orientation (tag 274) -> the PIL transpose that displays the image upright (as ImageOps.exif_transpose).
_EXIF_TRANSPOSE = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE",
                   6: "ROTATE_270", 7: "TRANSVERSE", 8: "ROTATE_90"}
# BitsAllocated of a radiograph (PS3.3 C.7.6.3.1.1 allows 1 or a multiple of 8; 1-bit data are masks).
_BITS_ALLOCATED = (8, 16, 32)
_T = TypeVar("_T")


class ImageError(ValueError):
    """An image file that cannot be decoded; the message names the file and why."""


class MissingDecoderError(RuntimeError):
    """A compressed DICOM whose decoder package is not installed (install it; not skipped)."""


def _total(fn: Callable[..., _T]) -> Callable[..., _T]:
    """Turn any exception of ``fn(path)`` into :class:`ImageError` naming the file.

    Decoders fail on corrupt input in many ways (``struct.error``, ``IndexError``,
    ``RuntimeError`` from a pixel handler, ``MemoryError`` for an absurd header, ...);
    none of them may stop a dataset read. :class:`MissingDecoderError` passes through.
    """
    @functools.wraps(fn)
    def wrapped(path, *args, **kwargs):
        try:
            return fn(path, *args, **kwargs)
        except (ImageError, MissingDecoderError):
            raise
        except Exception as e:  # noqa: BLE001 - every decoder failure is a bad file
            raise ImageError(f"{path}: cannot decode ({type(e).__name__}: {e})") from e
    return wrapped


def is_dicom(path: str | os.PathLike) -> bool:
    """True for ``.dcm``/``.dicom`` files or files with the ``DICM`` preamble marker."""
    if str(path).lower().endswith((".dcm", ".dicom")):
        return True
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


@_total
def read_grayscale(path: str | os.PathLike) -> np.ndarray:
    """Read ``path`` as a 2-D uint8 array (lungs dark, as in a standard radiograph).

    Raises:
        ImageError: the file is missing, empty, truncated, not a PNG/JPEG/DICOM, or the
            decoder failed in any way (the message names the file and the reason).
        MissingDecoderError: a compressed DICOM needs a package that is not installed.
    """
    _check_nonempty(path)
    return _read_dicom(path) if is_dicom(path) else _read_pil(path)


# --------------------------------------------------------------------------- PIL
def _check_nonempty(path: str | os.PathLike) -> int:
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise ImageError(f"{path}: missing file ({e.strerror})") from e
    if size == 0:
        raise ImageError(f"{path}: empty file (0 bytes)")
    return size


def _open_pil(path):
    """Open ``path`` as PNG or JPEG (header only), refusing bombs and other formats."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # PIL only warns between 1x and 2x its limit; a bomb is an error here.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path, formats=ACCEPTED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{path}: decompression bomb ({e})") from e
    except UnidentifiedImageError as e:
        raise ImageError(f"{path}: not a PNG or JPEG image (the formats the readers accept; "
                         f"convert the file or remove it from the listing)") from e
    except Exception as e:  # noqa: BLE001 - a header parser's struct.error, IndexError, ...
        raise ImageError(f"{path}: not a readable image ({type(e).__name__}: {e})") from e
    if im.width * im.height > MAX_PIXELS:
        im.close()
        raise ImageError(f"{path}: decompression bomb ({im.width}x{im.height} pixels > {MAX_PIXELS})")
    return im


def _orientation(im) -> int:
    """EXIF Orientation 1..8 from the header read at open time (1 when absent or invalid).

    Only ``im.info["exif"]`` is consulted (JPEG APP1, PNG ``eXIf`` before the pixels), so the
    probe and the decoder agree without decoding; a PNG ``eXIf`` after the pixels is ignored.
    """
    from PIL import Image

    raw = im.info.get("exif")
    if not raw:
        return 1
    value = Image.Exif()
    value.load(raw)
    o = value.get(0x0112, 1)
    return int(o) if o in _EXIF_TRANSPOSE else 1


def _upright(im, orientation: int):
    """``im`` transposed as its EXIF orientation says (phone photos of films)."""
    from PIL import Image

    if orientation == 1:
        return im
    return im.transpose(getattr(Image.Transpose, _EXIF_TRANSPOSE[orientation]))


def _read_pil(path) -> np.ndarray:
    im = _open_pil(path)
    with im:
        im = _upright(im, _orientation(im))  # a decoder error here is made an ImageError by _total
        if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            return _minmax_uint8(np.asarray(im).astype(np.float64))
        if im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        # ITU-R 601-2 luma (PIL's "L" conversion); alpha is dropped.
        return np.asarray(im if im.mode == "L" else im.convert("L"))


def _minmax_uint8(x: np.ndarray) -> np.ndarray:
    """Map the used range of ``x`` linearly onto 0..255 (constant image -> 0)."""
    lo, hi = float(np.min(x)), float(np.max(x))
    if hi <= lo:
        return np.zeros(x.shape, np.uint8)
    return np.round((x - lo) * (255.0 / (hi - lo))).astype(np.uint8)


# ------------------------------------------------------------------------- DICOM
def window_to_uint8(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """Linear VOI window of DICOM PS3.3 C.11.2.1.2.1, output range 0..255.

    ``y = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255`` clipped to 0..255 (the standard's
    three cases: 0 below the window, 255 above, linear inside); ``w <= 1`` is a threshold.
    Integer images go through a lookup table over their value range (one pass, no floats).
    """
    c, w = float(center), float(width)
    if np.issubdtype(x.dtype, np.integer) and x.size > 4096:
        lo, hi = int(x.min()), int(x.max())
        if hi - lo < 1 << 20:
            return _window(np.arange(lo, hi + 1, dtype=np.float64), c, w)[x - lo]
    return _window(np.asarray(x, dtype=np.float64), c, w)


def _window(x: np.ndarray, c: float, w: float) -> np.ndarray:
    if w <= 1:
        return np.where(x > c - 0.5, 255, 0).astype(np.uint8)
    y = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255.0
    return np.rint(np.clip(y, 0, 255, out=y)).astype(np.uint8)


def _first(value) -> float:
    """Window centre/width may be multi-valued (several presets): use the first."""
    try:
        return float(value[0])
    except TypeError:
        return float(value)


def _require_decoder(ds, path) -> None:
    from pydicom.pixels import get_decoder

    uid = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if uid is None or not uid.is_compressed:
        return
    try:
        decoder = get_decoder(uid)
    except NotImplementedError as e:
        raise MissingDecoderError(f"{path}: no pixel decoder exists for transfer syntax {uid.name}") from e
    if not decoder.is_available:
        missing = decoder.missing_dependencies
        pkgs = sorted({p for m in missing for p in re.findall(r"([A-Za-z][\w.-]*)>=", m)} - {"gdcm"})
        raise MissingDecoderError(
            f"{path}: transfer syntax {uid.name} ({uid}) needs a decoder that is not installed; "
            f"install one of: {'; '.join(missing)} (e.g. `pip install {' '.join(pkgs)}`, "
            "or `pip install python-gdcm`)")


def _dicom_frame_size(ds, path) -> tuple[int, int]:
    """``(rows, cols)`` of a single-frame DICOM with pixel data, refusing what cannot be a
    radiograph (reasons name the attribute); checks the decoder package is installed."""
    if "PixelData" not in ds:
        raise ImageError(f"{path}: DICOM without pixel data")
    missing = [k for k in ("Rows", "Columns", "BitsAllocated") if ds.get(k) in (None, "")]
    if missing:
        raise ImageError(f"{path}: DICOM header lacks {', '.join(missing)} (PS3.3 C.7.6.3, required)")
    rows, cols, bits = int(ds.Rows), int(ds.Columns), int(ds.BitsAllocated)
    if bits not in _BITS_ALLOCATED:
        raise ImageError(f"{path}: DICOM BitsAllocated {bits} is not one of {list(_BITS_ALLOCATED)}")
    if rows <= 0 or cols <= 0:
        raise ImageError(f"{path}: DICOM image of {cols}x{rows} pixels (Columns x Rows) is empty")
    frames = ds.get("NumberOfFrames")
    frames = 1 if frames in (None, "") else int(frames)
    if frames == 0:
        raise ImageError(f"{path}: DICOM NumberOfFrames is 0 (no image)")
    if frames > 1:
        raise ImageError(f"{path}: multi-frame DICOM ({frames} frames); a radiograph has one frame "
                         "and no frame of several is the radiograph: export the one to use")
    if rows * cols > MAX_PIXELS:
        raise ImageError(f"{path}: decompression bomb ({cols}x{rows} pixels > {MAX_PIXELS})")
    _require_decoder(ds, path)
    return rows, cols


def _dcmread(path, **kwargs):
    import pydicom

    try:
        return pydicom.dcmread(path, force=True, **kwargs)
    except Exception as e:  # noqa: BLE001 - InvalidDicomError, EOFError, struct.error, ...
        raise ImageError(f"{path}: not a readable DICOM ({type(e).__name__}: {e})") from e


def _read_dicom(path) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut

    ds = _dcmread(path)
    _dicom_frame_size(ds, path)
    try:
        arr = ds.pixel_array
    except Exception as e:  # noqa: BLE001 - pixel handlers raise ValueError, RuntimeError, ...
        raise ImageError(f"{path}: cannot decode DICOM pixel data ({type(e).__name__}: {e})") from e
    if arr.ndim == 3:  # RGB secondary capture (pydicom converts YBR to RGB)
        arr = arr[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        return _minmax_uint8(arr) if arr.max() > 255 else np.round(arr).astype(np.uint8)
    x = apply_modality_lut(arr, ds)  # stays integer when there is no rescale
    out = _apply_voi(x, ds)
    if str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        out = 255 - out  # MONOCHROME1: high values are dark; invert so lungs are dark
    return out


def _apply_voi(x: np.ndarray, ds) -> np.ndarray:
    """VOI LUT sequence first (C.11.2: it takes precedence in viewers), else window, else
    8-bit values as stored, else min-max."""
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence):
        item = ds.VOILUTSequence[0]
        n, first, bits = (int(v) for v in item.LUTDescriptor)
        n = n or 65536  # PS3.3 C.11.2.1.1: 0 entries means 2^16
        lut = _lut_values(item)[:n]
        idx = np.clip(np.round(x) - first, 0, len(lut) - 1).astype(np.int64)
        top = float(2 ** bits - 1)
        return np.round(lut[idx] * (255.0 / top)).astype(np.uint8)
    if "WindowCenter" in ds and "WindowWidth" in ds:
        return window_to_uint8(x, _first(ds.WindowCenter), _first(ds.WindowWidth))
    if int(ds.get("BitsStored", 16)) <= 8 and x.min() >= 0 and x.max() <= 255:
        return np.round(x).astype(np.uint8)  # 8-bit (e.g. RSNA): already display values
    return _minmax_uint8(x)


def _lut_values(item) -> np.ndarray:
    raw = item.LUTData  # US or OW: always 16-bit words, whatever the entry bit depth
    if isinstance(raw, (bytes, bytearray)):
        return np.frombuffer(raw, dtype="<u2").astype(np.float64)
    return np.asarray(raw, dtype=np.float64).ravel()


# ------------------------------------------------------------------------ probing
def probe_image(path: str | os.PathLike) -> tuple[int, int]:
    """Return ``(width, height)`` from the header, raising :class:`ImageError` for a bad file.

    Cheap: no pixel decoding. Checks the file is non-empty, is a PNG, JPEG or DICOM, is
    not a decompression bomb, and (JPEG/PNG) ends with its end marker, which catches
    truncated downloads; a DICOM must have one frame and hold pixel data of the announced
    length. The size is that of the array :func:`read_grayscale` returns (after the EXIF
    orientation).
    """
    return _probe(path)[:2]


@_total
def _probe(path) -> tuple[int, int, int]:
    """``(width, height, exif_orientation)``; orientation 1 for DICOMs and upright files."""
    size = _check_nonempty(path)
    if is_dicom(path):
        return (*_probe_dicom(path, size), 1)
    with _open_pil(path) as im:
        fmt, (w, h), orientation = im.format, im.size, _orientation(im)
    tail = _tail(path, 12)
    if fmt in ("JPEG", "MPO") and b"\xff\xd9" not in tail:  # MPO: multi-picture JPEG
        raise ImageError(f"{path}: truncated JPEG (no end-of-image marker)")
    if fmt == "PNG" and b"IEND" not in tail:
        raise ImageError(f"{path}: truncated PNG (no IEND chunk)")
    return (h, w, orientation) if orientation >= 5 else (w, h, orientation)  # 5-8 swap the axes


def _tail(path, n: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - n))
        return f.read()


def _probe_dicom(path, file_size: int) -> tuple[int, int]:
    ds = _dcmread(path, defer_size="1 KB")  # values above 1 KB (the pixels) are not read
    rows, cols = _dicom_frame_size(ds, path)
    raw = ds.get_item("PixelData")
    uid = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if uid is not None and not uid.is_compressed:
        need = rows * cols * int(ds.get("SamplesPerPixel", 1)) * (int(ds.BitsAllocated) // 8)
        length = getattr(raw, "length", None) or len(getattr(raw, "value", b"") or b"")
        tell = getattr(raw, "value_tell", None)
        if length < need or (tell is not None and tell + need > file_size):
            raise ImageError(f"{path}: truncated DICOM pixel data ({length} bytes, {need} expected)")
    return cols, rows


def probe_images(paths, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Probe every path; returns ``(sizes, skipped)``.

    ``sizes`` is row-aligned with ``paths``: ``width, height, orientation, ok`` (width and
    height of the decoded array; ``orientation`` the EXIF Orientation 1..8, 1 = upright);
    ``skipped`` holds ``path, reason`` of every file that failed (``ok`` False), so loaded
    + skipped always equals ``len(paths)``. :class:`MissingDecoderError` is raised, not skipped.
    """
    from tqdm.auto import tqdm

    paths = [str(p) for p in paths]
    whs = np.zeros((len(paths), 3), np.int64)
    ok = np.zeros(len(paths), bool)
    skipped = []
    for i, p in enumerate(tqdm(paths, desc="probing images", disable=not progress or len(paths) < 200)):
        try:
            whs[i] = _probe(p)
            ok[i] = True
        except ImageError as e:
            skipped.append((p, str(e).removeprefix(f"{p}: ")))
    return (pd.DataFrame({"width": whs[:, 0], "height": whs[:, 1], "orientation": whs[:, 2], "ok": ok}),
            pd.DataFrame(skipped, columns=["path", "reason"]))
