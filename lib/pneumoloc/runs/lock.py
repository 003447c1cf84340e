"""One ``pneumoloc run`` at a time per run folder: the ``run.lock`` file.

Two runners on one folder would overwrite each other's manifest and notebooks,
so the runner holds an exclusive ``fcntl.flock`` on ``<run>/run.lock`` while it
executes. ``flock`` rather than an ``O_CREAT|O_EXCL`` file: the operating system
drops the lock when its holder dies, even by ``SIGKILL`` or a power cut, so a
leftover file never needs a "is that pid still alive?" guess (which a reused pid
would fool). The holder writes its pid, host and start time into the file so that
a refused runner can name it. A file whose lock is free but which still names a
holder was left by a runner that died without releasing it; it is taken over with
a note. Releasing removes the file; a runner that opened it just before the
removal notices that its file is no longer the one at the path and starts over.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

__all__ = ["LOCK_NAME", "RunLocked", "run_lock"]

LOCK_NAME = "run.lock"


class RunLocked(RuntimeError):
    """Another ``pneumoloc run`` holds the run folder; the message names its pid."""


def _holder(fd: int) -> dict | None:
    """The holder recorded in an open lock file; ``{}`` when unreadable, ``None`` when empty."""
    text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
    if not text:
        return None
    try:
        holder = json.loads(text)
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder: dict | None) -> str:
    if not holder:
        return "a pneumoloc run that has not recorded its pid yet" if holder is None else "an unreadable holder"
    return f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"


def _is_at(fd: int, path: Path) -> bool:
    """Whether the open file ``fd`` is still the file at ``path`` (not removed or replaced)."""
    try:
        at_path = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (at_path.st_dev, at_path.st_ino)


def _acquire(path: Path) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by papermill (PEP 446)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise RunLocked(f"{path.parent} is in use by another pneumoloc run ({_describe(holder)}); "
                            f"wait for it to finish or stop it (kill {(holder or {}).get('pid', '<pid>')}), "
                            f"then run again") from None
        if _is_at(fd, path):
            return fd
        os.close(fd)  # released and removed between our open and flock: lock the new file


@contextmanager
def run_lock(run_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold ``<run_dir>/run.lock`` for the duration of the block; yields the lock path.

    Raises:
        RunLocked: another process holds it; the message names the holder's pid and host.
    """
    path = Path(run_dir) / LOCK_NAME
    fd = _acquire(path)
    try:
        stale = _holder(fd)
        if stale is not None:
            print(f"[pneumoloc] note: {path}: taking over the lock left by {_describe(stale)}, "
                  "which exited without releasing it", file=sys.stderr, flush=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        yield path
    finally:
        path.unlink(missing_ok=True)  # while still locked, so nobody can take the old file meanwhile
        os.close(fd)
