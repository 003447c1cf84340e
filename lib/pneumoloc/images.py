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

A compressed DICOM transfer syntax whose decoder is not installed is not a bad
file but a missing package: :class:`MissingDecoderError` (never skipped) names the
package to install.
"""
from __future__ import annotations

import os
import re
import warnings

import numpy as np
import pandas as pd

__all__ = [
    "ImageError", "MissingDecoderError", "read_grayscale", "probe_image", "probe_images",
    "is_dicom", "window_to_uint8", "MAX_PIXELS",
]

# Larger than any radiograph (~4k x 4k) by far; PIL's own default limit (89 Mpx).
MAX_PIXELS = 89_478_485


class ImageError(ValueError):
    """An image file that cannot be decoded; the message names the file and why."""


class MissingDecoderError(RuntimeError):
    """A compressed DICOM whose decoder package is not installed (install it; not skipped)."""


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


def read_grayscale(path: str | os.PathLike) -> np.ndarray:
    """Read ``path`` as a 2-D uint8 array (lungs dark, as in a standard radiograph).

    Raises:
        ImageError: the file is missing, empty, truncated or not an image.
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
    from PIL import Image

    try:
        with warnings.catch_warnings():
            # PIL only warns between 1x and 2x its limit; a bomb is an error here.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{path}: decompression bomb ({e})") from e
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"{path}: not a readable image ({e})") from e
    if im.width * im.height > MAX_PIXELS:
        im.close()
        raise ImageError(f"{path}: decompression bomb ({im.width}x{im.height} pixels > {MAX_PIXELS})")
    return im


def _read_pil(path) -> np.ndarray:
    from PIL import ImageOps

    im = _open_pil(path)
    try:
        with im:
            if im.getexif().get(0x0112, 1) != 1:  # EXIF Orientation: phone photos of films
                im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                return _minmax_uint8(np.asarray(im).astype(np.float64))
            if im.mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            # ITU-R 601-2 luma (PIL's "L" conversion); alpha is dropped.
            return np.asarray(im if im.mode == "L" else im.convert("L"))
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"{path}: cannot decode image ({e})") from e


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


def _read_dicom(path) -> np.ndarray:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut

    try:
        ds = pydicom.dcmread(path, force=True)
    except (InvalidDicomError, OSError, ValueError, EOFError) as e:
        raise ImageError(f"{path}: not a readable DICOM ({e})") from e
    if "PixelData" not in ds:
        raise ImageError(f"{path}: DICOM without pixel data")
    _require_decoder(ds, path)
    try:
        arr = ds.pixel_array
    except (ValueError, OSError, AttributeError, KeyError, EOFError) as e:
        raise ImageError(f"{path}: cannot decode DICOM pixel data ({e})") from e
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        arr = arr[0]  # multi-frame: radiographs have one frame; take the first
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

    Cheap: no pixel decoding. Checks the file is non-empty, is an image, is not a
    decompression bomb, and (JPEG/PNG) ends with its end marker, which catches
    truncated downloads; a DICOM must hold pixel data of the announced length.
    """
    size = _check_nonempty(path)
    if is_dicom(path):
        return _probe_dicom(path, size)
    with _open_pil(path) as im:
        fmt, wh = im.format, (int(im.width), int(im.height))
    tail = _tail(path, 12)
    if fmt == "JPEG" and b"\xff\xd9" not in tail:
        raise ImageError(f"{path}: truncated JPEG (no end-of-image marker)")
    if fmt == "PNG" and b"IEND" not in tail:
        raise ImageError(f"{path}: truncated PNG (no IEND chunk)")
    return wh


def _tail(path, n: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - n))
        return f.read()


def _probe_dicom(path, file_size: int) -> tuple[int, int]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:  # defer_size: element values above 1 KB (the pixels) are not read
        ds = pydicom.dcmread(path, force=True, defer_size="1 KB")
        rows, cols = int(ds.Rows), int(ds.Columns)
    except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError, TypeError) as e:
        raise ImageError(f"{path}: not a readable DICOM ({e})") from e
    if "PixelData" not in ds:
        raise ImageError(f"{path}: DICOM without pixel data")
    if rows * cols > MAX_PIXELS:
        raise ImageError(f"{path}: decompression bomb ({cols}x{rows} pixels > {MAX_PIXELS})")
    _require_decoder(ds, path)
    raw = ds.get_item("PixelData")
    uid = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if uid is not None and not uid.is_compressed:
        need = rows * cols * int(ds.get("SamplesPerPixel", 1)) * ((int(ds.BitsAllocated) + 7) // 8)
        need *= int(ds.get("NumberOfFrames", 1) or 1)
        length = getattr(raw, "length", None) or len(getattr(raw, "value", b"") or b"")
        tell = getattr(raw, "value_tell", None)
        if length < need or (tell is not None and tell + need > file_size):
            raise ImageError(f"{path}: truncated DICOM pixel data ({length} bytes, {need} expected)")
    return cols, rows


def probe_images(paths, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Probe every path; returns ``(sizes, skipped)``.

    ``sizes`` is row-aligned with ``paths``: ``width, height, ok``; ``skipped`` holds
    ``path, reason`` of every file that failed (``ok`` False), so loaded + skipped
    always equals ``len(paths)``. :class:`MissingDecoderError` is raised, not skipped.
    """
    from tqdm.auto import tqdm

    paths = [str(p) for p in paths]
    w = np.zeros(len(paths), np.int64)
    h = np.zeros(len(paths), np.int64)
    ok = np.zeros(len(paths), bool)
    skipped = []
    for i, p in enumerate(tqdm(paths, desc="probing images", disable=not progress or len(paths) < 200)):
        try:
            w[i], h[i] = probe_image(p)
            ok[i] = True
        except ImageError as e:
            skipped.append((p, str(e).removeprefix(f"{p}: ")))
    return (pd.DataFrame({"width": w, "height": h, "ok": ok}),
            pd.DataFrame(skipped, columns=["path", "reason"]))
