"""Decoding and probing of image files, against PIL / pydicom references and hand-worked values."""
from __future__ import annotations

import numpy as np
import pytest
from fixtures.images import (write_bomb_png, write_dicom, write_empty, write_html, write_jpeg, write_png,
                             write_truncated_jpeg, xray_like)
from pydicom.uid import JPEGLosslessSV1

from pneumoloc.data.images import (ImageError, MissingDecoderError, probe_image, probe_images, read_grayscale,
                                   window_to_uint8)


def _asym(h=24, w=40):
    """A non-square image with a distinct corner, to see rotations and transposes."""
    a = np.tile(np.linspace(20, 200, w, dtype=np.uint8), (h, 1))
    a[:6, :6] = 255
    return a


# ---------------------------------------------------------------- PNG / JPEG
def test_png_8bit_is_read_exactly(tmp_path):
    a = xray_like(32, 1)
    assert np.array_equal(read_grayscale(write_png(tmp_path / "a.png", a)), a)


def test_png_16bit_maps_used_range_to_0_255(tmp_path):
    a = np.linspace(1000, 5000, 32 * 32).reshape(32, 32).astype(np.uint16)
    out = read_grayscale(write_png(tmp_path / "a.png", a))
    ref = np.round((a.astype(float) - 1000) / 4000 * 255)  # hand: min-max
    assert out.dtype == np.uint8 and np.abs(out - ref).max() <= 1


def test_rgb_rgba_palette_become_luma(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    luma = rgb @ np.array([0.299, 0.587, 0.114])  # ITU-R 601-2
    assert np.abs(read_grayscale(write_png(tmp_path / "rgb.png", rgb)) - luma).max() <= 1
    rgba = np.concatenate([rgb, np.full((16, 16, 1), 128, np.uint8)], axis=2)
    assert np.abs(read_grayscale(write_png(tmp_path / "rgba.png", rgba)) - luma).max() <= 1
    gray = xray_like(16)
    pal = write_png(tmp_path / "p.png", np.stack([gray] * 3, -1), mode="P")
    from PIL import Image
    assert Image.open(pal).mode == "P"
    assert np.abs(read_grayscale(pal).astype(int) - gray).max() <= 1


@pytest.mark.parametrize("orientation,k", [(1, 0), (3, 2), (6, -1), (8, 1)])
def test_exif_orientation_applied(tmp_path, orientation, k):
    a = _asym()
    out = read_grayscale(write_jpeg(tmp_path / "a.jpeg", a, orientation=orientation, quality=100))
    ref = np.rot90(a, k)  # EXIF 6 = rotate 90 clockwise for display, 8 = counter-clockwise
    assert out.shape == ref.shape
    assert np.abs(out.astype(int) - ref).mean() < 3


# -------------------------------------------------------------------- DICOM
def test_window_formula_matches_pydicom():
    from pydicom.dataset import Dataset
    from pydicom.pixels import apply_windowing

    x = np.arange(0, 4096, dtype=np.float64)
    ds = Dataset()
    ds.WindowCenter, ds.WindowWidth, ds.BitsStored, ds.PixelRepresentation = 1500, 1000, 12, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ref = apply_windowing(x.copy(), ds) / 4095 * 255  # pydicom outputs 0..2^12-1
    assert np.abs(window_to_uint8(x, 1500, 1000) - ref).max() <= 1
    # hand-worked: centre maps to mid-grey, below/above the window clip
    assert window_to_uint8(np.array([0.0, 1500.0, 4000.0]), 1500, 1000).tolist() == [0, 128, 255]
    big = np.random.default_rng(0).integers(-1024, 3000, (128, 128)).astype(np.int16)  # lookup-table path
    assert np.array_equal(window_to_uint8(big, 40, 400), window_to_uint8(big.astype(float), 40, 400))
    assert window_to_uint8(np.array([9.0, 10.0, 11.0]), 10, 1).tolist() == [0, 255, 255]  # w=1: threshold


def test_dicom_window_and_rescale(tmp_path):
    p = (xray_like(32).astype(np.uint16) * 16)
    path = write_dicom(tmp_path / "a.dcm", p, slope=2.0, intercept=-1024.0, window=(1500, 2000))
    ref = window_to_uint8(p.astype(float) * 2 - 1024, 1500, 2000)  # modality LUT, then window
    assert np.array_equal(read_grayscale(path), ref)


def test_dicom_12bit_without_window_is_minmax(tmp_path):
    p = np.linspace(100, 4000, 32 * 32).reshape(32, 32).astype(np.uint16)
    out = read_grayscale(write_dicom(tmp_path / "a.dcm", p, bits_stored=12))
    assert out.min() == 0 and out.max() == 255
    assert np.abs(out - np.round((p - 100.0) / 3900 * 255)).max() <= 1


def test_dicom_8bit_without_window_is_kept(tmp_path):
    p = np.uint8(xray_like(32) * 0.5 + 40)  # does not span 0..255: must not be stretched
    assert np.array_equal(read_grayscale(write_dicom(tmp_path / "a.dcm", p, bits_stored=8)), p)


def test_dicom_16bit(tmp_path):
    p = (xray_like(32).astype(np.uint16) * 257)
    out = read_grayscale(write_dicom(tmp_path / "a.dcm", p, bits_stored=16))
    ref = np.round((p - float(p.min())) / (p.max() - float(p.min())) * 255)
    assert np.abs(out - ref).max() <= 1


def test_rgb_dicom_becomes_luma(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    out = read_grayscale(write_dicom(tmp_path / "rgb.dcm", rgb, bits_stored=8, photometric="RGB", samples=3))
    assert np.abs(out - rgb @ np.array([0.299, 0.587, 0.114])).max() <= 1


def test_monochrome1_is_inverted_so_lungs_are_dark(tmp_path):
    bright_lungs = xray_like(32, dark_lungs=False).astype(np.uint16) * 16
    out = read_grayscale(write_dicom(tmp_path / "m1.dcm", bright_lungs, photometric="MONOCHROME1"))
    as_m2 = read_grayscale(write_dicom(tmp_path / "m2.dcm", bright_lungs, photometric="MONOCHROME2"))
    assert np.array_equal(out, 255 - as_m2)
    yy, xx = np.mgrid[0:32, 0:32] / 32
    lung = ((xx - 0.3) / 0.15) ** 2 + ((yy - 0.5) / 0.3) ** 2 < 1
    assert out[lung].mean() < out[~lung].mean() - 50


def test_voi_lut_matches_pydicom_and_beats_window(tmp_path):
    import pydicom
    from pydicom.pixels import apply_voi_lut

    p = np.linspace(0, 4095, 32 * 32).reshape(32, 32).astype(np.uint16)
    lut = np.round(np.sqrt(np.arange(4096) / 4095) * 65535).astype(np.uint16)  # non-linear curve
    path = write_dicom(tmp_path / "voi.dcm", p, voi_lut=lut, window=(100, 10))
    ds = pydicom.dcmread(path)
    ref = apply_voi_lut(ds.pixel_array, ds, prefer_lut=True).astype(float) / 65535 * 255
    out = read_grayscale(path)
    assert np.abs(out - ref).max() <= 1
    assert out.max() == 255 and np.median(out) > 150  # sqrt curve, not the narrow window


def test_compressed_dicom_without_decoder_names_the_package(tmp_path):
    path = write_dicom(tmp_path / "jl.dcm", np.zeros((8, 8), np.uint16), transfer_syntax=JPEGLosslessSV1)
    for fn in (read_grayscale, probe_image):
        with pytest.raises(MissingDecoderError, match="pylibjpeg"):
            fn(path)


# ---------------------------------------------------------- bad files, probing
BAD = {
    "empty": lambda d: write_empty(d / "e.jpeg"),
    "html": lambda d: write_html(d / "h.jpeg"),
    "truncated jpeg": lambda d: write_truncated_jpeg(d / "t.jpeg"),
    "dicom without pixels": lambda d: write_dicom(d / "n.dcm", np.zeros((8, 8), np.uint16), with_pixels=False),
    "decompression bomb": lambda d: write_bomb_png(d / "b.png"),
    "missing": lambda d: d / "absent.png",
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_files_raise_image_error(tmp_path, kind):
    path = BAD[kind](tmp_path)
    with pytest.raises(ImageError, match=str(path.name)):
        probe_image(path)
    with pytest.raises(ImageError):
        read_grayscale(path)


def test_truncated_png_and_dicom_caught_by_probe(tmp_path):
    png = write_png(tmp_path / "a.png", xray_like(32))
    png.write_bytes(png.read_bytes()[:-20])
    dcm = write_dicom(tmp_path / "a.dcm", xray_like(32).astype(np.uint16))
    dcm.write_bytes(dcm.read_bytes()[:-100])
    for p in (png, dcm):
        with pytest.raises(ImageError, match="truncated"):
            probe_image(p)


def test_probe_size_is_width_height(tmp_path):
    assert probe_image(write_png(tmp_path / "a.png", _asym(24, 40))) == (40, 24)
    assert probe_image(write_dicom(tmp_path / "a.dcm", _asym(24, 40).astype(np.uint16))) == (40, 24)


def test_probe_images_counts_every_file(tmp_path):
    good = [write_jpeg(tmp_path / f"g{i}.jpeg", xray_like(32, i)) for i in range(4)]
    bad = [BAD[k](tmp_path) for k in ("truncated jpeg", "html", "empty")]
    paths = good[:2] + bad + good[2:]
    sizes, skipped = probe_images(paths, progress=False)
    assert sizes["ok"].tolist() == [True, True, False, False, False, True, True]
    assert len(skipped) == 3 and sizes["ok"].sum() + len(skipped) == len(paths)
    assert set(skipped["path"]) == {str(p) for p in bad}
    assert skipped["reason"].str.contains("truncated").sum() == 1


# ------------------------------------------- every decoder failure is an ImageError
def _dicom(tmp_path, name="a.dcm", frames: int = 1, **edits):
    """A 16 x 16 12-bit DICOM; ``edits`` set (value) or delete (None) header attributes."""
    import pydicom

    pix = np.concatenate([xray_like(16, k) for k in range(frames)]).astype(np.uint16) * 16
    path = write_dicom(tmp_path / name, pix)
    ds = pydicom.dcmread(path)
    if frames > 1:
        ds.Rows, ds.NumberOfFrames = 16, frames
    for k, v in edits.items():
        if v is None:
            delattr(ds, k)
        else:
            setattr(ds, k, v)
    ds.save_as(path)
    return path


@pytest.mark.parametrize("edits,reason", [
    ({"BitsAllocated": None}, "BitsAllocated"),
    ({"Rows": None}, "Rows"),
    ({"BitsAllocated": 0}, "BitsAllocated"),
    ({"NumberOfFrames": 0}, "NumberOfFrames"),
])
def test_dicom_header_defects_are_named(tmp_path, edits, reason):
    path = _dicom(tmp_path, **edits)
    for fn in (probe_image, read_grayscale):
        with pytest.raises(ImageError, match=f"{path.name}.*{reason}"):
            fn(path)


def test_multiframe_dicom_is_refused_with_the_frame_count(tmp_path):
    path = _dicom(tmp_path, frames=3)
    for fn in (probe_image, read_grayscale):
        with pytest.raises(ImageError, match=r"multi-frame DICOM \(3 frames\)"):
            fn(path)


PIL_ERRORS = [__import__("struct").error("unpack requires a buffer of 4 bytes"), IndexError("list index"),
              OSError("broken data stream"), ValueError("bad mode"), SyntaxError("not a PNG"),
              RuntimeError("decoder failed"), KeyError("exif"), ZeroDivisionError("division by zero")]


@pytest.mark.parametrize("error", PIL_ERRORS, ids=lambda e: type(e).__name__)
def test_any_pil_exception_becomes_image_error(tmp_path, monkeypatch, error):
    from PIL import Image, ImageFile

    path = write_png(tmp_path / "a.png", xray_like(16))

    def boom(*args, **kwargs):
        raise error

    monkeypatch.setattr(ImageFile.ImageFile, "load", boom)  # pixel decoding
    with pytest.raises(ImageError, match=f"a.png.*{type(error).__name__}"):
        read_grayscale(path)
    monkeypatch.setattr(Image, "open", boom)  # header parsing
    for fn in (probe_image, read_grayscale):
        with pytest.raises(ImageError, match="a.png"):
            fn(path)


def test_decompression_bomb_error_from_pil_is_an_image_error(tmp_path, monkeypatch):
    from PIL import Image

    path = write_png(tmp_path / "a.png", xray_like(16))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # 256 px > 2 x 10: PIL raises, not warns
    for fn in (probe_image, read_grayscale):
        with pytest.raises(ImageError, match="decompression bomb"):
            fn(path)


@pytest.mark.parametrize("error", [RuntimeError("pylibjpeg: corrupt stream"), IndexError("frame"),
                                   __import__("struct").error("unpack")], ids=lambda e: type(e).__name__)
def test_any_pydicom_exception_becomes_image_error(tmp_path, monkeypatch, error):
    import pydicom
    from pydicom.dataset import Dataset

    path = _dicom(tmp_path)

    def boom(*args, **kwargs):
        raise error

    monkeypatch.setattr(Dataset, "pixel_array", property(boom))
    with pytest.raises(ImageError, match=f"a.dcm.*{type(error).__name__}"):
        read_grayscale(path)
    monkeypatch.setattr(pydicom, "dcmread", boom)
    for fn in (probe_image, read_grayscale):
        with pytest.raises(ImageError, match="a.dcm"):
            fn(path)


def test_invalid_dicom_error_is_an_image_error(tmp_path):
    path = tmp_path / "x.dcm"
    path.write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 40)
    for fn in (probe_image, read_grayscale):
        with pytest.raises(ImageError, match="x.dcm"):
            fn(path)


# ---------------------------------------------------- only the formats the readers use
@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF", "WEBP"])
def test_other_formats_under_an_image_name_are_refused(tmp_path, fmt):
    from PIL import Image

    path = tmp_path / "a.png"
    Image.fromarray(xray_like(16)).save(path, format=fmt)
    for fn in (probe_image, read_grayscale):
        with pytest.raises(ImageError, match=r"a.png: not a PNG or JPEG"):
            fn(path)


# ------------------------------------- EXIF orientation: size in the decoded frame
@pytest.mark.parametrize("orientation", range(1, 9))
def test_probe_size_and_orientation_match_the_decoded_array(tmp_path, orientation):
    a = _asym(24, 40)
    path = write_jpeg(tmp_path / "a.jpeg", a, orientation=orientation, quality=100)
    h, w = read_grayscale(path).shape
    assert probe_image(path) == (w, h)
    sizes, _ = probe_images([path], progress=False)
    assert sizes.loc[0, "orientation"] == orientation
    assert (w, h) == ((24, 40) if orientation >= 5 else (40, 24))  # orientations 5-8 swap the axes


def test_exif_orientation_in_a_png_rotates_it_too(tmp_path):
    from PIL import Image

    exif = Image.Exif()
    exif[274] = 6
    path = tmp_path / "a.png"
    Image.fromarray(_asym(24, 40)).save(path, format="PNG", exif=exif.tobytes())
    assert read_grayscale(path).shape == (40, 24) and probe_image(path) == (24, 40)
    assert np.abs(read_grayscale(path).astype(int) - np.rot90(_asym(24, 40), -1)).max() == 0


def test_multi_picture_jpeg_is_a_jpeg_and_its_truncation_is_caught(tmp_path):
    from PIL import Image

    path = tmp_path / "a.jpeg"  # a camera's MPO: JPEG frames back to back (CIPA DC-007)
    Image.fromarray(_asym()).save(path, format="MPO", save_all=True, append_images=[Image.fromarray(_asym())])
    assert probe_image(path) == (40, 24) and read_grayscale(path).shape == (24, 40)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ImageError, match="truncated JPEG"):
        probe_image(path)
