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
from notebook_factory import notebook_dir, write_notebook, write_spec

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
    return notebook_dir(tmp_path, monkeypatch, PARAMS, {
        "a_where": (WHERE,),
        "c_after": ("import pathlib\npathlib.Path(run_dir, 'after.txt').write_text('x')",),
    })


def test_checkpoint_requeues_the_stage_with_resume(tmp_path, nbdir):
    stage = runspec.load_spec(write_spec(tmp_path, "name: t\nnotebooks:\n  - notebook: a_where\n")).stages[0]
    delayed = StageJob(stage, None).checkpoint()
    assert delayed.function.stage is stage and delayed.function.extra == {"resume": True}
    write_notebook(nbdir / "d_plain.ipynb", 'run_dir = "x"  # run\nfigures_dir = ""  # figures\n', "x = 1")
    plain = runspec.load_spec(write_spec(tmp_path, "name: t\nnotebooks:\n  - notebook: d_plain\n")).stages[0]
    assert StageJob(plain, None).checkpoint().function.extra == {}  # the notebook declares no resume


def test_a_stale_queue_state_never_overwrites_a_jobs_outcome(tmp_path):
    from pneumoloc.runs.manifest import ManifestStore
    from pneumoloc.runs.slurm import _note_queue_state

    store = ManifestStore(tmp_path / "manifest.json")
    store.write({"stages": [{"name": "a", "status": "ok", "job": {"id": "7", "state": "COMPLETED"}},
                            {"name": "b", "status": "pending", "job": {"id": "8", "state": "PENDING"}}]})
    _note_queue_state(store, "a", "7", "RUNNING", "node1")  # read from squeue just before the job ended
    _note_queue_state(store, "b", "8", "RUNNING", "node2")
    a, b = store.read()["stages"]
    assert a["job"]["state"] == "COMPLETED" and b["job"] == {"id": "8", "state": "RUNNING", "node": "node2"}


def test_sbatch_parameters_come_from_the_resources(tmp_path, nbdir):
    s = runspec.load_spec(write_spec(tmp_path, "name: t\ntimeout: 600\nresources: {partition: gpu, mem_gb: 1.5}\n"
                                         "notebooks:\n  - notebook: c_after\n    resources: {gpus_per_node: 2}\n"))
    p = sbatch_parameters(s.stages[0], "t", ["17", "18"])
    assert p["partition"] == "gpu" and p["gpus_per_node"] == 2 and p["mem"] == "1536M" and p["time"] == 15
    assert p["dependency"] == "afterok:17:18" and p["additional_parameters"]["signal"] == "USR1@90"


@needs_slurm
def test_stages_become_jobs_and_arrays_chained_by_afterok(tmp_path, nbdir, slurm):
    s = write_spec(tmp_path, "name: t\nnotebooks:\n  - notebook: a_where\n    foreach: {name: [p, q]}\n"
                       "  - notebook: a_where\n    foreach: {name: [r]}\n    resources: {cpus_per_task: 1}\n"
                       "  - notebook: c_after\n")
    m = run_spec(s, run_dir=tmp_path / "run", figures_dir=tmp_path / "fig", executor="slurm")
    assert m["executor"] == "slurm" and [r["status"] for r in m["stages"]] == ["ok"] * 4, m["stages"]
    p, q, r, after = (r["job"] for r in m["stages"])
    assert {j["state"] for j in (p, q, r, after)} == {"COMPLETED"}
    array = p["id"].split("_")[0]
    assert array == q["id"].split("_")[0] and len({array, r["id"], after["id"]}) == 3  # an array, a job, then
    script = {j: (tmp_path / "run" / "slurm" / f"{j}_submission.sh").read_text() for j in (array, r["id"], after["id"])}
    assert "--dependency" not in script[array] + script[r["id"]]  # one step: both entries at once
    assert f"#SBATCH --dependency=afterok:{array}:{r['id']}" in script[after["id"]]
    assert "#SBATCH --cpus-per-task=1" in script[r["id"]] and "--signal=USR1@90" in script[array]
    assert {p["node"], after["node"]} == {socket.gethostname()}
    assert all(os.path.exists(j["stdout"]) for j in (p, q, after))
    job_id, host = (tmp_path / "run" / "where_q.txt").read_text().split()  # the notebook ran inside the job
    assert host == socket.gethostname() and job_id.isdigit()
    out = subprocess.run([sys.executable, "-m", "pneumoloc.cli", "status", str(tmp_path / "run")],
                         capture_output=True, text=True)
    assert out.returncode == 0 and after["id"] in out.stdout and "executor slurm" in out.stdout


@needs_slurm
def test_a_failed_job_cancels_the_jobs_after_it(tmp_path, nbdir, slurm):
    s = write_spec(tmp_path, "name: t\nnotebooks:\n  - notebook: a_where\n    foreach: {name: [bad, q]}\n"
                       "  - notebook: c_after\n")
    with pytest.raises(RunFailed, match=r"a_where\[bad\].*failed.*bad stage"):
        run_spec(s, run_dir=tmp_path / "run", figures_dir=tmp_path / "fig", executor="slurm")
    m = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert [r["status"] for r in m["stages"]] == ["failed", "ok", "cancelled"], m["stages"]
    assert "left the queue before it started" in m["stages"][2]["error"]["message"]
    assert not (tmp_path / "run" / "after.txt").exists()


@needs_slurm
def test_jobs_of_a_killed_runner_block_a_new_submission(tmp_path, nbdir, slurm):
    """A runner killed with SIGKILL leaves its jobs queued; a new run of the folder refuses (exit 75)
    instead of submitting the same stages twice, and names the jobs to wait for or cancel."""
    write_notebook(nbdir / "s_slow.ipynb", PARAMS, "import time\ntime.sleep(120)")
    s = write_spec(tmp_path, "name: t\nnotebooks:\n  - notebook: s_slow\n")
    args = [str(s), "--executor", "slurm", "--run-dir", str(tmp_path / "run"), "--figures-dir", str(tmp_path / "f")]
    cli = ("import sys; from pathlib import Path; from pneumoloc import cli; from pneumoloc.runs import spec\n"
           "spec.NOTEBOOKS_DIR = Path(sys.argv[1]); spec.library_hash = lambda: 'fixed'\n"
           "sys.exit(cli.main(sys.argv[2:]))")
    first = subprocess.Popen([sys.executable, "-c", cli, str(nbdir), "run", *args],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    manifest = tmp_path / "run" / "manifest.json"
    deadline = time.time() + 120
    while not (manifest.exists() and json.loads(manifest.read_text())["stages"][0].get("job")):
        assert first.poll() is None and time.time() < deadline, "the first run did not submit"
        time.sleep(0.2)
    job = json.loads(manifest.read_text())["stages"][0]["job"]["id"]
    first.kill()
    first.wait()
    try:
        second = subprocess.run([sys.executable, "-c", cli, str(nbdir), "run", *args], capture_output=True, text=True,
                                timeout=300)
        assert second.returncode == 75, second.stderr
        assert f"{job} (s_slow)" in second.stderr and f"scancel {job}" in second.stderr
    finally:
        subprocess.run(["scancel", job], capture_output=True)


# Waits for the preemption signal on its first execution; a requeued execution (resume=True) ends at once.
PREEMPTED = """import pathlib, time
pathlib.Path(run_dir, "started.txt").write_text("")
if not resume:
    time.sleep(120)
pathlib.Path(run_dir, "resume.txt").write_text(str(resume))"""


@needs_slurm
def test_preemption_signal_checkpoints_and_requeues_with_resume(tmp_path, nbdir, slurm):
    """Slurm's warning signal (USR1, as ``--signal`` sends it before the time limit): submitit calls
    StageJob.checkpoint, requeues the job, and the stage runs again with resume=True."""
    import threading

    write_notebook(nbdir / "p_preempted.ipynb", PARAMS, PREEMPTED)
    s = write_spec(tmp_path, "name: t\nnotebooks:\n  - notebook: p_preempted\n")
    result = {}
    runner = threading.Thread(target=lambda: result.update(m=run_spec(
        s, run_dir=tmp_path / "run", figures_dir=tmp_path / "fig", executor="slurm")))
    runner.start()
    deadline = time.time() + 120
    while not (tmp_path / "run" / "started.txt").exists():
        assert runner.is_alive() and time.time() < deadline, "the stage did not start"
        time.sleep(0.2)
    job = json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"][0]["job"]["id"]
    subprocess.run(["scancel", "--signal=USR1", job], check=True, capture_output=True)
    runner.join(300)
    assert not runner.is_alive() and "m" in result, "the run did not finish"
    rec = result["m"]["stages"][0]
    assert rec["status"] == "ok" and rec["job"]["id"] == job and rec["parameters"]["resume"] is True
    assert (tmp_path / "run" / "resume.txt").read_text() == "True"


# Artifacts that must be equal between the inline and the Slurm run; timing columns/keys aside, as well as
# provenance (the git commit may move between the two runs) and checkpoint hashes (a checkpoint also
# stores each epoch's training time: its weights are compared instead).
COMPARED = ["data/images.csv", "models/resnet18/predictions.csv", "models/mobilenet_v3/predictions.csv",
            "models/resnet18/history.csv", "models/mobilenet_v3/history.csv"]
VOLATILE = ("seconds", "per_s", "latency", "sha256", "provenance")
SLURM_STAGES = ("01_", "02_")  # the tiny spec's stages run on Slurm: a job, then an array requeued mid-training


def _tiny_spec_up_to_training(folder):
    """papermill_runs/tiny.yaml cut after notebook 02, written into ``folder``.

    What the Slurm executor adds is the same for every stage (a job per stage, an array per
    ``foreach``, afterok chaining; covered stage by stage on toy notebooks above); what only a
    real stage shows is a training job requeued mid-epoch and resumed from ``last.pt``. Later
    stages would rerun notebooks 03-06 inside jobs at several minutes' cost and prove nothing more.
    """
    import yaml

    from pneumoloc.environment import RUNS_DIR

    spec = yaml.safe_load((RUNS_DIR / "tiny.yaml").read_text())
    spec["notebooks"] = [nb for nb in spec["notebooks"] if nb["notebook"].startswith(SLURM_STAGES)]
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _without_volatile(obj):
    if isinstance(obj, dict):
        return {k: _without_volatile(v) for k, v in obj.items() if not any(t in k for t in VOLATILE)}
    if isinstance(obj, list):
        return [_without_volatile(v) for v in obj]
    return obj


def _assert_same_artifacts(expected, actual):
    import pandas as pd
    import torch

    from pneumoloc.storage import load_torch

    # Both runs import the library from the working tree: an edit between them also changes results.
    made_by = [json.loads((root / "models" / "resnet18" / "metrics.json").read_text())["provenance"]["git_commit"]
               for root in (expected, actual)]
    for name in COMPARED:
        a, b = (pd.read_csv(root / name, dtype={"image_id": str, "patient_id": str}) for root in (expected, actual))
        keep = [c for c in a.columns if not any(t in c for t in VOLATILE)]
        pd.testing.assert_frame_equal(a[keep], b[keep], check_exact=True,
                                      obj=f"{name} (inline run at {made_by[0]}, Slurm run at {made_by[1]})")
    for backbone in ("resnet18", "mobilenet_v3"):
        a, b = (json.loads((root / "models" / backbone / "metrics.json").read_text()) for root in (expected, actual))
        assert _without_volatile(a) == _without_volatile(b), f"models/{backbone}/metrics.json differs"
        a, b = (load_torch(root / "models" / backbone / "best.pt")["model_state"] for root in (expected, actual))
        assert all(torch.equal(a[k], b[k]) for k in a), f"models/{backbone}/best.pt weights differ"


def _wait_for(path, proc, timeout):
    deadline = time.time() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"pneumoloc run exited with {proc.returncode} early: {proc.stderr.read()}")
        assert time.time() < deadline, f"{path} did not appear within {timeout} s"
        time.sleep(0.1)


@needs_slurm
@pytest.mark.slow
@pytest.mark.notebooks
def test_tiny_spec_on_slurm_equals_inline_after_a_requeue_mid_training(tmp_path, slurm, tiny_run):
    """``pneumoloc run --executor slurm`` on the tiny spec up to training (01, 02 for two
    backbones): resnet18's job is requeued (``scontrol requeue``) once its first epoch is
    checkpointed; the run still ends with the split, predictions, metrics and weights of the
    inline run."""
    inline_root, _ = tiny_run
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "pneumoloc.cli", "run", str(_tiny_spec_up_to_training(tmp_path)),
                             "--executor", "slurm", "--run-dir", str(run), "--figures-dir", str(tmp_path / "fig"),
                             "--set", f"data_root={inline_root / 'phantom'}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(run / "models" / "resnet18" / "last.pt", proc, timeout=600)
        rec = next(r for r in json.loads((run / "manifest.json").read_text())["stages"]
                   if r["name"] == "02_train_backbone[resnet18]")
        assert rec["status"] == "running", rec
        subprocess.run(["scontrol", "requeue", rec["job"]["id"]], check=True, capture_output=True)
        out, err = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    m = json.loads((run / "manifest.json").read_text())
    assert [r["status"] for r in m["stages"]] == ["ok"] * 3, m["stages"]
    requeued = next(r for r in m["stages"] if r["name"] == "02_train_backbone[resnet18]")
    assert requeued["job"]["id"] == rec["job"]["id"] and requeued["job"]["restarts"] >= 1
    assert requeued["parameters"]["resume"] is True  # the requeued job continued from last.pt
    assert all(r["job"]["id"] for r in m["stages"])
    _assert_same_artifacts(inline_root / "run", run)


def test_without_slurm_commands_the_slurm_executor_says_where_to_run(tmp_path, nbdir, monkeypatch, capsys):
    from pneumoloc import cli

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    s = write_spec(tmp_path, "name: t\nnotebooks:\n  - notebook: c_after\n")
    code = cli.main(["run", str(s), "--executor", "slurm", "--run-dir", str(tmp_path / "run"),
                     "--figures-dir", str(tmp_path / "f")])
    assert code == 2 and "needs Slurm's sbatch, squeue, scancel, scontrol on PATH" in capsys.readouterr().err
