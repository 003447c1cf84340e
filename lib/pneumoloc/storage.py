"""Writing results so that finished work is never lost.

Every artifact is written atomically: to a temporary file in the same folder,
flushed and ``fsync``-ed, then renamed over the destination (``os.replace`` is
atomic on POSIX within one file system). A crash leaves either the old file or
the new one, never half of either.

Torch files (checkpoints, stored maps) carry a SHA-256 recorded in a sidecar
``<file>.sha256`` so a truncated or corrupted file is detected before use, and
they are always loaded with ``weights_only=True`` passed explicitly: a pickle that
would execute code is refused and runs nothing (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``
cannot flip an explicit argument).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

__all__ = [
    "atomic_write", "write_bytes", "save_json", "load_json", "save_table", "load_table",
    "sha256_of", "verify", "save_torch", "load_torch", "CorruptFileError", "save_arrays", "load_arrays",
]


class CorruptFileError(RuntimeError):
    """A stored file is missing its checksum or does not match it."""


def atomic_write(path: str | os.PathLike, write: Callable[[io.BufferedWriter], None]) -> Path:
    """Call ``write(fileobj)`` on a temp file beside ``path``, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in JSON")


def save_json(path: str | os.PathLike, obj: Any) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default, allow_nan=False)
    return write_bytes(path, (text + "\n").encode())


def load_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def save_table(path: str | os.PathLike, df: pd.DataFrame) -> Path:
    """Write a table as CSV atomically (CSV keeps runs readable without extra packages)."""
    return atomic_write(path, lambda f: f.write(df.to_csv(index=False).encode()))


def load_table(path: str | os.PathLike, **kwargs: Any) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run the notebook that writes it first")
    return pd.read_csv(path, **kwargs)


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def save_torch(path: str | os.PathLike, obj: Any) -> Path:
    """``torch.save`` atomically and record the file's SHA-256 beside it.

    ``obj`` must hold only tensors and plain Python values so it loads with
    ``weights_only=True``.
    """
    import torch

    path = Path(path)
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    write_bytes(path, data)
    write_bytes(_sidecar(path), (hashlib.sha256(data).hexdigest() + "\n").encode())
    return path


def verify(path: str | os.PathLike) -> None:
    """Raise :class:`CorruptFileError` unless ``path`` matches its recorded checksum."""
    path = Path(path)
    side = _sidecar(path)
    if not path.exists():
        raise CorruptFileError(f"{path} does not exist")
    if not side.exists():
        raise CorruptFileError(f"{path} has no checksum file {side.name}; it may be incomplete")
    if sha256_of(path) != side.read_text().strip():
        raise CorruptFileError(f"{path} does not match its checksum (truncated or corrupted)")


def load_torch(path: str | os.PathLike, map_location: Any = "cpu", check: bool = True) -> Any:
    """Load a torch file with ``weights_only=True`` after verifying its checksum.

    Args:
        path: the file.
        map_location: passed to ``torch.load``.
        check: verify the sidecar checksum first (set False for foreign files,
            e.g. published checkpoints, which still load with ``weights_only=True``).
    """
    import torch

    if check:
        verify(path)
    return torch.load(path, map_location=map_location, weights_only=True)


def save_arrays(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """Store numpy arrays (``np.savez``) atomically with a checksum; no pickles allowed."""
    path = Path(path)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    data = buf.getvalue()
    write_bytes(path, data)
    write_bytes(_sidecar(path), (hashlib.sha256(data).hexdigest() + "\n").encode())
    return path


def load_arrays(path: str | os.PathLike, check: bool = True) -> dict[str, np.ndarray]:
    """Load arrays written by :func:`save_arrays` (``allow_pickle=False``)."""
    if check:
        verify(path)
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
