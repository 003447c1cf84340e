"""Near-duplicate pair search: multi-index hashing vs brute-force all-pairs Hamming, same hashes.

Run: .venv/bin/python bench/bench_near_duplicates.py
"""
from __future__ import annotations

import time

import numpy as np

from pneumoloc.data.near_duplicates import hamming, near_duplicate_pairs


def brute_force(h: np.ndarray, max_distance: int) -> int:
    """Row blocks of the full N x N distance matrix (the baseline)."""
    found = 0
    for s in range(0, len(h), 2048):
        d = hamming(h[s:s + 2048, None], h[None, :])
        rows = np.arange(s, min(s + 2048, len(h)))[:, None]
        found += int(((d <= max_distance) & (np.arange(len(h))[None, :] > rows)).sum())
    return found


def main(n: int = 20000, max_distance: int = 4, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)
    h[: n // 20] = h[n // 20: n // 10] ^ np.uint64(0b101)  # 5% planted near-duplicates
    t = time.perf_counter()
    fast = len(near_duplicate_pairs(h, max_distance))
    t_fast = time.perf_counter() - t
    t = time.perf_counter()
    slow = brute_force(h, max_distance)
    t_slow = time.perf_counter() - t
    assert fast == slow, (fast, slow)
    print(f"{n} hashes, distance <= {max_distance}: {fast} pairs | multi-index {n / t_fast:9.0f} images/s "
          f"| brute force {n / t_slow:8.0f} images/s | ratio {t_slow / t_fast:5.1f}x")


if __name__ == "__main__":
    main()
