"""Execute a run spec and keep an honest ``manifest.json``.

The runner loads and checks the spec, holds the run folder (one runner at a time,
:mod:`pneumoloc.runs.lock`), decides which stages are up to date and hands the rest to an
executor (:mod:`pneumoloc.runs.executors`: ``inline``, ``local``, ``slurm``), which runs each
stage through :mod:`pneumoloc.runs.stage`. The manifest holds the parameters, git commit,
package versions, executor, timings and status of each stage (``pending`` (queued on Slurm),
``running``, ``ok``, ``skipped`` (up to date), ``failed``, ``timeout``, ``interrupted``,
``cancelled``, ``not run``), and is updated by whoever runs a stage, under a lock
(:mod:`pneumoloc.runs.manifest`). The first failure stops the run (later notebooks read its
artifacts) and the command exits non-zero naming the notebook and the cell.

SIGINT (Ctrl-C) and SIGTERM stop the run the same way a timeout stops a stage:
papermill and its kernel are killed (Slurm jobs are cancelled), the stage and the run are
marked ``interrupted`` and :class:`RunInterrupted` carries the signal (``pneumoloc run``
exits 128 + signal number: 130, 143). An executed notebook cut short mid-write is reported
as unreadable and its stage is executed again on the next run.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ..environment import FIGURES_DIR, RunPaths, git_commit, package_versions
from ..storage import load_json
from .check import CheckFailed, check_spec
from .executors import EXECUTORS, Plan
from .lock import run_lock
from .manifest import ManifestStore
from .spec import RunSpec, Stage, load_spec
from .stage import Stopped, now, read_executed, resume_parameters, stop_signals

__all__ = ["run_spec", "check_run", "select_stages", "RunFailed", "RunInterrupted"]


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
        "versions": package_versions(), "started": now(), "ended": None, "status": "running",
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
            if rec["status"] in ("running", "pending"):
                rec.update(status="interrupted", error={"message": "its runner ended without recording the "
                                                                   "outcome (killed with SIGKILL or a crash)"})
    return manifest


# Previous states of a stage that began and did not finish: --resume lets it continue.
_STARTED = ("failed", "timeout", "interrupted", "running")


def _plan_stages(spec: RunSpec, paths: RunPaths, records: dict[str, dict[str, Any]], done: dict[str, Any],
                 chosen: set[str], force: bool, resume: bool) -> tuple[list[Stage], dict[str, dict[str, Any]]]:
    """The chosen stages that are not up to date (the others are marked ``skipped``), and the
    parameters each adds: with ``resume``, a stage that did not finish with these same inputs
    continues from its last checkpoint (:func:`pneumoloc.runs.stage.resume_parameters`)."""
    to_run, extra = [], {}
    for stage in spec.stages:
        if stage.name not in chosen:
            continue
        prev = done.get(stage.name, {})
        if not force and _up_to_date(stage, prev, paths):
            records[stage.name].update(status="skipped",
                                       reason="inputs and parameters unchanged since the last successful execution")
            continue
        to_run.append(stage)
        if resume and prev.get("fingerprint") == stage.fingerprint and prev.get("status") in _STARTED:
            extra[stage.name] = resume_parameters(stage)
    return to_run, extra


def _finish(store: ManifestStore, status: str, reason: str | None = None) -> dict[str, Any]:
    """Close the manifest: run status, end time, and no stage left ``running`` or ``pending``."""
    def change(manifest: dict[str, Any]) -> None:
        for rec in manifest["stages"]:
            if rec["status"] in ("running", "pending"):
                rec.update(status=status, ended=now())
                rec.setdefault("error", {"message": reason or status})
        manifest.update(ended=now(), status=status)

    return store.update(change)


def check_run(spec_path: str | Path, executor: str = "inline", workers: int = 1,
              overrides: dict[str, Any] | None = None) -> str:
    """Validate a spec without running anything and return the plan (``pneumoloc run SPEC --check``):
    keys, parameters, timeouts and resources (:func:`pneumoloc.runs.spec.load_spec`), the executor,
    then the dataset's layout, the weights and the expected time (:mod:`pneumoloc.runs.check`).

    Raises:
        ValueError: the executor or ``workers`` is invalid; the message says how to fix it.
        pneumoloc.runs.check.CheckFailed: the spec is invalid, or its data or weights are not
            there; it lists every problem found.
    """
    EXECUTORS.lookup(executor)
    _check_workers(executor, workers)
    try:
        spec = load_spec(spec_path, overrides)
    except ValueError as e:
        raise CheckFailed(spec_path, [str(e)]) from e
    lines = [f"{spec.path}: {len(spec.stages)} stages, executor {executor}"
             + (f" with {workers} workers" if executor == "local" else "")]
    for stage in spec.stages:
        res = ", ".join(f"{k}={v}" for k, v in sorted(stage.resources.items()))
        lines.append(f"  entry {stage.entry}  {stage.name}  timeout {stage.timeout:.0f} s"
                     + (f"  resources: {res}" if res and executor == "slurm" else ""))
    return "\n".join(lines + check_spec(spec))


def _check_workers(executor: str, workers: int) -> None:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"--workers {workers!r} must be a whole number >= 1")
    if workers > 1 and executor != "local":
        raise ValueError(f"--workers {workers} applies to --executor local only (got --executor {executor}); "
                         "Slurm runs as many jobs at once as the cluster allows")


def run_spec(spec_path: str | Path, only: list[str] | None = None, start: str | None = None,
             force: bool = False, run_dir: str | Path | None = None,
             figures_dir: str | Path | None = None, overrides: dict[str, Any] | None = None,
             executor: str = "inline", workers: int = 1, resume: bool = False) -> dict[str, Any]:
    """Execute the stages of a spec; returns the manifest.

    Args:
        spec_path: ``papermill_runs/<name>.yaml``.
        only, start: run part of the spec (see :func:`select_stages`).
        force: rerun stages even when their fingerprint is unchanged.
        run_dir, figures_dir: override ``papermill_runs/<name>`` and ``figures/<name>``.
        overrides: parameters that win over the spec's (see :func:`pneumoloc.runs.spec.load_spec`).
        executor: ``inline``, ``local`` or ``slurm`` (:mod:`pneumoloc.runs.executors`).
        workers: stages the ``local`` executor runs at once.
        resume: stages that failed or were interrupted with unchanged inputs continue from their
            last checkpoint instead of starting over (up-to-date stages are skipped as always).

    Raises:
        RunFailed: a stage failed; the manifest and the executed notebook stay on disk.
        RunInterrupted: SIGINT or SIGTERM arrived (called from the main thread); the
            stage's processes were killed (Slurm jobs cancelled) and the manifest marks it ``interrupted``.
        pneumoloc.runs.lock.RunLocked: another ``pneumoloc run`` is executing in the run folder.
    """
    run_executor = EXECUTORS.lookup(executor)
    _check_workers(executor, workers)
    spec = load_spec(spec_path, overrides)
    root = Path(run_dir) if run_dir else spec.run_dir
    paths = RunPaths(root=root.resolve(), figures=Path(figures_dir or FIGURES_DIR / spec.name).resolve()).ensure()
    chosen = {s.name for s in select_stages(spec.stages, only, start)}
    store = ManifestStore(paths.manifest)
    with stop_signals() as stop, run_lock(paths.root):
        previous = _previous_manifest(paths.manifest)
        done = {s.get("name"): s for s in previous.get("stages", []) if isinstance(s, dict)}
        manifest = _new_manifest(spec, previous, chosen)
        manifest.update(executor=executor, workers=workers, run_dir=str(paths.root))
        records = {rec["name"]: rec for rec in manifest["stages"]}
        to_run, extra = _plan_stages(spec, paths, records, done, chosen, force, resume)
        store.write(manifest)
        plan = Plan(spec, paths, store, to_run, records, stop, extra, workers)
        try:
            failure = run_executor(plan)
        except Stopped as stopped:
            _finish(store, "interrupted", f"stopped by {stopped}")
            raise RunInterrupted(stopped.signum, f"{spec.name} interrupted by {stopped} {stopped.where}; "
                                 f"papermill and its kernel were killed; manifest: {paths.manifest}") from None
        except BaseException as e:
            _finish(store, "failed", f"the runner stopped: {type(e).__name__}: {e}")
            raise
        manifest = _finish(store, "failed" if failure else "ok")
    if failure:
        raise RunFailed(failure)
    return manifest
