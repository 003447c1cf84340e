"""Executors: the local executor runs a foreach entry's stages at once, pinned; the manifest
takes concurrent updates; --resume continues what failed; status, --check and bad options."""
from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
from datetime import datetime

import pytest
from notebook_factory import notebook_dir, write_notebook, write_spec

from pneumoloc.runs.executors import pinned_env
from pneumoloc.runs.manifest import ManifestStore
from pneumoloc.runs.runner import RunFailed, run_spec

pytestmark = pytest.mark.xdist_group("runs")

PARAMS = ('run_dir = "x"  # run\nfigures_dir = ""  # figures\nname = "a"  # a name\n'
          'resume = False  # continue from the last checkpoint\n')
# Records when it ran and how it was pinned, then takes long enough for two stages to overlap.
PINNED = """import json, os, pathlib, time
start = time.time()
time.sleep(3)
pathlib.Path(run_dir, f"pinned_{name}.json").write_text(json.dumps({
    "start": start, "end": time.time(), "threads": os.environ.get("OMP_NUM_THREADS"),
    "gpus": os.environ.get("CUDA_VISIBLE_DEVICES")}))"""
# Fails until the file `fixed` exists; records the resume parameter it was given.
FLAKY = """import pathlib
pathlib.Path(run_dir, f"resume_{name}.txt").write_text(str(resume))
if name == "bad" and not pathlib.Path(run_dir, "fixed").exists():
    raise RuntimeError("not fixed yet")"""


@pytest.fixture
def nbdir(tmp_path, monkeypatch):
    return notebook_dir(tmp_path, monkeypatch, PARAMS, {
        "a_pinned": (PINNED,),
        "b_flaky": (FLAKY,),
        "c_after": ("import pathlib\npathlib.Path(run_dir, 'after.txt').write_text('x')",),
    })


def _interval(rec):
    return datetime.fromisoformat(rec["started"]), datetime.fromisoformat(rec["ended"])


def test_local_executor_runs_a_foreach_entry_at_once_and_pins_each_stage(tmp_path, nbdir, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU: pinning is by CPU threads only
    s = write_spec(tmp_path, "name: t\nnotebooks:\n  - notebook: a_pinned\n    foreach: {name: [p, q]}\n"
                       "  - notebook: c_after\n")
    m = run_spec(s, run_dir=tmp_path / "run", figures_dir=tmp_path / "fig", executor="local", workers=2)
    assert m["executor"] == "local" and [r["status"] for r in m["stages"]] == ["ok", "ok", "ok"]
    p, q = (json.loads((tmp_path / "run" / f"pinned_{n}.json").read_text()) for n in "pq")
    assert max(p["start"], q["start"]) < min(p["end"], q["end"]), "the two stages did not overlap"
    (p0, p1), (q0, q1), (c0, _) = (_interval(r) for r in m["stages"])
    assert max(p0, q0) < min(p1, q1), "the manifest's start/end times do not overlap"
    assert c0 >= max(p1, q1), "the next entry started before the foreach entry finished"
    threads = str(max(1, len(__import__("os").sched_getaffinity(0)) // 2))
    assert p["threads"] == q["threads"] == threads
    assert {m["stages"][0]["worker"]["slot"], m["stages"][1]["worker"]["slot"]} == {0, 1}
    assert (tmp_path / "run" / m["stages"][0]["log"]).exists()


def test_local_executor_finishes_the_entry_then_stops_at_a_failure(tmp_path, nbdir):
    s = write_spec(tmp_path, "name: t\nnotebooks:\n  - notebook: b_flaky\n    foreach: {name: [bad, good]}\n"
                       "  - notebook: c_after\n")
    with pytest.raises(RunFailed, match=r"b_flaky\[bad\].*failed.*not fixed yet"):
        run_spec(s, run_dir=tmp_path / "run", figures_dir=tmp_path / "fig", executor="local", workers=2)
    m = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert [r["status"] for r in m["stages"]] == ["failed", "ok", "not run"] and m["status"] == "failed"
    assert not (tmp_path / "run" / "after.txt").exists()


def test_resume_reruns_only_what_failed_and_asks_it_to_continue(tmp_path, nbdir):
    s = write_spec(tmp_path, "name: t\nnotebooks:\n  - notebook: b_flaky\n    foreach: {name: [bad, good]}\n"
                       "  - notebook: c_after\n")
    with pytest.raises(RunFailed):
        run_spec(s, run_dir=tmp_path / "run", figures_dir=tmp_path / "fig")
    assert [r["status"] for r in json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]] == \
        ["failed", "not run", "not run"]
    (tmp_path / "run" / "fixed").write_text("")
    m = run_spec(s, run_dir=tmp_path / "run", figures_dir=tmp_path / "fig", resume=True)
    assert [r["status"] for r in m["stages"]] == ["ok", "ok", "ok"]
    assert (tmp_path / "run" / "resume_bad.txt").read_text() == "True"  # it failed: continue
    assert (tmp_path / "run" / "resume_good.txt").read_text() == "False"  # never ran: start
    m2 = run_spec(s, run_dir=tmp_path / "run", figures_dir=tmp_path / "fig", resume=True)
    assert [r["status"] for r in m2["stages"]] == ["skipped"] * 3


@pytest.mark.parametrize("gpus, workers, expected", [
    (["0", "1", "2", "3"], 2, ["0,2", "1,3"]),
    (["0"], 2, ["0", "0"]),
    (["4", "7"], 2, ["4", "7"]),
    ([], 2, [None, None]),
])
def test_pinned_env_gives_each_worker_its_gpus_and_threads(gpus, workers, expected, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    envs = [pinned_env(slot, workers, gpus, cpus=8) for slot in range(workers)]
    assert [e.get("CUDA_VISIBLE_DEVICES") for e in envs] == expected
    assert all(e["OMP_NUM_THREADS"] == "4" for e in envs)


def _hammer(path: str, name: str, n: int) -> None:
    store = ManifestStore(path)
    for i in range(n):
        store.update_stage(name, {"count": i + 1})


def test_manifest_store_loses_no_update_between_processes(tmp_path):
    path = tmp_path / "manifest.json"
    names = [f"s{i}" for i in range(4)]
    ManifestStore(path).write({"stages": [{"name": n, "count": 0} for n in names]})
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_hammer, args=(str(path), n, 40)) for n in names]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [r["count"] for r in json.loads(path.read_text())["stages"]] == [40] * 4


def test_status_check_and_bad_options_from_the_command_line(tmp_path, nbdir, capsys):
    from pneumoloc import cli

    s = write_spec(tmp_path, "name: t\nresources: {cpus_per_task: 2}\nnotebooks:\n  - notebook: c_after\n")
    assert cli.main(["run", str(s), "--check", "--executor", "slurm"]) == 0
    out = capsys.readouterr().out
    assert "c_after" in out and "cpus_per_task=2" in out and not (tmp_path / "run").exists()
    assert cli.main(["run", str(s), "--workers", "2"]) == 2
    assert "--executor local only" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: t\nresources: {gpu: 1}\nnotebooks:\n  - notebook: c_after\n")
    assert cli.main(["run", str(bad), "--check"]) == 2
    assert "unknown keys ['gpu']" in capsys.readouterr().err
    assert cli.main(["run", str(s), "--run-dir", str(tmp_path / "run"), "--figures-dir", str(tmp_path / "f")]) == 0
    capsys.readouterr()
    assert cli.main(["status", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "c_after" in out and "ok" in out and "executor inline" in out
    assert cli.main(["status", str(tmp_path / "nowhere")]) == 2
    assert "no manifest" in capsys.readouterr().err


def test_unknown_executor_lists_the_known_ones(tmp_path, nbdir):
    s = write_spec(tmp_path, "name: t\nnotebooks:\n  - notebook: c_after\n")
    with pytest.raises(ValueError, match="inline.*local.*slurm"):
        run_spec(s, run_dir=tmp_path / "run", figures_dir=tmp_path / "fig", executor="pbs")


def test_run_command_help_names_the_executors():
    out = subprocess.run([sys.executable, "-m", "pneumoloc.cli", "run", "--help"], capture_output=True, text=True)
    assert "--executor" in out.stdout and "--resume" in out.stdout and "--workers" in out.stdout


def test_the_readme_cluster_spec_passes_the_check(tmp_path):
    """The spec snippet of README.md's "Running on a cluster" is a valid spec for the real notebooks."""
    import re

    from pneumoloc.environment import PROJECT_ROOT
    from pneumoloc.runs.runner import check_run

    readme = (PROJECT_ROOT / "README.md").read_text()
    section = readme[readme.index("## Running on a cluster"):]
    (tmp_path / "cluster.yaml").write_text(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))
    from fixtures.kermany import make_kermany

    # --check lists the data: the snippet's /shared/kermany is replaced by a real-layout fixture
    plan = check_run(tmp_path / "cluster.yaml", executor="slurm",
                     overrides={"data_root": str(make_kermany(tmp_path / "kermany"))})
    assert "02_train_backbone[vit_b_16]" in plan and "gpus_per_node=4" in plan


SLEEPER = """import os, pathlib, time
tmp = pathlib.Path(run_dir, f"pid_{name}.tmp")
tmp.write_text(str(os.getpid()))
tmp.rename(pathlib.Path(run_dir, f"pid_{name}.txt"))
time.sleep(120)"""
CLI = ("import sys; from pathlib import Path; from pneumoloc import cli; from pneumoloc.runs import spec as runspec\n"
       "runspec.NOTEBOOKS_DIR = Path(sys.argv[1]); runspec.library_hash = lambda: 'fixed'\n"
       "sys.exit(cli.main(sys.argv[2:]))")


@pytest.mark.slow
def test_sigterm_stops_every_stage_the_local_executor_runs(tmp_path, nbdir):
    import signal
    import time

    import psutil

    write_notebook(nbdir / "s_sleep.ipynb", PARAMS, SLEEPER)
    s = write_spec(tmp_path, "name: t\nnotebooks:\n  - notebook: s_sleep\n    foreach: {name: [p, q]}\n")
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", CLI, str(nbdir), "run", str(s), "--executor", "local",
                             "--workers", "2", "--run-dir", str(run), "--figures-dir", str(tmp_path / "f")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 90
    while not all((run / f"pid_{n}.txt").exists() for n in "pq"):
        assert proc.poll() is None and time.time() < deadline, "the two kernels did not start"
        time.sleep(0.1)
    kernels = [psutil.Process(int((run / f"pid_{n}.txt").read_text())) for n in "pq"]
    try:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 143
        gone, alive = psutil.wait_procs(kernels, timeout=15)
        assert not alive, f"kernels still running: {alive}"
    finally:
        for k in kernels:
            if k.is_running():
                k.kill()
    m = json.loads((run / "manifest.json").read_text())
    assert m["status"] == "interrupted" and [r["status"] for r in m["stages"]] == ["interrupted"] * 2
