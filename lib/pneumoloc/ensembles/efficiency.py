"""What a model costs: parameters, measured latency, and the cost-vs-quality frontier.

Shahi & Bagale argue MobileNet is the efficient choice; this module measures the
costs that claim is about, on the device at hand, for each trained model:

* parameter count (all parameters of the classifier, backbone + head);
* latency: median wall time of a forward pass of ONE image (batch 1, what a
  clinician waiting for one study sees), and the throughput cost in ms per image at
  a larger batch; inputs are random images at the model's training size, after warm-up
  passes; on CUDA the device is synchronized before each clock read. A latency means
  nothing without where it was measured: each record carries the device, the torch CPU
  threads and the hardware (CPU model or GPU name), and :func:`latency_setting` says them
  in words for every figure and table that shows a latency;
* the Pareto frontier: a model is on it when no other model is at most as costly
  and at least as good, and strictly better in one of the two.
"""
from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd

__all__ = ["Latency", "SETTING_COLUMNS", "hardware_name", "count_parameters", "measure_latency", "latency_setting",
           "pareto_front", "efficiency_table"]

# Columns of an efficiency table that say where its latencies were measured.
SETTING_COLUMNS = ["device", "threads", "hardware"]


@dataclass(frozen=True)
class Latency:
    """Measured forward-pass cost of one model on one device."""

    device: str
    image_size: int
    latency_ms: float  # median over batches of a batch-1 forward pass
    batch_size: int
    ms_per_image_batched: float  # median batch time / batch size
    n_batches: int
    threads: int  # torch CPU threads in use (the measurement depends on it)
    hardware: str  # CPU model or GPU name (hardware_name)


def hardware_name(device) -> str:
    """The GPU's name for a CUDA device, else the CPU model (``/proc/cpuinfo``'s ``model name``,
    falling back to :func:`platform.processor` and the machine type)."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def count_parameters(model, trainable_only: bool = False) -> int:
    """Number of parameters (elements) of a torch module."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only))


def _median_ms(fn: Callable[[], None], n: int, sync: Callable[[], None]) -> float:
    times = []
    for _ in range(n):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def measure_latency(model, image_size: int, device: str = "cpu", n_batches: int = 5,
                    batch_size: int = 8, warmup: int = 2, in_chans: int = 1, seed: int = 0,
                    threads: int = 0) -> Latency:
    """Median forward time of batch 1 and of ``batch_size`` images (no gradients, eval mode).

    Args:
        model: a torch module taking ``[B, in_chans, S, S]``.
        image_size: S, the model's training size.
        device: torch device string (``"cpu"``, ``"cuda"``).
        n_batches: timed repetitions for each batch size (the median is reported).
        warmup: untimed passes first (allocator, cuDNN autotune, lazy init).
        threads: torch CPU threads while timing (restored afterwards); 0 keeps the current
            setting. On a shared, oversubscribed CPU one thread is far more stable: threads
            that wait for a busy core stretch every timed forward pass.
    """
    import torch

    if n_batches < 1:
        raise ValueError(f"n_batches must be >= 1, got {n_batches}")
    dev = torch.device(device)
    model = model.to(dev).eval()
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    g = torch.Generator().manual_seed(seed)
    results = {}
    before = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        used = torch.get_num_threads()
        with torch.inference_mode():
            for b in (1, batch_size):
                x = torch.randn(b, in_chans, image_size, image_size, generator=g).to(dev)
                for _ in range(warmup):
                    model(x)
                results[b] = _median_ms(lambda: model(x), n_batches, sync)
    finally:
        torch.set_num_threads(before)
    return Latency(str(dev), int(image_size), results[1], int(batch_size),
                   results[batch_size] / batch_size, int(n_batches), used, hardware_name(dev))


def latency_setting(table: pd.DataFrame) -> str:
    """Where a table's latencies were measured, in words: ``"latency on cpu (<CPU model>), 1 torch
    thread"``; each distinct setting once, in order, when the rows were measured in several.

    Args:
        table: rows with :data:`SETTING_COLUMNS` (``efficiency_table``, ``efficiency_frontier``).
    """
    missing = [c for c in SETTING_COLUMNS if c not in table]
    if missing:
        raise ValueError(f"the table has no {missing} column(s) to say where latency was measured: pass "
                         "efficiency_table's rows (or efficiency_frontier's, which carries them)")
    settings = []
    for device, threads, hardware in table[SETTING_COLUMNS].drop_duplicates().itertuples(index=False):
        n = int(threads)
        settings.append(f"{device} ({hardware}), {n} torch thread{'' if n == 1 else 's'}")
    return "latency on " + "; ".join(settings)


def pareto_front(cost: Sequence[float], score: Sequence[float]) -> np.ndarray:
    """Boolean mask of points not dominated (lower cost and higher score are better).

    NaN scores are never on the frontier.
    """
    c, s = np.asarray(cost, dtype=float), np.asarray(score, dtype=float)
    ok = np.isfinite(c) & np.isfinite(s)
    front = np.zeros(c.size, bool)
    for i in np.flatnonzero(ok):
        dominated = ok & (c <= c[i]) & (s >= s[i]) & ((c < c[i]) | (s > s[i]))
        front[i] = not dominated.any()
    return front


def efficiency_table(run, models: Sequence[str], device: str = "cpu", n_batches: int = 5,
                     batch_size: int = 8, threads: int = 0, loader: Callable | None = None) -> pd.DataFrame:
    """Parameters and latency of each trained model's ``best.pt`` in a run.

    Args:
        run: :class:`~pneumoloc.environment.RunPaths`.
        models: model names (folders under ``run.model_dir``).
        threads: CPU threads while timing (see :func:`measure_latency`).
        loader: ``(path, device) -> model``; defaults to
            :func:`pneumoloc.models.checkpoints.load_model` (``weights_only=True``).

    Returns:
        One row per model: ``model, params, image_size`` and the :class:`Latency` fields.
    """
    from tqdm.auto import tqdm

    if loader is None:
        from ..models.checkpoints import load_model as loader
    rows = []
    for name in tqdm(list(models), desc="latency"):
        path = run.model_dir(name) / "best.pt"
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: train {name!r} with notebook 02 first")
        model = loader(path, device=device)
        cfg = getattr(model, "config", {}) or {}
        size = cfg.get("image_size") or getattr(getattr(model, "spec", None), "default_size", None)
        if not size:
            raise ValueError(f"{path}: the checkpoint's config has no image_size to time the model at")
        # Classifier takes grey [B, 1, S, S] (transforms contract), hence in_chans=1
        lat = measure_latency(model, int(size), device, n_batches, batch_size, in_chans=1, threads=threads)
        rows.append({"model": name, "params": count_parameters(model), **asdict(lat)})
    return pd.DataFrame(rows)
