"""Near-duplicate images by perceptual hash, within and across splits.

A patient-wise split only prevents leakage when patient ids are right. Public chest
X-ray sets contain the same radiograph under two ids, re-exported copies and
follow-ups that look identical; when such a pair straddles train and test, the
test score is partly memory. This module hashes every image (64-bit DCT hash,
Zauner 2010, as in the ``imagehash`` package; or the difference hash of Krawetz
2013), finds all pairs within a Hamming distance, and lists the pairs that cross
the split.

Pair search is exact, not approximate: by the pigeonhole principle two 64-bit
hashes within distance ``d`` agree exactly on at least one of ``d + 1`` disjoint
bit chunks (multi-index hashing, Norouzi et al., CVPR 2012), so only images that
share a chunk value are compared.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

__all__ = ["phash", "dhash", "HASHES", "hamming", "hash_images", "hash_array", "near_duplicate_pairs",
           "scan", "summarize"]


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    return np.asarray(im.resize((width, height), Image.Resampling.LANCZOS), dtype=np.float64)


def _pack(bits: np.ndarray) -> np.uint64:
    return np.frombuffer(np.packbits(bits.ravel().astype(np.uint8)).tobytes(), dtype=">u8")[0].astype(np.uint64)


def phash(image: np.ndarray, hash_size: int = 8, highfreq_factor: int = 4) -> np.uint64:
    """DCT hash: resize to 32x32, 2-D DCT-II, top-left 8x8 coefficients above their median."""
    from scipy.fft import dctn

    n = hash_size * highfreq_factor
    low = dctn(_resize(image, n, n), type=2)[:hash_size, :hash_size]
    return _pack(low > np.median(low))


def dhash(image: np.ndarray, hash_size: int = 8) -> np.uint64:
    """Difference hash: resize to 9x8, bit = pixel brighter than its left neighbour."""
    small = _resize(image, hash_size + 1, hash_size)
    return _pack(small[:, 1:] > small[:, :-1])


HASHES = {"phash": phash, "dhash": dhash}


def hamming(a, b) -> np.ndarray:
    """Bitwise Hamming distance of uint64 hashes (broadcasting)."""
    return np.bitwise_count(np.bitwise_xor(np.asarray(a, np.uint64), np.asarray(b, np.uint64))).astype(int)


def hash_array(images: np.ndarray, method: str = "phash") -> np.ndarray:
    """Hashes of a uint8 stack ``[N, H, W]`` (e.g. the image cache)."""
    fn = _method(method)
    return np.array([fn(im) for im in images], dtype=np.uint64)


def hash_images(paths: Iterable[str], method: str = "phash", progress: bool = True) -> tuple[np.ndarray, pd.DataFrame]:
    """Hash image files; returns ``(hashes, skipped)`` with unreadable files skipped and listed.

    ``hashes`` is row-aligned with ``paths``; rows of skipped files hold 0 and must be
    masked by the caller (``scan`` does).
    """
    from tqdm.auto import tqdm

    from .images import ImageError, read_grayscale

    fn = _method(method)
    paths = [str(p) for p in paths]
    out = np.zeros(len(paths), np.uint64)
    skipped = []
    for i, p in enumerate(tqdm(paths, desc=f"{method} hashes", disable=not progress or len(paths) < 200)):
        try:
            out[i] = fn(read_grayscale(p))
        except ImageError as e:
            skipped.append((p, str(e)))
    return out, pd.DataFrame(skipped, columns=["path", "reason"])


def _method(method: str):
    if method not in HASHES:
        raise KeyError(f"unknown hash {method!r}; known: {', '.join(HASHES)}")
    return HASHES[method]


def near_duplicate_pairs(hashes: np.ndarray, max_distance: int = 4) -> pd.DataFrame:
    """All pairs ``i < j`` with Hamming distance <= ``max_distance`` (exact; see module doc).

    Returns columns ``i, j, distance`` sorted by distance then index.
    """
    h = np.asarray(hashes, np.uint64)
    if not 0 <= max_distance < 64:
        raise ValueError(f"max_distance must be in 0..63, got {max_distance}")
    bounds = np.linspace(0, 64, max_distance + 2).astype(int)
    codes = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        key = (h >> np.uint64(lo)) & np.uint64((1 << (hi - lo)) - 1)
        order = np.argsort(key, kind="stable")
        sk = key[order]
        starts = np.flatnonzero(np.r_[True, sk[1:] != sk[:-1]])
        ends = np.r_[starts[1:], len(sk)]
        for s, e in zip(starts, ends):
            if e - s > 1:
                idx = np.sort(order[s:e])
                a, b = np.triu_indices(e - s, 1)
                codes.append(idx[a].astype(np.int64) * len(h) + idx[b])
    if not codes:
        return pd.DataFrame({"i": [], "j": [], "distance": []}, dtype=int)
    code = np.unique(np.concatenate(codes))
    i, j = code // len(h), code % len(h)
    d = hamming(h[i], h[j])
    keep = d <= max_distance
    out = pd.DataFrame({"i": i[keep], "j": j[keep], "distance": d[keep]})
    return out.sort_values(["distance", "i", "j"]).reset_index(drop=True)


def scan(images: pd.DataFrame, hashes: np.ndarray | None = None, max_distance: int = 4,
         method: str = "phash", progress: bool = True) -> pd.DataFrame:
    """Near-duplicate pairs of ``images`` annotated with patients and splits.

    Args:
        images: ``image_id, patient_id, path`` and optionally ``split``.
        hashes: precomputed, row-aligned (e.g. :func:`hash_array` on the cache);
            computed from ``path`` when None (unreadable files are left out).
        max_distance: Hamming distance threshold (of 64 bits).
        method: ``"phash"`` or ``"dhash"``.

    Returns:
        One row per pair: ``image_id_a/b, patient_id_a/b, split_a/b, distance,
        same_patient, crosses_split`` (different splits: a possible hidden leak).
    """
    images = images.reset_index(drop=True)
    ok = np.ones(len(images), bool)
    if hashes is None:
        hashes, skipped = hash_images(images["path"], method, progress)
        ok = ~images["path"].astype(str).isin(skipped["path"]).to_numpy()
    index = np.flatnonzero(ok)
    pairs = near_duplicate_pairs(np.asarray(hashes)[index], max_distance)
    a, b = images.iloc[index[pairs["i"]]], images.iloc[index[pairs["j"]]]
    split = "split" in images
    out = pd.DataFrame({
        "image_id_a": a["image_id"].to_numpy(), "image_id_b": b["image_id"].to_numpy(),
        "patient_id_a": a["patient_id"].to_numpy(), "patient_id_b": b["patient_id"].to_numpy(),
        "split_a": a["split"].to_numpy() if split else None, "split_b": b["split"].to_numpy() if split else None,
        "distance": pairs["distance"].to_numpy(),
    })
    out["same_patient"] = out["patient_id_a"] == out["patient_id_b"]
    out["crosses_split"] = (out["split_a"] != out["split_b"]) if split else False
    return out


def summarize(pairs: pd.DataFrame) -> pd.DataFrame:
    """Counts of pairs by (within split / across splits) x (same / different patient)."""
    where = np.where(pairs["crosses_split"], "across splits", "within a split")
    who = np.where(pairs["same_patient"], "same patient", "different patients")
    table = pd.crosstab(pd.Series(where, name="where"), pd.Series(who, name="patients"))
    return table.reindex(index=["within a split", "across splits"],
                         columns=["same patient", "different patients"], fill_value=0)
