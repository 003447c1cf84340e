"""The run's ``manifest.json``, written by whoever executes a stage: the runner or a cluster job.

Several writers share one manifest: the runner (run status, stages it skips or submits), the
threads of the local executor and the Slurm jobs (each the record of its own stage). Every
change is a read-modify-write of the whole file under an exclusive ``fcntl.flock`` on
``manifest.json.lock`` (held for milliseconds, released by the operating system even if the
writer is killed), and the file itself is replaced atomically (:func:`pneumoloc.storage.save_json`),
so a reader never sees half a manifest and no writer loses another's update. ``flock`` works
between the processes of one machine and on NFSv4 and Lustre/GPFS mounts as cluster file
systems offer it (flock(2)); the lock file stays in place so no writer can lock a removed file.
"""
from __future__ import annotations

import fcntl
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from ..storage import load_json, save_json

__all__ = ["ManifestStore", "FINAL_STATES", "describe"]

# Stage states after which nothing more happens until the next run.
FINAL_STATES = ("ok", "skipped", "failed", "timeout", "interrupted", "cancelled", "not run")
_THREADS = threading.Lock()  # flock is per open file, so threads of one process also need a lock


class ManifestStore:
    """Locked, atomic updates of one ``manifest.json``.

    Args:
        path: the manifest file; ``<path>.lock`` next to it is the lock.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with _THREADS:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing releases the flock

    def read(self) -> dict[str, Any]:
        """The manifest as last written (it is replaced atomically, so no lock is needed to read)."""
        return load_json(self.path)

    def write(self, manifest: dict[str, Any]) -> None:
        """Replace the whole manifest (the runner, when a run starts)."""
        with self._locked():
            save_json(self.path, manifest)

    def update(self, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Apply ``change`` to the current manifest in place and write it back; returns the result."""
        with self._locked():
            manifest = load_json(self.path)
            change(manifest)
            save_json(self.path, manifest)
            return manifest

    def update_stage(self, name: str, record: dict[str, Any], replace: bool = False) -> dict[str, Any]:
        """Merge ``record`` into stage ``name``'s record (or replace it); returns the new record.

        Raises:
            KeyError: the manifest has no stage ``name`` (it belongs to another spec).
        """
        result: dict[str, Any] = {}

        def change(manifest: dict[str, Any]) -> None:
            for i, rec in enumerate(manifest["stages"]):
                if rec["name"] == name:
                    manifest["stages"][i] = dict(record) if replace else {**rec, **record}
                    result.update(manifest["stages"][i])
                    return
            raise KeyError(f"{self.path} has no stage {name!r}; stages: {[r['name'] for r in manifest['stages']]}")

        self.update(change)
        return result

    def update_run(self, **fields: Any) -> dict[str, Any]:
        """Set run-level fields (``status``, ``ended``, ...)."""
        return self.update(lambda manifest: manifest.update(fields))


def _seconds(rec: dict[str, Any]) -> str:
    """Wall seconds of a stage from its ISO ``started``/``ended`` stamps; "" when either is missing."""
    from datetime import datetime

    if not rec.get("started") or not rec.get("ended"):
        return ""
    span = datetime.fromisoformat(rec["ended"]) - datetime.fromisoformat(rec["started"])
    return f"{span.total_seconds():.0f}"


def describe(manifest: dict[str, Any]) -> str:
    """A table of the run for ``pneumoloc status``: each stage's state, Slurm job, node, times, wall
    seconds and log (papermill's output, relative to the run folder; submitit's own logs are in the
    manifest). Stages skipped as up to date keep the times of the run that executed them."""
    head = (f"run {manifest.get('run')}  status {manifest.get('status')}  executor "
            f"{manifest.get('executor', 'inline')}  started {manifest.get('started')}  ended {manifest.get('ended')}")
    rows = [("stage", "status", "job", "node", "started", "ended", "seconds", "log")]
    for rec in manifest.get("stages", []):
        job = rec.get("job") or {}
        rows.append((rec.get("name", "?"), rec.get("status", "?"), str(job.get("id", "")),
                     str(job.get("node", "")), str(rec.get("started") or ""), str(rec.get("ended") or ""),
                     _seconds(rec), str(rec.get("log") or job.get("stdout", ""))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows]
    errors = [f"  {r['name']}: {r['error'].get('message')}" for r in manifest.get("stages", [])
              if isinstance(r.get("error"), dict)]
    return "\n".join([head, *lines, *(["errors:", *errors] if errors else [])])
