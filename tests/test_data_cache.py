"""The uint8 image cache: row alignment, squashing, reuse, rebuild on change, skip-and-count."""
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pneumoloc.data.cache import cache_key, cached_images, load_cache, resize_square


def _manifest(tmp_path, n=4, w=40, h=20):
    rows = []
    for i in range(n):
        img = np.full((h, w), 30 * i, np.uint8)
        img[:, : w // 2] = 200  # left half bright: squashing must keep it on the left
        path = tmp_path / f"img{i}.png"
        Image.fromarray(img).save(path)
        rows.append({"image_id": f"i{i}", "path": str(path)})
    return pd.DataFrame(rows)


def test_rows_are_aligned_and_squashed(tmp_path):
    df = _manifest(tmp_path)
    arr = cached_images(df, 16, folder=tmp_path / "c", progress=False)
    assert arr.shape == (4, 16, 16) and arr.dtype == np.uint8
    assert isinstance(arr, np.memmap)
    for i in range(4):
        assert arr[i, :, :7].mean() == 200  # left half kept (x scales by 16/40)
        assert abs(int(arr[i, :, 9:].mean()) - 30 * i) <= 1


def test_reused_then_rebuilt_when_manifest_size_or_file_changes(tmp_path):
    df = _manifest(tmp_path)
    folder = tmp_path / "c"
    assert load_cache(df, 16, folder, progress=False).built
    assert not load_cache(df, 16, folder, progress=False).built
    assert load_cache(df, 24, folder, progress=False).built  # another size
    assert load_cache(df.iloc[::-1], 16, folder, progress=False).built  # other row order
    first = load_cache(df, 16, folder, progress=False).images[0].copy()
    Image.fromarray(np.full((20, 40), 77, np.uint8)).save(df.loc[0, "path"])
    os.utime(df.loc[0, "path"], ns=(1, 10**18))
    again = load_cache(df, 16, folder, progress=False)
    assert again.built and again.images[0].mean() == 77 and first.mean() != 77


def test_interrupted_build_is_not_used(tmp_path):
    df = _manifest(tmp_path)
    folder = tmp_path / "c"
    cache = load_cache(df, 16, folder, progress=False)
    cache.path.with_suffix(".json").unlink()  # as if the build died before its sidecar
    assert load_cache(df, 16, folder, progress=False).built


def test_unreadable_images_are_skipped_and_counted(tmp_path):
    df = _manifest(tmp_path)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    df = pd.concat([df, pd.DataFrame([{"image_id": "bad", "path": str(tmp_path / "broken.png")},
                                      {"image_id": "gone", "path": str(tmp_path / "missing.png")}])],
                   ignore_index=True)
    cache = load_cache(df, 8, tmp_path / "c", progress=False)
    assert cache.images.shape == (6, 8, 8)
    assert list(cache.failed["image_id"]) == ["bad", "gone"]
    assert cache.valid.tolist() == [True] * 4 + [False] * 2
    assert (cache.images[4:] == 0).all()
    reloaded = load_cache(df, 8, tmp_path / "c", progress=False)
    assert not reloaded.built and list(reloaded.failed["image_id"]) == ["bad", "gone"]


def test_key_depends_on_ids_and_size(tmp_path):
    df = _manifest(tmp_path, n=2)
    assert cache_key(df, 16) == cache_key(df.copy(), 16)
    assert cache_key(df, 16) != cache_key(df, 17)
    assert cache_key(df, 16) != cache_key(df.assign(image_id=["a", "b"]), 16)


def test_resize_square_matches_pil_and_passes_through_same_size():
    img = np.random.default_rng(0).integers(0, 256, (30, 50), dtype=np.uint8)
    ref = np.asarray(Image.fromarray(img).resize((10, 10), Image.BILINEAR))
    assert np.array_equal(resize_square(img, 10), ref)
    assert np.array_equal(resize_square(img[:10, :10], 10), img[:10, :10])


def test_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="path"):
        load_cache(pd.DataFrame({"image_id": ["a"]}), 8, tmp_path)
    with pytest.raises(ValueError, match="positive"):
        load_cache(_manifest(tmp_path, 1), 0, tmp_path)


def _bad_files(tmp_path):
    """A file of every kind the decoders refuse: other formats, DICOM header defects, multi-frame."""
    import pydicom
    from fixtures.images import write_dicom, xray_like

    out = {}
    Image.fromarray(xray_like(16)).save(tmp_path / "gif.png", format="GIF")
    out["gif"] = tmp_path / "gif.png"
    for name, edit in (("nobits", {"BitsAllocated": None}), ("noframes", {"NumberOfFrames": 0}),
                       ("multiframe", {"NumberOfFrames": 2, "Rows": 8})):
        path = write_dicom(tmp_path / f"{name}.dcm", xray_like(16).astype(np.uint16) * 16)
        ds = pydicom.dcmread(path)
        for k, v in edit.items():
            delattr(ds, k) if v is None else setattr(ds, k, v)
        ds.save_as(path)
        out[name] = path
    return out


def test_every_refused_file_is_a_counted_row_with_its_reason(tmp_path):
    df = _manifest(tmp_path, n=2)
    bad = _bad_files(tmp_path)
    df = pd.concat([df, pd.DataFrame({"image_id": list(bad), "path": [str(p) for p in bad.values()]})],
                   ignore_index=True)
    cache = load_cache(df, 8, tmp_path / "c", progress=False)
    assert cache.valid.sum() + len(cache.failed) == len(df)
    assert list(cache.failed["image_id"]) == list(bad)
    reasons = dict(zip(cache.failed["image_id"], cache.failed["reason"]))
    assert "not a PNG or JPEG" in reasons["gif"] and "BitsAllocated" in reasons["nobits"]
    assert "NumberOfFrames is 0" in reasons["noframes"] and "multi-frame" in reasons["multiframe"]
    assert all(str(bad[k]) in r for k, r in reasons.items())  # each reason names its file


def test_an_array_that_cannot_be_resized_is_counted_not_raised(tmp_path, monkeypatch):
    import pneumoloc.data.cache as C

    df = _manifest(tmp_path, n=3)
    real = C.read_grayscale
    monkeypatch.setattr(C, "read_grayscale",
                        lambda p: np.zeros((3, 4, 5), np.uint8) if p.endswith("img1.png") else real(p))
    cache = load_cache(df, 8, tmp_path / "c", progress=False)
    assert cache.valid.tolist() == [True, False, True]
    assert "img1.png" in cache.failed.loc[1, "reason"] and "TypeError" in cache.failed.loc[1, "reason"]


def test_missing_decoder_stops_the_build_and_leaves_no_cache(tmp_path):
    from fixtures.images import write_dicom
    from pydicom.uid import JPEGLosslessSV1

    from pneumoloc.data.images import MissingDecoderError

    df = _manifest(tmp_path, n=2)
    path = write_dicom(tmp_path / "jl.dcm", np.zeros((8, 8), np.uint16), transfer_syntax=JPEGLosslessSV1)
    df = pd.concat([df, pd.DataFrame([{"image_id": "jl", "path": str(path)}])], ignore_index=True)
    with pytest.raises(MissingDecoderError, match="pylibjpeg"):
        load_cache(df, 8, tmp_path / "c", progress=False)
    assert list((tmp_path / "c").iterdir()) == []  # not a cache with a zero row for a readable image
