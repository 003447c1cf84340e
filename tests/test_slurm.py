"""The Slurm executor against a real scheduler: a single-node Slurm started on this machine
(tests/local_slurm.py) when ``slurm-wlm`` and ``munge`` are installed; without them these tests
skip and say why (``.ci/run`` installs both, so CI always runs them)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from local_slurm import LocalSlurm, missing_daemons
from notebook_factory import write_notebook

from pneumoloc.runs import spec as runspec
from pneumoloc.runs.runner import RunFailed, run_spec
from pneumoloc.runs.slurm import StageJob, sbatch_parameters

MISSING = missing_daemons()
needs_slurm = pytest.mark.skipif(bool(MISSING), reason=f"no local Slurm: {MISSING} not installed "
                                 "(apt-get install -y slurm-wlm munge; .ci/run does)")
pytestmark = pytest.mark.xdist_group("notebooks")  # shares the tiny inline run with test_notebooks.py

PARAMS = ('run_dir = "x"  # run\nfigures_dir = ""  # figures\nname = "a"  # a name\n'
          'resume = False  # continue from the last checkpoint\n')
WHERE = """import os, pathlib, socket
pathlib.Path(run_dir, f"where_{name}.txt").write_text(f"{os.environ.get('SLURM_JOB_ID')} {socket.gethostname()}")
if name == "bad":
    raise RuntimeError("bad stage")"""


@pytest.fixture(scope="module")
def slurm():
    if MISSING:
        pytest.skip(f"no local Slurm: {MISSING} not installed (apt-get install -y slurm-wlm munge)")
    cluster = LocalSlurm().start()
    before = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)  # sbatch/squeue here and in the jobs
    yield cluster
    cluster.stop()
    if before is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = before


@pytest.fixture
def nbdir(tmp_path, monkeypatch):
    d = tmp_path / "notebooks"
    d.mkdir()
    monkeypatch.setattr(runspec, "NOTEBOOKS_DIR", d)
    monkeypatch.setattr(runspec, "library_hash", lambda: "fixed")
    write_notebook(d / "a_where.ipynb", PARAMS, WHERE)
    write_notebook(d / "c_after.ipynb", PARAMS, "import pathlib\npathlib.Path(run_dir, 'after.txt').write_text('x')")
    return d


def spec(tmp_path, body):
    p = tmp_path / "spec.yaml"
    p.write_text(body)
    return p


def test_checkpoint_requeues_the_stage_with_resume(tmp_path, nbdir):
    stage = runspec.load_spec(spec(tmp_path, "name: t\nnotebooks:\n  - notebook: a_where\n")).stages[0]
    delayed = StageJob(stage, None).checkpoint()
    assert delayed.function.stage is stage and delayed.function.extra == {"resume": True}
    write_notebook(nbdir / "d_plain.ipynb", 'run_dir = "x"  # run\nfigures_dir = ""  # figures\n', "x = 1")
    plain = runspec.load_spec(spec(tmp_path, "name: t\nnotebooks:\n  - notebook: d_plain\n")).stages[0]
    assert StageJob(plain, None).checkpoint().function.extra == {}  # the notebook declares no resume


def test_sbatch_parameters_come_from_the_resources(tmp_path, nbdir):
    s = runspec.load_spec(spec(tmp_path, "name: t\ntimeout: 600\nresources: {partition: gpu, mem_gb: 1.5}\n"
                                         "notebooks:\n  - notebook: c_after\n    resources: {gpus_per_node: 2}\n"))
    p = sbatch_parameters(s.stages[0], "t", ["17", "18"])
    assert p["partition"] == "gpu" and p["gpus_per_node"] == 2 and p["mem"] == "1536M" and p["time"] == 15
    assert p["dependency"] == "afterok:17:18" and p["additional_parameters"]["signal"] == "USR1@90"


@needs_slurm
def test_stages_become_jobs_and_arrays_chained_by_afterok(tmp_path, nbdir, slurm):
    s = spec(tmp_path, "name: t\nnotebooks:\n  - notebook: a_where\n    foreach: {name: [p, q]}\n"
                       "  - notebook: c_after\n")
    m = run_spec(s, run_dir=tmp_path / "run", figures_dir=tmp_path / "fig", executor="slurm")
    assert m["executor"] == "slurm" and [r["status"] for r in m["stages"]] == ["ok", "ok", "ok"], m["stages"]
    p, q, after = (r["job"] for r in m["stages"])
    assert p["id"].split("_")[0] == q["id"].split("_")[0] != after["id"]  # one array, then its dependent
    assert {p["node"], after["node"]} == {socket.gethostname()}
    assert all(os.path.exists(j["stdout"]) for j in (p, q, after))
    job_id, host = (tmp_path / "run" / "where_q.txt").read_text().split()  # the notebook ran inside the job
    assert host == socket.gethostname() and job_id.isdigit()
    out = subprocess.run([sys.executable, "-m", "pneumoloc.cli", "status", str(tmp_path / "run")],
                         capture_output=True, text=True)
    assert out.returncode == 0 and after["id"] in out.stdout and "executor slurm" in out.stdout


@needs_slurm
def test_a_failed_job_cancels_the_jobs_after_it(tmp_path, nbdir, slurm):
    s = spec(tmp_path, "name: t\nnotebooks:\n  - notebook: a_where\n    foreach: {name: [bad, q]}\n"
                       "  - notebook: c_after\n")
    with pytest.raises(RunFailed, match=r"a_where\[bad\].*failed.*bad stage"):
        run_spec(s, run_dir=tmp_path / "run", figures_dir=tmp_path / "fig", executor="slurm")
    m = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert [r["status"] for r in m["stages"]] == ["failed", "ok", "cancelled"], m["stages"]
    assert "left the queue before it started" in m["stages"][2]["error"]["message"]
    assert not (tmp_path / "run" / "after.txt").exists()
