"""Perceptual hashes (hand-worked cases) and exact pair search (against brute force)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fixtures.images import write_html, write_jpeg, write_png

from pneumoloc.data.near_duplicates import dhash, hamming, hash_array, near_duplicate_pairs, phash, scan, summarize


def _distinct(n, size=48, seed=0):
    """Smooth random pictures, far apart in hash space."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = gaussian_filter(rng.normal(size=(size, size)), 4)
        out.append(np.uint8(255 * (x - x.min()) / (x.max() - x.min())))
    return out


def test_dhash_hand_cases():
    up = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (64, 1))  # brighter to the right
    assert dhash(up) == np.uint64(2**64 - 1) and dhash(up[:, ::-1]) == np.uint64(0)
    assert hamming(dhash(up), dhash(up[:, ::-1])) == 64
    assert hamming(np.uint64(0b1011), np.uint64(0b0001)) == 2


def test_phash_is_robust_to_recompression_and_not_to_content():
    imgs = _distinct(8)
    a = imgs[0]
    import io

    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=50)
    recompressed = np.asarray(Image.open(buf))
    resized = np.asarray(Image.fromarray(a).resize((40, 40)))
    for variant in (recompressed, resized, np.uint8(a * 0.9 + 10)):
        assert hamming(phash(a), phash(variant)) <= 2
    others = [hamming(phash(a), phash(b)) for b in imgs[1:]]
    assert min(others) > 10
    assert hamming(phash(a), phash(a[:, ::-1])) > 10  # a mirrored film is not a duplicate


@pytest.mark.parametrize("max_distance", [0, 2, 4, 7])
def test_pair_search_equals_brute_force(max_distance):
    rng = np.random.default_rng(max_distance)
    base = rng.integers(0, 2**63, 300, dtype=np.int64).astype(np.uint64) * np.uint64(2) + np.uint64(1)
    planted = []
    for k in range(40):  # copies at distance 0..8 of random members
        src = base[rng.integers(0, len(base))]
        flips = rng.choice(64, size=k % 9, replace=False)
        planted.append(src ^ np.uint64(sum(1 << int(f) for f in flips)))
    h = np.concatenate([base, np.array(planted, np.uint64)])
    d = hamming(h[:, None], h[None, :])
    i, j = np.nonzero(np.triu(d <= max_distance, 1))
    got = near_duplicate_pairs(h, max_distance)
    assert set(zip(got["i"], got["j"])) == set(zip(i.tolist(), j.tolist()))
    assert (got["distance"].to_numpy() == d[got["i"], got["j"]]).all()
    assert len(got) >= 1


def test_scan_lists_pairs_crossing_the_split(tmp_path):
    imgs = _distinct(6)
    rows = []
    for k, im in enumerate(imgs):
        rows.append((f"img{k}", f"p{k}", str(write_png(tmp_path / f"{k}.png", im)), "train" if k < 4 else "test"))
    rows.append(("copy0", "p9", str(write_jpeg(tmp_path / "c0.jpeg", imgs[0], quality=70)), "test"))
    rows.append(("again1", "p1", str(write_png(tmp_path / "a1.png", imgs[1])), "train"))
    rows.append(("broken", "p8", str(write_html(tmp_path / "x.jpeg")), "val"))
    images = pd.DataFrame(rows, columns=["image_id", "patient_id", "path", "split"])
    pairs = scan(images, progress=False)
    got = {(a, b): (c, s) for a, b, c, s in pairs[["image_id_a", "image_id_b", "crosses_split", "same_patient"]].itertuples(index=False)}
    assert got == {("img0", "copy0"): (True, False), ("img1", "again1"): (False, True)}
    table = summarize(pairs)
    assert table.loc["across splits", "different patients"] == 1
    assert table.loc["within a split", "same patient"] == 1 and table.to_numpy().sum() == 2
    stack = np.stack([im for im in imgs])
    assert (hash_array(stack) == np.array([phash(im) for im in imgs], np.uint64)).all()
