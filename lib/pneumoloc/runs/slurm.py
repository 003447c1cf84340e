"""The Slurm executor: every stage a Slurm job submitted with submitit, chained by ``afterok``.

Each notebook entry of the spec becomes one job, or one job array when it has a ``foreach``
(one task per backbone), all submitted at once with ``--dependency=afterok:<jobs of the step
before>`` (https://slurm.schedmd.com/sbatch.html#OPT_dependency; steps:
:func:`pneumoloc.runs.spec.steps`): the backbones of 02 train in parallel, also when they
are split over several entries for different resources, 03 starts when all of them succeeded,
and with ``--kill-on-invalid-dep=yes`` the jobs after a failed one are cancelled by Slurm
instead of waiting forever. Options come from the stage's
``resources`` (:mod:`pneumoloc.runs.resources`). submitit pickles each job (a :class:`StageJob`)
and its logs into ``<run>/slurm/``.

Each job executes its stage like the inline executor does (:func:`pneumoloc.runs.stage.execute_stage`)
and writes its own record in the run's manifest (job id, node, restarts, log paths, state),
under the manifest's lock. ``pneumoloc run`` waits, reading the queue (``squeue``) and the
manifest, and cancels its jobs (``scancel``) when it is stopped by SIGINT/SIGTERM.

Preemption and time limits: jobs are submitted with ``--requeue`` and ``--signal=USR1@90``,
and ``SUBMITIT_PREEMPT_SIGNAL=USR1`` makes submitit's handler call :meth:`StageJob.checkpoint`
on that signal, which returns the same stage with ``resume=True``; submitit then requeues the
job (submitit docs, "Checkpointing"). A job requeued by Slurm itself (``scontrol requeue``,
preemption with ``PreemptMode=REQUEUE``) gets SIGTERM, which stops the stage like Ctrl-C, and
starts again with ``SLURM_RESTART_COUNT`` > 0, which also means ``resume=True``. Training writes
``last.pt`` after every epoch and resumes bitwise (:mod:`pneumoloc.training.loop`), so a requeued
stage ends with the results of an uninterrupted one.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from itertools import groupby
from pathlib import Path
from typing import Any

import submitit

from ..environment import RunPaths
from .executors import EXECUTORS, Plan, failure_message
from .lock import RunLocked
from .manifest import FINAL_STATES, ManifestStore
from .resources import stage_timeout_min
from .spec import Stage, steps
from .stage import Stopped, execute_stage, now, resume_parameters, stop_signals

__all__ = ["StageJob", "run_slurm", "sbatch_parameters", "PREEMPT_SIGNAL"]

PREEMPT_SIGNAL = "USR1"  # sent by Slurm SIGNAL_DELAY_S before the time limit or a preemption
SIGNAL_DELAY_S = 90  # time left to stop the stage cleanly and requeue
_POLL_S = 2.0  # how often the runner reads the queue and the manifest while it waits
SLURM_TOOLS = ("sbatch", "squeue", "scancel", "scontrol")  # submitit submits and requeues with these
_ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"}


class StageJob(submitit.helpers.Checkpointable):
    """One stage as a submitit job: runs it and records it in the manifest from inside the job.

    Args:
        stage: the stage to execute.
        paths: the run's folders (on a file system the cluster's nodes share).
        extra: parameters added to the stage's own (``resume=True`` after an interruption).
    """

    def __init__(self, stage: Stage, paths: RunPaths, extra: dict[str, Any] | None = None) -> None:
        self.stage = stage
        self.paths = paths
        self.extra = dict(extra or {})

    def _job_record(self) -> dict[str, Any]:
        env = submitit.JobEnvironment()
        return {"id": env.job_id, "node": env.hostname, "stdout": str(env.paths.stdout),
                "stderr": str(env.paths.stderr), "restarts": int(os.environ.get("SLURM_RESTART_COUNT", "0")),
                "state": "RUNNING"}

    def __call__(self) -> str:
        """Execute the stage; raises :class:`RuntimeError` (the Slurm job fails) unless it ends ``ok``."""
        job = self._job_record()
        extra = {**self.extra, **(resume_parameters(self.stage) if job["restarts"] else {})}
        store = ManifestStore(self.paths.manifest)
        rec: dict[str, Any] = {"status": "running", "job": job, "error": None, "signal": None}
        store.update_stage(self.stage.name, rec)
        env = dict(os.environ)
        if os.environ.get("SLURM_CPUS_PER_TASK"):  # torch reads it at start-up: use the cores Slurm gave
            env["OMP_NUM_THREADS"] = os.environ["SLURM_CPUS_PER_TASK"]
        logs = self.paths.root / "logs"
        logs.mkdir(exist_ok=True)
        rec["log"] = str(Path("logs") / f"{Path(self.stage.output_name).stem}.log")
        try:
            with stop_signals() as stop, open(self.paths.root / rec["log"], "a") as log:
                log.write(f"\n=== {now()} {self.stage.name} (Slurm job {job['id']} on {job['node']})\n")
                log.flush()
                execute_stage(self.stage, self.paths, log, rec, stop, env=env, extra=extra)
        except Stopped as stopped:  # SIGTERM: Slurm requeues, preempts or cancels the job
            rec["error"] = {"message": f"Slurm sent {stopped}: the job was cancelled, preempted or requeued; "
                                       "a requeued job resumes from the stage's last checkpoint"}
            raise
        finally:
            job["state"] = {"ok": "COMPLETED", "failed": "FAILED", "timeout": "FAILED"}.get(rec["status"], "STOPPED")
            store.update_stage(self.stage.name, rec)
        if rec["status"] != "ok":
            raise RuntimeError(failure_message(self.stage, self.paths, rec))
        return rec["status"]

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """The job to requeue on preemption or time-out: this stage again, continuing from ``last.pt``."""
        return submitit.helpers.DelayedSubmission(
            StageJob(self.stage, self.paths, {**self.extra, **resume_parameters(self.stage)}))


def sbatch_parameters(stage: Stage, run: str, dependency: list[str]) -> dict[str, Any]:
    """``SlurmExecutor.update_parameters`` keywords for a stage (its entry's resources)."""
    res = stage.resources
    params: dict[str, Any] = {
        "job_name": f"{run}:{stage.notebook.stem}",
        "time": stage_timeout_min(res, stage.timeout),
        "signal_delay_s": SIGNAL_DELAY_S,
        "setup": [f"export SUBMITIT_PREEMPT_SIGNAL={PREEMPT_SIGNAL}"],
        "additional_parameters": {"signal": f"{PREEMPT_SIGNAL}@{SIGNAL_DELAY_S}", "requeue": True,
                                  "kill-on-invalid-dep": "yes"},
    }
    for key in ("partition", "account", "qos", "gpus_per_node", "cpus_per_task"):
        if key in res:
            params[key] = res[key]
    if "mem_gb" in res:
        params["mem"] = f"{int(res['mem_gb'] * 1024)}M"
    if dependency:
        params["dependency"] = "afterok:" + ":".join(dependency)
    return params


def _submit_entry(plan: Plan, group: list[Stage], dependency: list[str]) -> list[str]:
    """Submit the stages of one notebook entry, as one job or one job array; returns their job ids."""
    executor = submitit.SlurmExecutor(folder=plan.paths.root / "slurm")
    executor.update_parameters(**sbatch_parameters(group[0], plan.spec.name, dependency))
    jobs_to_run = [StageJob(stage, plan.paths, plan.extra.get(stage.name)) for stage in group]
    if len(group) == 1:
        jobs = [executor.submit(jobs_to_run[0])]
    else:
        with executor.batch():  # one job array
            jobs = [executor.submit(job) for job in jobs_to_run]
    for stage, job in zip(group, jobs):
        rec = plan.records[stage.name]
        for key in ("reason", "error", "signal", "worker"):
            rec.pop(key, None)
        rec.update(status="pending", job={"id": job.job_id, "state": "PENDING", "stdout": str(job.paths.stdout),
                                          "stderr": str(job.paths.stderr)})
        plan.store.update_stage(stage.name, rec, replace=True)
    print(f"[pneumoloc] submitted {[s.name for s in group]} as Slurm job {jobs[0].job_id.split('_')[0]}"
          + (f" after {', '.join(dependency)}" if dependency else ""), file=sys.stderr, flush=True)
    return [job.job_id for job in jobs]


def _submit(plan: Plan) -> dict[str, str]:
    """Submit every stage of the plan, each step after the one before it (``afterok``); the
    entries of one step share its dependency. Returns stage name -> Slurm job id."""
    submitted: dict[str, str] = {}
    dependency: list[str] = []
    for step in steps(plan.stages):
        ids: list[str] = []
        for _, entry in groupby(step, key=lambda s: s.entry):
            group = list(entry)
            job_ids = _submit_entry(plan, group, dependency)
            submitted.update(zip((s.name for s in group), job_ids))
            ids += job_ids
        dependency = sorted({job_id.split("_")[0] for job_id in ids}, key=int)
    return submitted


def _queue() -> dict[str, tuple[str, str]] | None:
    """Our jobs that have not ended: id (array tasks as ``<array>_<task>``) -> (state, node);
    ``None`` when the queue cannot be read. All states are listed (a requeued job shows as
    ``REQUEUED`` or ``PENDING`` under its id) and the ended ones dropped (squeue(1), JOB STATE CODES)."""
    out = subprocess.run(["squeue", "--me", "-h", "-r", "--states=all", "-o", "%i|%T|%N"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        print(f"[pneumoloc] squeue failed ({out.stderr.strip()}); trying again", file=sys.stderr, flush=True)
        return None
    rows = (line.split("|") for line in out.stdout.splitlines() if line.count("|") == 2)
    return {job: (state, node) for job, state, node in rows if state not in _ENDED}


def _lost(rec: dict[str, Any]) -> dict[str, Any]:
    """The record of a job that left the queue without writing its outcome."""
    job = rec.get("job") or {}
    if rec["status"] == "pending":
        return {"status": "cancelled", "ended": now(), "error": {
            "message": f"Slurm job {job.get('id')} left the queue before it started: a stage it depends on "
                       "failed, or it was cancelled (scancel)"}}
    return {"status": "failed", "ended": now(), "error": {
        "message": f"Slurm job {job.get('id')} ended without recording its outcome (killed: memory, wall "
                   f"time or node failure); see {job.get('stderr')}"}}


def _poll(plan: Plan, submitted: dict[str, str]) -> bool:
    """One look at the queue and the manifest; records lost jobs and queue states; True when all ended."""
    queued = _queue()
    if queued is None:
        return False
    manifest = plan.store.read()  # after the queue: a job writes its outcome before it leaves it
    records = {rec["name"]: rec for rec in manifest["stages"]}
    finished = True
    for name, job_id in submitted.items():
        rec = records[name]
        if job_id not in queued:  # a requeued job stays queued under its id, so this one has ended
            if rec["status"] not in FINAL_STATES:
                plan.store.update_stage(name, _lost(rec))
            continue
        finished = False
        if rec.get("job", {}).get("state") != queued[job_id][0]:
            _note_queue_state(plan.store, name, job_id, *queued[job_id])
    return finished


def _note_queue_state(store: ManifestStore, name: str, job_id: str, state: str, node: str) -> None:
    """Record a job's queue state, unless the job has meanwhile written its own outcome (the
    queue was read before the manifest, so the state may already be stale)."""
    def change(manifest: dict[str, Any]) -> None:
        rec = next(r for r in manifest["stages"] if r["name"] == name)
        job = rec.get("job") or {}
        if job.get("id") == job_id and rec["status"] not in FINAL_STATES:
            rec["job"] = {**job, "state": state, "node": node}

    store.update(change)


def _cancel(submitted: dict[str, str], plan: Plan, stopped: Stopped) -> None:
    """Cancel our jobs and record the stages they were running as interrupted."""
    ids = sorted({job_id.split("_")[0] for job_id in submitted.values()})
    subprocess.run(["scancel", *ids], capture_output=True)
    for name in submitted:
        rec = plan.store.read()["stages"]
        status = next(r["status"] for r in rec if r["name"] == name)
        if status not in FINAL_STATES:
            plan.store.update_stage(name, {"status": "interrupted", "ended": now(), "error": {
                "message": f"the runner was stopped by {stopped} and cancelled Slurm job {submitted[name]}"}})
    stopped.where = f"while waiting for Slurm jobs {', '.join(ids)} (cancelled)"


def _refuse_live_jobs(plan: Plan) -> None:
    """Refuse to submit while jobs recorded in the manifest are still queued: their runner was
    killed (the run lock is free) but they still write into the run folder.

    Raises:
        RunLocked: naming the jobs and how to wait for or cancel them (``pneumoloc run`` exits 75).
    """
    recorded = {rec["job"]["id"]: name for name, rec in plan.records.items() if (rec.get("job") or {}).get("id")}
    queued = _queue() if recorded else {}
    if queued is None:
        raise RuntimeError("squeue failed: cannot tell whether this run's earlier Slurm jobs are still queued")
    live = sorted(f"{job} ({name})" for job, name in recorded.items() if job in queued)
    if live:
        ids = " ".join(sorted({job.split("_")[0] for job in recorded if job in queued}))
        raise RunLocked(f"{plan.paths.root}: Slurm jobs of an earlier run are still queued: {', '.join(live)}; "
                           f"wait for them (pneumoloc status {plan.paths.root}) or cancel them (scancel {ids}), "
                           "then run again")


@EXECUTORS.register("slurm")
def run_slurm(plan: Plan) -> str | None:
    """Submit the plan's stages to Slurm and wait for them; the first failure's message, or ``None``.

    Raises:
        ValueError: Slurm's commands are not installed here.
        RunLocked: jobs of an earlier run of this folder are still queued.
    """
    missing = [tool for tool in SLURM_TOOLS if shutil.which(tool) is None]
    if missing:
        raise ValueError(f"--executor slurm needs Slurm's {', '.join(missing)} on PATH: run it on a login "
                         "node of the cluster (or use --executor local on this machine)")
    _refuse_live_jobs(plan)
    if not plan.stages:
        return None
    submitted = _submit(plan)
    try:
        while not _poll(plan, submitted):
            for _ in range(int(_POLL_S / 0.25)):
                plan.stop.check()
                time.sleep(0.25)
    except Stopped as stopped:
        _cancel(submitted, plan, stopped)
        raise
    records = {rec["name"]: rec for rec in plan.store.read()["stages"]}
    plan.records.update(records)
    for stage in plan.stages:
        if records[stage.name]["status"] != "ok":
            return failure_message(stage, plan.paths, records[stage.name])
    return None
