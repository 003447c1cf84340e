"""Writing results so that finished work is never lost.

Every artifact is written atomically: to a temporary file in the same folder,
flushed and ``fsync``-ed, then renamed over the destination (``os.replace`` is
atomic on POSIX within one file system). A crash leaves either the old file or
the new one, never half of either. The temporary file's name records its writer
(``.<name>.<pid>@<host>.<random>.tmp``), so a later write into the folder removes
the temp files of writers that were killed (``kill -9`` skips every cleanup
handler) and leaves those of writers still at work.

Torch files (checkpoints) and array files (stored maps) carry their SHA-256
inside the file, as a one-line header before the payload::

    pneumoloc-sha256:<64 hex digits>\\n<torch.save or np.savez bytes>

so the file and its checksum are one rename: no instant exists at which a new
file sits beside an old checksum. Loading reads the bytes once, checks them
against the header and deserialises those same bytes. Torch payloads are always
loaded with ``weights_only=True`` passed explicitly: a pickle that would execute
code is refused and runs nothing (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` cannot flip
an explicit argument). Files written with a ``<file>.sha256`` sidecar instead of
the header still load after the same check.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

__all__ = [
    "atomic_write", "write_bytes", "save_json", "load_json", "save_table", "load_table",
    "sha256_of", "verify", "save_torch", "load_torch", "CorruptFileError", "save_arrays", "load_arrays",
    "write_checked", "read_checked", "clean_stale_temps", "STALE_TEMP_SECONDS", "json_text",
]

_MAGIC = b"pneumoloc-sha256:"
_HEADER_LEN = len(_MAGIC) + 64 + 1  # magic, hex digest, newline
# A temp file whose writer cannot be identified (another host, or a name without a writer)
# is removed only once it has not been touched for this long: no write takes a day.
STALE_TEMP_SECONDS = 24 * 3600
_TEMP_NAME = re.compile(r"^\.(?P<name>.+?)\.(?:(?P<pid>\d+)@(?P<host>\w+)\.)?\w+\.tmp$")


class CorruptFileError(RuntimeError):
    """A stored file is missing its checksum or does not match it."""


def _host_tag() -> str:
    """This machine's name reduced to ``\\w`` characters (it sits inside temp file names)."""
    return re.sub(r"\W", "_", socket.gethostname())[:40] or "host"


def _pid_alive(pid: int) -> bool | None:
    """Whether process ``pid`` exists (signal 0 probes without signalling, POSIX kill(2)); None if unknown."""
    if os.name == "nt":  # there os.kill(pid, 0) would send CTRL_C_EVENT
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _is_stale(path: Path, host: str) -> bool:
    """Whether temp file ``path`` was left by a writer that can no longer finish it."""
    m = _TEMP_NAME.match(path.name)
    if m is None:
        return False
    alive = _pid_alive(int(m["pid"])) if m["pid"] is not None and m["host"] == host else None
    if alive is not None:
        return not alive
    try:  # writer unknown (another host, no writer in the name): only an old file is abandoned
        return time.time() - path.stat().st_mtime > STALE_TEMP_SECONDS
    except FileNotFoundError:
        return False


def clean_stale_temps(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Remove temp files (``.<name>.*.tmp``) left in ``folder`` by killed writers.

    Args:
        folder: the folder to clean; a missing folder is left alone.
        name: only temp files of this destination file name (``None``: all).

    Returns:
        The removed paths.
    """
    folder, host, removed = Path(folder), _host_tag(), []
    if not folder.is_dir():
        return removed
    pattern = f".{name}.*.tmp" if name else ".*.tmp"
    for p in sorted(folder.glob(pattern)):
        if _is_stale(p, host):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


_CLEANED: set[str] = set()  # folders this process has cleaned (a folder of images is written file by file)


def atomic_write(path: str | os.PathLike, write: Callable[[io.BufferedWriter], None]) -> Path:
    """Call ``write(fileobj)`` on a temp file beside ``path``, fsync, then rename over ``path``.

    The first write of this process into a folder removes the temp files that killed
    writers left there; the training and map entry points clean their folder on every call.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if str(path.parent) not in _CLEANED:
        clean_stale_temps(path.parent)
        _CLEANED.add(str(path.parent))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}@{_host_tag()}.", suffix=".tmp",
                               dir=path.parent)
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


def json_text(obj: Any) -> str:
    """``obj`` as indented JSON; numpy scalars and arrays and paths become plain values, NaN is refused."""
    return json.dumps(obj, indent=2, sort_keys=False, default=_json_default, allow_nan=False)


def save_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_bytes(path, (json_text(obj) + "\n").encode())


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
    """SHA-256 of the whole file (its identity, e.g. the checkpoint that made an artifact)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def write_checked(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` atomically behind a header holding its SHA-256 (one file, one rename).

    A ``<file>.sha256`` sidecar of an earlier format is removed afterwards; until then the
    header takes precedence over it.
    """
    path = Path(path)
    header = _MAGIC + hashlib.sha256(data).hexdigest().encode() + b"\n"

    def write(f: io.BufferedWriter) -> None:
        f.write(header)
        f.write(data)
    atomic_write(path, write)
    _sidecar(path).unlink(missing_ok=True)
    return path


def _payload(path: Path, raw: bytes, check: bool) -> bytes:
    """The payload of ``raw`` (the bytes of ``path``) after checking it; see :func:`read_checked`."""
    if raw.startswith(_MAGIC):
        recorded = raw[len(_MAGIC):_HEADER_LEN - 1].decode("ascii", "replace")
        payload = raw[_HEADER_LEN:]
        if len(raw) < _HEADER_LEN or hashlib.sha256(payload).hexdigest() != recorded:
            raise CorruptFileError(f"{path} does not match its checksum (truncated or corrupted): "
                                   "rerun the step that writes it")
        return payload
    side = _sidecar(path)
    if side.exists():  # the sidecar format: checksum of the whole file beside it
        if check and hashlib.sha256(raw).hexdigest() != side.read_text().strip():
            raise CorruptFileError(f"{path} does not match its checksum {side.name} (truncated or corrupted): "
                                   "rerun the step that writes it")
        return raw
    if check:
        raise CorruptFileError(f"{path} has no checksum (neither a pneumoloc header nor {side.name}); it may be "
                               "incomplete or foreign: rerun the step that writes it, or load it with check=False")
    return raw


def read_checked(path: str | os.PathLike, check: bool = True) -> bytes:
    """The payload written by :func:`write_checked`, read once and checked against its SHA-256.

    Args:
        path: the file.
        check: refuse a file that carries no checksum at all (``False`` admits foreign
            files, e.g. published checkpoints). A checksum that is present is always checked.

    Raises:
        CorruptFileError: missing file, missing checksum, or contents that do not match it.
    """
    path = Path(path)
    if not path.exists():
        raise CorruptFileError(f"{path} does not exist")
    return _payload(path, path.read_bytes(), check)


def verify(path: str | os.PathLike) -> None:
    """Raise :class:`CorruptFileError` unless ``path`` matches its recorded checksum."""
    read_checked(path)


def save_torch(path: str | os.PathLike, obj: Any) -> Path:
    """``torch.save`` atomically with the SHA-256 inside the file.

    ``obj`` must hold only tensors and plain Python values so it loads with
    ``weights_only=True``.
    """
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return write_checked(path, buf.getvalue())


def load_torch(path: str | os.PathLike, map_location: Any = "cpu", check: bool = True) -> Any:
    """Load a torch file with ``weights_only=True`` from the very bytes whose checksum was verified.

    Args:
        path: the file.
        map_location: passed to ``torch.load``.
        check: require a checksum (set False for foreign files, e.g. published
            checkpoints, which still load with ``weights_only=True``).
    """
    import torch

    return torch.load(io.BytesIO(read_checked(path, check)), map_location=map_location, weights_only=True)


def save_arrays(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """Store numpy arrays (``np.savez``) atomically with the SHA-256 inside the file; no pickles allowed."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return write_checked(path, buf.getvalue())


def load_arrays(path: str | os.PathLike, check: bool = True) -> dict[str, np.ndarray]:
    """Load arrays written by :func:`save_arrays` (``allow_pickle=False``), checksum verified."""
    with np.load(io.BytesIO(read_checked(path, check)), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
