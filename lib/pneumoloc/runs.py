"""Execute a run spec with papermill and keep an honest ``manifest.json``.

Each stage (one notebook execution) runs papermill in a child process in its own
process group, so a dead kernel or a stage past its timeout is contained: the
runner kills the group, keeps the partly executed notebook on disk and records
what happened. The manifest is rewritten atomically after every stage with the
parameters, git commit, package versions, timings and status of each stage
(``ok``, ``skipped`` (up to date), ``failed``, ``timeout``, ``not run``). The first
failure stops the run (later notebooks read its artifacts) and the command exits
non-zero naming the notebook and the cell.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .paths import FIGURES_DIR, PROJECT_ROOT, RunPaths
from .provenance import git_commit, package_versions
from .runspec import RunSpec, Stage, load_spec
from .storage import load_json, save_json

__all__ = ["run_spec", "select_stages", "first_error", "RunFailed"]


class RunFailed(RuntimeError):
    """A stage failed, timed out or its kernel died; the message names notebook and cell."""


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


def first_error(notebook: Path) -> dict[str, Any] | None:
    """The first code cell of an executed notebook with an error output.

    ``cell`` counts code cells of the *source* notebook from 1 (papermill's injected
    parameters cell is not counted), so it points at the cell a researcher edits.
    """
    import nbformat

    if not notebook.exists():
        return None
    nb = nbformat.read(notebook, as_version=4)
    code_index = 0
    for cell in nb.cells:
        if cell.cell_type != "code" or "injected-parameters" in cell.metadata.get("tags", []):
            continue
        code_index += 1
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return {"cell": code_index, "ename": out.get("ename"), "evalue": out.get("evalue"),
                        "source": cell.source[:200]}
    return None


def _execute(stage: Stage, paths: RunPaths, log) -> dict[str, Any]:
    output = paths.root / stage.output_name
    params = {**stage.parameters, "run_dir": str(paths.root), "figures_dir": str(paths.figures)}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        json.dump(params, f)  # JSON is YAML
    cmd = [sys.executable, "-m", "papermill", str(stage.notebook), str(output), "-f", f.name,
           "--cwd", str(paths.root), "--kernel", "python3", "--no-progress-bar", "--log-level", "WARNING"]
    started = time.time()
    record = {"started": _now(), "output": output.name, "parameters": params}
    proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, start_new_session=True, stdout=log, stderr=log)
    try:
        code = proc.wait(timeout=stage.timeout)
        status = "ok" if code == 0 else "failed"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        status = "timeout"
    finally:
        os.unlink(f.name)
    record.update(ended=_now(), seconds=round(time.time() - started, 1), status=status)
    if status != "ok":
        err = first_error(output)
        if status == "timeout":
            record["error"] = {"message": f"exceeded the timeout of {stage.timeout:.0f} s", **(err or {})}
        elif err is None:
            record["error"] = {"message": f"papermill exited with {code} without an error cell "
                                          "(kernel died or could not start); see run.log"}
        else:
            record["error"] = {"message": f"code cell {err['cell']}: {err['ename']}: {err['evalue']}", **err}
    return record


def run_spec(spec_path: str | Path, only: list[str] | None = None, start: str | None = None,
             force: bool = False, run_dir: str | Path | None = None,
             figures_dir: str | Path | None = None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Execute the stages of a spec; returns the manifest.

    Args:
        spec_path: ``papermill_runs/<name>.yaml``.
        only, start: run part of the spec (see :func:`select_stages`).
        force: rerun stages even when their fingerprint is unchanged.
        run_dir, figures_dir: override ``papermill_runs/<name>`` and ``figures/<name>``.
        overrides: parameters that win over the spec's (see :func:`runspec.load_spec`).

    Raises:
        RunFailed: a stage failed; the manifest and the executed notebook stay on disk.
    """
    from tqdm.auto import tqdm

    spec = load_spec(spec_path, overrides)
    root = Path(run_dir) if run_dir else spec.run_dir
    paths = RunPaths(root=root.resolve(), figures=Path(figures_dir or FIGURES_DIR / spec.name).resolve()).ensure()
    previous = load_json(paths.manifest) if paths.manifest.exists() else {}
    done = {s["name"]: s for s in previous.get("stages", [])}
    chosen = {s.name for s in select_stages(spec.stages, only, start)}
    manifest = {
        "run": spec.name, "spec": str(spec.path), "spec_content": spec.raw, "git_commit": git_commit(),
        "versions": package_versions(), "started": _now(), "ended": None, "status": "running",
        "stages": [{"name": s.name, "notebook": s.notebook.name, "fingerprint": s.fingerprint,
                    "status": "not run", **({k: v for k, v in done.get(s.name, {}).items()
                                             if k not in ("name", "notebook", "fingerprint", "status")})}
                   for s in spec.stages],
    }
    # stages not selected keep their previous status
    for rec in manifest["stages"]:
        if rec["name"] not in chosen and rec["name"] in done:
            rec["status"] = done[rec["name"]]["status"]
            rec["fingerprint"] = done[rec["name"]]["fingerprint"]
    save_json(paths.manifest, manifest)
    failure = None
    with open(paths.root / "run.log", "a") as log:
        for stage, rec in tqdm(list(zip(spec.stages, manifest["stages"])), desc=f"run {spec.name}", unit="nb"):
            if stage.name not in chosen:
                continue
            prev = done.get(stage.name, {})
            if (not force and prev.get("status") in ("ok", "skipped") and prev.get("fingerprint") == stage.fingerprint
                    and (paths.root / stage.output_name).exists()):
                rec["status"] = "skipped"
                rec["reason"] = "inputs and parameters unchanged since the last successful execution"
                continue
            print(f"[pneumoloc] {stage.name} ...", file=sys.stderr, flush=True)
            log.write(f"\n=== {_now()} {stage.name}\n")
            log.flush()
            rec.pop("reason", None)
            rec.pop("error", None)
            rec.update(_execute(stage, paths, log))
            print(f"[pneumoloc] {stage.name}: {rec['status']} in {rec['seconds']} s", file=sys.stderr, flush=True)
            save_json(paths.manifest, manifest)
            if rec["status"] != "ok":
                failure = f"{stage.name} ({paths.root / stage.output_name}) {rec['status']}: {rec['error']['message']}"
                break
    manifest.update(ended=_now(), status="failed" if failure else "ok")
    save_json(paths.manifest, manifest)
    if failure:
        raise RunFailed(failure)
    return manifest
