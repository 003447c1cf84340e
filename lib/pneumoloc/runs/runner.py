"""Execute a run spec with papermill and keep an honest ``manifest.json``.

Each stage (one notebook execution) runs papermill in a child process in its own
process group, so a dead kernel or a stage past its timeout is contained: the
runner kills the stage's processes, keeps the partly executed notebook on disk and
records what happened. The manifest is rewritten atomically before and after every
stage with the parameters, git commit, package versions, timings and status of
each stage (``running``, ``ok``, ``skipped`` (up to date), ``failed``, ``timeout``,
``interrupted``, ``not run``). The first failure stops the run (later notebooks
read its artifacts) and the command exits non-zero naming the notebook and the cell.

SIGINT (Ctrl-C) and SIGTERM stop the run the same way a timeout stops a stage:
papermill and its kernel are killed, the stage and the run are marked
``interrupted`` and :class:`RunInterrupted` carries the signal (``pneumoloc run``
exits 128 + signal number: 130, 143). One runner at a time holds a run folder
(:mod:`pneumoloc.runs.lock`). An executed notebook cut short mid-write (papermill
rewrites it after every cell, a kill can truncate it) is reported as unreadable,
never crashes the runner, and its stage is executed again on the next run.
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

from ..environment import FIGURES_DIR, PROJECT_ROOT, RunPaths, git_commit, package_versions
from ..storage import load_json, save_json
from .lock import run_lock
from .spec import RunSpec, Stage, load_spec

__all__ = ["run_spec", "select_stages", "first_error", "read_executed", "RunFailed", "RunInterrupted"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_POLL_SECONDS = 0.25  # how often a running stage checks for a stop request
_RECORD_SECONDS = 2.0  # how often it records papermill's descendants (a scan of every process)


class RunFailed(RuntimeError):
    """A stage failed, timed out or its kernel died; the message names notebook and cell."""


class RunInterrupted(RunFailed):
    """SIGINT or SIGTERM stopped the run; its processes are gone and the manifest says so.

    Attributes:
        signum: the signal received; a command exits with ``128 + signum``.
    """

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


class _Stopped(Exception):
    """Raised at a checkpoint of the runner once a stop signal has arrived."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.where = "between stages"


class _StopRequest:
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
            raise _Stopped(self.signum)


@contextmanager
def _stop_signals() -> Iterator[_StopRequest]:
    """Route SIGINT/SIGTERM to a :class:`_StopRequest` for the duration of the block.

    Python runs signal handlers in the main thread only; called from another thread
    the caller's handlers stay in place and the request is never set.
    """
    stop = _StopRequest()
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

    def wait(self, timeout: float, stop: _StopRequest) -> int:
        """Papermill's exit code.

        Raises:
            subprocess.TimeoutExpired: past ``timeout`` seconds.
            _Stopped: a stop signal arrived.
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


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def select_stages(stages: list[Stage], only: list[str] | None = None, start: str | None = None) -> list[Stage]:
    """Stages chosen by ``--only`` (names or prefixes, e.g. ``02`` or ``02_train_backbone[resnet18]``)
    or ``--from`` (this stage and all after it)."""
    def matches(stage: Stage, key: str) -> bool:
        return stage.name == key or stage.name.startswith(key)

    chosen = stages
    if start:
        idx = next((i for i, s in enumerate(stages) if matches(s, start)), None)
        if idx is None:
            raise ValueError(f"--from {start!r} matches no stage; stages: {[s.name for s in stages]}")
        chosen = stages[idx:]
    if only:
        missing = [k for k in only if not any(matches(s, k) for s in chosen)]
        if missing:
            raise ValueError(f"--only {missing} match no stage; stages: {[s.name for s in chosen]}")
        chosen = [s for s in chosen if any(matches(s, k) for k in only)]
    return chosen


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


def _execute(stage: Stage, paths: RunPaths, log: TextIO, rec: dict[str, Any], stop: _StopRequest) -> None:
    """Run one stage, filling its manifest record ``rec`` in place, also when a signal stops it.

    Raises:
        _Stopped: a stop signal arrived; the stage's processes are dead and ``rec`` says ``interrupted``.
    """
    output = paths.root / stage.output_name
    params = {**stage.parameters, "run_dir": str(paths.root), "figures_dir": str(paths.figures)}
    rec.update(started=_now(), output=output.name, parameters=params)
    started = time.time()
    code = None
    with tempfile.TemporaryDirectory(prefix="pneumoloc-stage-") as tmp:
        params_file = Path(tmp) / "parameters.yaml"
        params_file.write_text(json.dumps(params))  # JSON is YAML
        cmd = [sys.executable, "-m", "papermill", str(stage.notebook), str(output), "-f", str(params_file),
               "--cwd", str(paths.root), "--kernel", "python3", "--no-progress-bar", "--log-level", "WARNING"]
        processes = _StageProcesses(subprocess.Popen(cmd, cwd=PROJECT_ROOT, start_new_session=True,
                                                     stdout=log, stderr=log))
        try:
            code = processes.wait(stage.timeout, stop)
            rec["status"] = "ok" if code == 0 else "failed"
        except subprocess.TimeoutExpired:
            rec["status"] = "timeout"
        except _Stopped as stopped:
            rec.update(status="interrupted", signal=str(stopped))
            stopped.where = f"during {stage.name} ({output})"
            raise
        finally:
            processes.kill()  # also after a normal exit: nothing a stage started outlives it
            rec.update(ended=_now(), seconds=round(time.time() - started, 1))
            if rec.get("status") not in ("ok", "running"):
                rec["error"] = _stage_error(stage, output, rec, code)


def _up_to_date(stage: Stage, prev: dict[str, Any], paths: RunPaths) -> bool:
    """Whether the last execution succeeded with this fingerprint and left a readable notebook."""
    if prev.get("status") not in ("ok", "skipped") or prev.get("fingerprint") != stage.fingerprint:
        return False
    _, unreadable = read_executed(paths.root / stage.output_name)
    if unreadable:
        print(f"[pneumoloc] {stage.name}: executing again: {unreadable}", file=sys.stderr, flush=True)
    return unreadable is None


def _previous_manifest(path: Path) -> dict[str, Any]:
    """The manifest of the last run, or ``{}`` (every stage runs) when there is none or it is unreadable."""
    if not path.exists():
        return {}
    try:
        previous = load_json(path)
    except (OSError, ValueError) as e:
        print(f"[pneumoloc] note: {path} is unreadable ({e}); every selected stage runs", file=sys.stderr)
        return {}
    return previous if isinstance(previous, dict) else {}


def _new_manifest(spec: RunSpec, previous: dict[str, Any], chosen: set[str]) -> dict[str, Any]:
    done = {s.get("name"): s for s in previous.get("stages", []) if isinstance(s, dict)}
    manifest = {
        "run": spec.name, "spec": str(spec.path), "spec_content": spec.raw, "git_commit": git_commit(),
        "versions": package_versions(), "started": _now(), "ended": None, "status": "running",
        "stages": [{"name": s.name, "notebook": s.notebook.name, "fingerprint": s.fingerprint,
                    "status": "not run", **({k: v for k, v in done.get(s.name, {}).items()
                                             if k not in ("name", "notebook", "fingerprint", "status")})}
                   for s in spec.stages],
    }
    # stages not selected keep their previous status; one left `running` lost its runner
    for rec in manifest["stages"]:
        if rec["name"] not in chosen and rec["name"] in done:
            rec["status"] = done[rec["name"]].get("status", "not run")
            rec["fingerprint"] = done[rec["name"]].get("fingerprint")
            if rec["status"] == "running":
                rec.update(status="interrupted", error={"message": "its runner ended without recording the "
                                                                   "outcome (killed with SIGKILL or a crash)"})
    return manifest


def _run_stages(spec: RunSpec, paths: RunPaths, manifest: dict[str, Any], done: dict[str, Any],
                chosen: set[str], force: bool, stop: _StopRequest) -> str | None:
    """Execute the chosen stages in order; the failure message of the first that fails, else ``None``."""
    from tqdm.auto import tqdm

    with open(paths.root / "run.log", "a") as log:
        for stage, rec in tqdm(list(zip(spec.stages, manifest["stages"])), desc=f"run {spec.name}", unit="nb"):
            stop.check()
            if stage.name not in chosen:
                continue
            if not force and _up_to_date(stage, done.get(stage.name, {}), paths):
                rec["status"] = "skipped"
                rec["reason"] = "inputs and parameters unchanged since the last successful execution"
                continue
            print(f"[pneumoloc] {stage.name} ...", file=sys.stderr, flush=True)
            log.write(f"\n=== {_now()} {stage.name}\n")
            log.flush()
            for key in ("reason", "error", "signal"):
                rec.pop(key, None)
            rec["status"] = "running"
            save_json(paths.manifest, manifest)
            _execute(stage, paths, log, rec, stop)
            print(f"[pneumoloc] {stage.name}: {rec['status']} in {rec['seconds']} s", file=sys.stderr, flush=True)
            save_json(paths.manifest, manifest)
            if rec["status"] != "ok":
                return f"{stage.name} ({paths.root / stage.output_name}) {rec['status']}: {rec['error']['message']}"
    return None


def _finish(paths: RunPaths, manifest: dict[str, Any], status: str, reason: str | None = None) -> None:
    """Close the manifest: run status, end time, and no stage left ``running``."""
    for rec in manifest["stages"]:
        if rec["status"] == "running":
            rec.update(status=status, ended=_now())
            rec.setdefault("error", {"message": reason or status})
    manifest.update(ended=_now(), status=status)
    save_json(paths.manifest, manifest)


def run_spec(spec_path: str | Path, only: list[str] | None = None, start: str | None = None,
             force: bool = False, run_dir: str | Path | None = None,
             figures_dir: str | Path | None = None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Execute the stages of a spec; returns the manifest.

    Args:
        spec_path: ``papermill_runs/<name>.yaml``.
        only, start: run part of the spec (see :func:`select_stages`).
        force: rerun stages even when their fingerprint is unchanged.
        run_dir, figures_dir: override ``papermill_runs/<name>`` and ``figures/<name>``.
        overrides: parameters that win over the spec's (see :func:`pneumoloc.runs.spec.load_spec`).

    Raises:
        RunFailed: a stage failed; the manifest and the executed notebook stay on disk.
        RunInterrupted: SIGINT or SIGTERM arrived (called from the main thread); the
            stage's processes were killed and the manifest marks it ``interrupted``.
        pneumoloc.runs.lock.RunLocked: another ``pneumoloc run`` is executing in the run folder.
    """
    spec = load_spec(spec_path, overrides)
    root = Path(run_dir) if run_dir else spec.run_dir
    paths = RunPaths(root=root.resolve(), figures=Path(figures_dir or FIGURES_DIR / spec.name).resolve()).ensure()
    chosen = {s.name for s in select_stages(spec.stages, only, start)}
    with _stop_signals() as stop, run_lock(paths.root):
        previous = _previous_manifest(paths.manifest)
        done = {s.get("name"): s for s in previous.get("stages", []) if isinstance(s, dict)}
        manifest = _new_manifest(spec, previous, chosen)
        save_json(paths.manifest, manifest)
        try:
            failure = _run_stages(spec, paths, manifest, done, chosen, force, stop)
        except _Stopped as stopped:
            _finish(paths, manifest, "interrupted", f"stopped by {stopped}")
            raise RunInterrupted(stopped.signum, f"{spec.name} interrupted by {stopped} {stopped.where}; "
                                 f"papermill and its kernel were killed; manifest: {paths.manifest}") from None
        except BaseException as e:
            _finish(paths, manifest, "failed", f"the runner stopped: {type(e).__name__}: {e}")
            raise
        _finish(paths, manifest, "failed" if failure else "ok")
    if failure:
        raise RunFailed(failure)
    return manifest
