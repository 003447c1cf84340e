"""Execute one stage (one notebook with papermill) so that stopping it leaves nothing behind.

Each stage runs papermill in a child process in its own process group, so a dead kernel or a
stage past its timeout is contained: the stage's processes are killed, the partly executed
notebook stays on disk and the stage's manifest record says what happened (``ok``,
``failed``, ``timeout``, ``interrupted``), with the notebook's first error cell. Every executor
(:mod:`pneumoloc.runs.executors`, :mod:`pneumoloc.runs.slurm`) runs stages through
:func:`execute_stage`.

SIGINT (Ctrl-C) and SIGTERM are recorded by :func:`stop_signals` and acted on at the next
check (at most ``_POLL_SECONDS`` later): papermill and its kernel are killed and
:class:`Stopped` carries the signal. An executed notebook cut short mid-write (papermill
rewrites it after every cell, a kill can truncate it) is reported as unreadable, never crashes
the caller.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, TextIO

import psutil

from ..environment import PROJECT_ROOT, RunPaths
from .params import declared_parameters
from .spec import Stage

__all__ = ["execute_stage", "read_executed", "first_error", "stop_signals", "StopRequest", "Stopped",
           "STOP_SIGNALS", "now", "resume_parameters"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_POLL_SECONDS = 0.25  # how often a running stage checks for a stop request
_RECORD_SECONDS = 2.0  # how often it records papermill's descendants (a scan of every process)


class Stopped(Exception):
    """Raised at a checkpoint of the runner once a stop signal has arrived."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.where = "between stages"


class StopRequest:
    """Signal handler that only records the first stop signal.

    The runner acts on it at its next checkpoint (at most ``_POLL_SECONDS`` later
    while a stage runs) instead of raising from inside whatever line was executing,
    so killing the stage's processes and writing the manifest are never cut short.
    """

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum

    def check(self) -> None:
        if self.signum is not None:
            raise Stopped(self.signum)


@contextmanager
def stop_signals() -> Iterator[StopRequest]:
    """Route SIGINT/SIGTERM to a :class:`StopRequest` for the duration of the block.

    Python runs signal handlers in the main thread only; called from another thread
    the caller's handlers stay in place and the request is never set.
    """
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {s: signal.signal(s, stop) for s in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


class _StageProcesses:
    """Papermill and every process it starts, so that stopping a stage leaves nothing behind.

    The kernel cannot be reached through papermill's process group:
    ``jupyter_client.launcher.launch_kernel`` starts it with ``start_new_session=True``,
    so it leads its own session and group. This object records papermill's
    descendants while the stage runs and once more just before killing (``psutil``,
    which also remembers each process's creation time, so a pid reused later is never
    mistaken for ours); :meth:`kill` kills papermill's group, then the group of every
    recorded process that leads one (the kernel together with what it started in its
    group, e.g. DataLoader workers), then any other recorded process. Following the
    process tree needs no knowledge of papermill's or jupyter_client's internals
    (connection-file names, kernel command lines, ``/proc``), only POSIX process
    groups and psutil, and it also reaches the processes the kernel started; recording
    during the run catches those whose parent died before the stop.
    """

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.seen: dict[int, psutil.Process] = {}
        self.recorded_at = -float("inf")

    def _record(self) -> None:
        self.recorded_at = time.monotonic()
        try:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                self.seen.setdefault(child.pid, child)
        except psutil.Error:
            pass  # papermill already exited

    def wait(self, timeout: float, stop: StopRequest) -> int:
        """Papermill's exit code.

        Raises:
            subprocess.TimeoutExpired: past ``timeout`` seconds.
            Stopped: a stop signal arrived.
        """
        deadline = time.monotonic() + timeout
        while True:
            if time.monotonic() - self.recorded_at >= _RECORD_SECONDS:
                self._record()
            stop.check()
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(self.proc.args, timeout)
            try:
                return self.proc.wait(timeout=min(_POLL_SECONDS, left))
            except subprocess.TimeoutExpired:
                continue

    def kill(self, grace: float = 10.0) -> None:
        """Kill papermill and all recorded descendants still alive; wait up to ``grace`` s for them to go."""
        if self.proc.poll() is None:  # not reaped yet, so its pid is still its group's id
            self._record()
            _killpg(self.proc.pid)
        own_group = os.getpgrp()
        for p in self.seen.values():
            try:
                if not p.is_running():
                    continue
                group = os.getpgid(p.pid)
                if group == p.pid and group != own_group:
                    _killpg(group)
                p.kill()
            except (psutil.Error, ProcessLookupError):
                pass
        self.proc.wait()
        alive = list(self.seen.values())
        deadline = time.monotonic() + grace
        while alive and time.monotonic() < deadline:
            alive = [p for p in alive if _alive(p)]
            time.sleep(0.05)


def _killpg(group: int) -> None:
    try:
        os.killpg(group, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _alive(p: psutil.Process) -> bool:
    """Running and not a zombie (a killed process we are not the parent of stays a zombie until reaped)."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_executed(notebook: Path) -> tuple[Any, str | None]:
    """An executed notebook and ``None``, or ``None`` and why it cannot be read.

    Papermill rewrites the output notebook in place after every cell, so a kill can
    leave truncated JSON; nbformat reports malformed content as ``ValueError``
    (``NotJSONError``), its ``ValidationError``, or ``TypeError``/``AttributeError``/
    ``KeyError`` from converting an unexpected structure.
    """
    import nbformat

    if not notebook.exists():
        return None, f"{notebook.name} does not exist"
    try:
        return nbformat.read(notebook, as_version=4), None
    except (OSError, ValueError, TypeError, AttributeError, KeyError, nbformat.ValidationError) as e:
        return None, (f"{notebook.name} is unreadable ({type(e).__name__}: {str(e)[:120]}); "
                      "papermill was most likely stopped while writing it")


def first_error(notebook: Path) -> dict[str, Any] | None:
    """The first code cell of an executed notebook with an error output.

    ``cell`` counts code cells of the *source* notebook from 1 (papermill's injected
    parameters cell is not counted), so it points at the cell a researcher edits.
    ``None`` when no cell has an error or the notebook is missing or unreadable
    (see :func:`read_executed`).
    """
    nb, _ = read_executed(notebook)
    return None if nb is None else _error_cell(nb)


def _error_cell(nb: Any) -> dict[str, Any] | None:
    code_index = 0
    for cell in nb.cells:
        if cell.get("cell_type") != "code" or "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            continue
        code_index += 1
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return {"cell": code_index, "ename": out.get("ename"), "evalue": out.get("evalue"),
                        "source": cell.get("source", "")[:200]}
    return None


def _stage_error(stage: Stage, output: Path, rec: dict[str, Any], code: int | None) -> dict[str, Any]:
    """The ``error`` entry of a stage that did not end ``ok``."""
    nb, unreadable = read_executed(output)
    err = (_error_cell(nb) if nb is not None else None) or {}
    status = rec["status"]
    if status == "interrupted":
        message = f"stopped by {rec['signal']}; papermill and its kernel were killed"
    elif status == "timeout":
        message = f"exceeded the timeout of {stage.timeout:.0f} s"
    elif err:
        message = f"code cell {err['cell']}: {err['ename']}: {err['evalue']}"
    else:
        message = f"papermill exited with {code} without an error cell (kernel died or could not start)"
    if unreadable and output.exists():
        message += f"; {unreadable}"
    elif not err and status == "failed":
        message += "; see run.log"
    return {"message": message, **err}


def resume_parameters(stage: Stage) -> dict[str, Any]:
    """``{"resume": True}`` for a notebook that declares ``resume`` (training continues from its
    ``last.pt``), else ``{}``: what a rerun after an interruption, a requeue or ``--resume`` adds."""
    return {"resume": True} if "resume" in declared_parameters(stage.notebook) else {}


def execute_stage(stage: Stage, paths: RunPaths, log: TextIO, rec: dict[str, Any], stop: StopRequest,
                  env: dict[str, str] | None = None, extra: dict[str, Any] | None = None) -> None:
    """Run one stage, filling its manifest record ``rec`` in place, also when a signal stops it.

    Args:
        env: environment of papermill and its kernel (e.g. ``CUDA_VISIBLE_DEVICES``); default: ours.
        extra: parameters added to the stage's own (e.g. :func:`resume_parameters`); they change
            how a stage gets to its result, never the result, so they are not in its fingerprint.

    Raises:
        Stopped: a stop signal arrived; the stage's processes are dead and ``rec`` says ``interrupted``.
        BaseException: whatever else ended the wait (``SystemExit`` from a cluster job being
            requeued): the stage's processes are dead and ``rec`` says ``interrupted``.
    """
    output = paths.root / stage.output_name
    params = {**stage.parameters, **(extra or {}), "run_dir": str(paths.root), "figures_dir": str(paths.figures)}
    rec.update(started=now(), output=output.name, parameters=params)
    started = time.time()
    code = None
    with tempfile.TemporaryDirectory(prefix="pneumoloc-stage-") as tmp:
        params_file = Path(tmp) / "parameters.yaml"
        params_file.write_text(json.dumps(params))  # JSON is YAML
        cmd = [sys.executable, "-m", "papermill", str(stage.notebook), str(output), "-f", str(params_file),
               "--cwd", str(paths.root), "--kernel", "python3", "--no-progress-bar", "--log-level", "WARNING"]
        processes = _StageProcesses(subprocess.Popen(cmd, cwd=PROJECT_ROOT, start_new_session=True,
                                                     stdout=log, stderr=log, env=env))
        try:
            code = processes.wait(stage.timeout, stop)
            rec["status"] = "ok" if code == 0 else "failed"
        except subprocess.TimeoutExpired:
            rec["status"] = "timeout"
        except Stopped as stopped:
            rec.update(status="interrupted", signal=str(stopped))
            stopped.where = f"during {stage.name} ({output})"
            raise
        except BaseException as e:
            rec.update(status="interrupted", signal=type(e).__name__)
            raise
        finally:
            processes.kill()  # also after a normal exit: nothing a stage started outlives it
            rec.update(ended=now(), seconds=round(time.time() - started, 1))
            if rec.get("status") not in ("ok", "running"):
                rec["error"] = _stage_error(stage, output, rec, code)

