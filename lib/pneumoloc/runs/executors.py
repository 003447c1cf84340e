"""Executors: how the stages of a run get executed once the runner has planned them.

The runner (:mod:`pneumoloc.runs.runner`) loads the spec, holds the run folder's lock, decides
which stages are up to date and writes the manifest; an executor then runs the rest:

* ``inline`` (default): one stage after another in this process's children;
* ``local``: the stages of one step (:func:`pneumoloc.runs.spec.steps`: a ``foreach``, one stage
  per backbone) do not depend on each other, so up to ``workers`` of them run at once, each pinned to its own GPUs through
  ``CUDA_VISIBLE_DEVICES`` when there are GPUs, and to its share of the CPU threads
  (``OMP_NUM_THREADS``, which torch reads at start-up); steps still run in spec order;
* ``slurm`` (:mod:`pneumoloc.runs.slurm`): every stage becomes a Slurm job submitted with submitit.

Every executor runs a stage through :func:`pneumoloc.runs.stage.execute_stage` and records it in
the manifest through :class:`pneumoloc.runs.manifest.ManifestStore`; each returns the failure
message of the first stage that did not end ``ok`` (later steps are then not run), or ``None``.
"""
from __future__ import annotations

import os
import queue
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

from ..environment import RunPaths
from ..registry import Registry
from .manifest import ManifestStore
from .spec import RunSpec, Stage, steps
from .stage import StopRequest, execute_stage, now

__all__ = ["Plan", "EXECUTORS", "run_stage", "pinned_env", "failure_message"]

Executor = Callable[["Plan"], "str | None"]
EXECUTORS: Registry[Executor] = Registry("executor", modules=("pneumoloc.runs.slurm",))
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass
class Plan:
    """What the runner hands an executor.

    Attributes:
        stages: the stages to execute, in spec order (up-to-date ones are already ``skipped``).
        records: every stage's manifest record by name; an executor updates the ones it runs.
        extra: per stage name, parameters added to the stage's own (``resume=True``).
        workers: how many stages the ``local`` executor runs at once.
    """

    spec: RunSpec
    paths: RunPaths
    store: ManifestStore
    stages: list[Stage]
    records: dict[str, dict[str, Any]]
    stop: StopRequest
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)
    workers: int = 1


def failure_message(stage: Stage, paths: RunPaths, rec: dict[str, Any]) -> str:
    """What ``pneumoloc run`` prints for a stage that did not end ``ok``."""
    error = rec.get("error") or {}
    return f"{stage.name} ({paths.root / stage.output_name}) {rec['status']}: {error.get('message', rec['status'])}"


def run_stage(plan: Plan, stage: Stage, log: TextIO, env: dict[str, str] | None = None,
              note: dict[str, Any] | None = None) -> dict[str, Any]:
    """Execute one stage and record it in the manifest before and after (also when stopped).

    Args:
        log: where papermill's output goes.
        env: environment of papermill and its kernel (see :func:`pinned_env`).
        note: fields added to the stage's record (e.g. the worker's pinning).
    """
    rec = plan.records[stage.name]
    for key in ("reason", "error", "signal", "job", "worker"):
        rec.pop(key, None)
    rec.update(status="running", **(note or {}))
    plan.store.update_stage(stage.name, rec, replace=True)
    print(f"[pneumoloc] {stage.name} ...", file=sys.stderr, flush=True)
    log.write(f"\n=== {now()} {stage.name}\n")
    log.flush()
    try:
        execute_stage(stage, plan.paths, log, rec, plan.stop, env=env, extra=plan.extra.get(stage.name))
    finally:
        plan.store.update_stage(stage.name, rec, replace=True)
    print(f"[pneumoloc] {stage.name}: {rec['status']} in {rec['seconds']} s", file=sys.stderr, flush=True)
    return rec


@EXECUTORS.register("inline")
def run_inline(plan: Plan) -> str | None:
    """One stage after another; the output of every stage goes to ``<run>/run.log``."""
    with open(plan.paths.root / "run.log", "a") as log:
        for stage in plan.stages:
            plan.stop.check()
            rec = run_stage(plan, stage, log)
            if rec["status"] != "ok":
                return failure_message(stage, plan.paths, rec)
    return None


def _visible_gpus() -> list[str]:
    """The GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` when set, else all that torch sees."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def pinned_env(slot: int, workers: int, gpus: list[str], cpus: int) -> dict[str, str]:
    """The environment of worker ``slot`` of ``workers``: its GPUs and its share of CPU threads.

    With at least as many GPUs as workers, each worker gets its own (GPU ``g`` goes to worker
    ``g mod workers``); with fewer, workers share them round-robin. Threads: ``cpus // workers``,
    at least one.
    """
    env = dict(os.environ)
    if gpus:
        own = [g for i, g in enumerate(gpus) if i % workers == slot] or [gpus[slot % len(gpus)]]
        env["CUDA_VISIBLE_DEVICES"] = ",".join(own)
    threads = str(max(1, cpus // workers))
    env.update({var: threads for var in THREAD_VARIABLES})
    return env


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _run_step(plan: Plan, group: list[Stage], gpus: list[str], cpus: int) -> list[dict[str, Any]]:
    """The stages of one step, up to ``plan.workers`` at once; their records, once all ended."""
    workers = min(plan.workers, len(group))
    slots: queue.Queue[int] = queue.Queue()
    for slot in range(workers):
        slots.put(slot)

    def work(stage: Stage) -> dict[str, Any]:
        slot = slots.get()
        try:
            note: dict[str, Any] = {"log": str(Path("logs") / f"{Path(stage.output_name).stem}.log")}
            env = None  # a stage running alone keeps the environment, so it computes what inline does
            if workers > 1:
                env = pinned_env(slot, workers, gpus, cpus)
                note["worker"] = {"slot": slot, "threads": int(env["OMP_NUM_THREADS"]),
                                  "CUDA_VISIBLE_DEVICES": env.get("CUDA_VISIBLE_DEVICES", "")}
            with open(plan.paths.root / note["log"], "a") as log:
                return run_stage(plan, stage, log, env=env, note=note)
        finally:
            slots.put(slot)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pneumoloc-stage") as pool:
        futures = [pool.submit(work, stage) for stage in group]
        results = [f.exception() or f.result() for f in futures]  # waits for every stage
    for result in results:
        if isinstance(result, BaseException):
            raise result  # Stopped (a signal) or a runner error: the runner records it
    return results


@EXECUTORS.register("local")
def run_local(plan: Plan) -> str | None:
    """Up to ``plan.workers`` stages of one step at once, each in its own processes.

    Stages running side by side are pinned (:func:`pinned_env`); a stage running alone keeps this
    process's environment. Each stage writes papermill's output to ``<run>/logs/<stage>.log``
    (interleaved output of concurrent stages would be unreadable). A step runs to its end even
    when one of its stages fails (the others' results are valid); the run then stops before the
    next step.
    """
    gpus = _visible_gpus() if plan.workers > 1 else []
    (plan.paths.root / "logs").mkdir(exist_ok=True)
    for group in steps(plan.stages):
        plan.stop.check()
        for stage, rec in zip(group, _run_step(plan, group, gpus, _cpu_count())):
            if rec["status"] != "ok":
                return failure_message(stage, plan.paths, rec)
    return None
