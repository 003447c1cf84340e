"""The papermill runner: manifests, failures, timeouts, dead kernels, skipping, selection,
stopping by signal, the run-folder lock and half-written executed notebooks."""
import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from notebook_factory import notebook_dir, write_spec  # noqa: E402

from pneumoloc.runs import spec as runspec  # noqa: E402
from pneumoloc.runs.runner import RunFailed, run_spec, select_stages  # noqa: E402
from pneumoloc.runs.stage import first_error  # noqa: E402

pytestmark = pytest.mark.xdist_group("runs")

PARAMS = 'run_dir = "x"  # run\nfigures_dir = ""  # figures\nvalue = 1  # a number\nname = "a"  # a name\n'


@pytest.fixture
def nbdir(tmp_path, monkeypatch):
    return notebook_dir(tmp_path, monkeypatch, PARAMS, {
        "a_ok": ("import pathlib\npathlib.Path(run_dir, f'out_{name}.txt').write_text(str(value * 2))",),
        "b_fail": ("x = 1", "raise RuntimeError('boom at value %d' % value)",),
        "c_slow": ("import time\ntime.sleep(60)",),
        "d_die": ("import os\nos._exit(1)",),
        "e_pids": (PIDS_CELL,),
    })


# The kernel starts a child (as a DataLoader worker would), records both pids atomically, then sleeps.
PIDS_CELL = """import os, pathlib, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
tmp = pathlib.Path(run_dir, "pids.tmp")
tmp.write_text(f"{os.getpid()} {child.pid}")
tmp.rename(pathlib.Path(run_dir, "pids.txt"))
time.sleep(120)"""

# `pneumoloc run` in a subprocess, reading notebooks from the test's folder.
CLI = ("import sys; from pathlib import Path; from pneumoloc import cli; from pneumoloc.runs import spec as runspec\n"
       "runspec.NOTEBOOKS_DIR = Path(sys.argv[1]); runspec.library_hash = lambda: 'fixed'\n"
       "sys.exit(cli.main(sys.argv[2:]))")


def start_cli(nbdir, *args):
    return subprocess.Popen([sys.executable, "-c", CLI, str(nbdir), "run", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (a killed process stays a zombie until reaped)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def stage_pids():
    """Reads the kernel and kernel-child pids a stage recorded; kills them after the test if they survived."""
    seen = []

    def read(run_dir, runner=None, wait=90.0):
        path = run_dir / "pids.txt"
        deadline = time.time() + wait
        while not path.exists():
            if runner is not None and runner.poll() is not None:
                pytest.fail(f"runner exited with {runner.returncode} before the kernel started: {runner.stderr.read()}")
            assert time.time() < deadline, "the kernel did not record its pid in time"
            time.sleep(0.1)
        pids = [int(x) for x in path.read_text().split()]
        for pid in pids:
            try:
                seen.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                pass
        return pids

    yield read
    for proc in seen:  # is_running() compares creation times, so a reused pid is left alone
        if proc.is_running():
            proc.kill()


def test_runs_notebooks_and_writes_manifest(tmp_path, nbdir):
    s = write_spec(tmp_path, "name: t\nnotebooks:\n  - notebook: a_ok\n    foreach: {name: [p, q]}\n"
                       "    parameters: {value: 3}\n    overrides: {q: {value: 5}}\n")
    m = run_spec(s, run_dir=tmp_path / "run", figures_dir=tmp_path / "fig")
    assert [x["status"] for x in m["stages"]] == ["ok", "ok"]
    assert (tmp_path / "run" / "out_p.txt").read_text() == "6"
    assert (tmp_path / "run" / "out_q.txt").read_text() == "10"
    saved = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert saved["status"] == "ok" and saved["git_commit"] and saved["versions"]["torch"]
    assert saved["stages"][1]["parameters"]["value"] == 5
    assert (tmp_path / "run" / "a_ok__q.ipynb").exists()
    # a rerun with nothing changed skips both stages
    m2 = run_spec(s, run_dir=tmp_path / "run", figures_dir=tmp_path / "fig")
    assert [x["status"] for x in m2["stages"]] == ["skipped", "skipped"]
    # changing one foreach value's parameters reruns only that stage
    s.write_text(s.read_text().replace("value: 5", "value: 7"))
    m3 = run_spec(s, run_dir=tmp_path / "run", figures_dir=tmp_path / "fig")
    assert [x["status"] for x in m3["stages"]] == ["skipped", "ok"]


def test_failing_notebook_is_kept_and_named(tmp_path, nbdir):
    s = write_spec(tmp_path, "name: t\nnotebooks:\n  - notebook: b_fail\n  - notebook: a_ok\n")
    with pytest.raises(RunFailed, match=r"b_fail.*code cell 3: RuntimeError: boom at value 1"):
        run_spec(s, run_dir=tmp_path / "run", figures_dir=tmp_path / "fig")
    m = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert m["status"] == "failed"
    assert [x["status"] for x in m["stages"]] == ["failed", "not run"]
    assert m["stages"][0]["error"]["ename"] == "RuntimeError"
    assert (tmp_path / "run" / "b_fail.ipynb").exists()


def test_timeout_and_dead_kernel(tmp_path, nbdir, stage_pids):
    s = write_spec(tmp_path, "name: t\nnotebooks:\n  - notebook: e_pids\n    timeout: 15\n")
    with pytest.raises(RunFailed, match="timeout"):
        run_spec(s, run_dir=tmp_path / "r1", figures_dir=tmp_path / "fig")
    kernel, child = stage_pids(tmp_path / "r1", wait=0)
    assert not alive(kernel) and not alive(child), "a timed-out stage left its kernel or the kernel's child running"
    m = json.loads((tmp_path / "r1" / "manifest.json").read_text())
    assert m["stages"][0]["status"] == "timeout" and m["status"] == "failed"
    s = write_spec(tmp_path, "name: t\nnotebooks:\n  - notebook: d_die\n")
    with pytest.raises(RunFailed, match="failed"):
        run_spec(s, run_dir=tmp_path / "r2", figures_dir=tmp_path / "fig")
    assert json.loads((tmp_path / "r2" / "manifest.json").read_text())["stages"][0]["status"] == "failed"


@pytest.mark.parametrize("body, message", [
    ("name: t\nnotebooks:\n  - notebook: a_ok\n    parameters: {valeu: 3}\n", "unknown parameters.*valeu"),
    ("name: t\nnotebooks:\n  - notebook: a_ok\n    parameters: {value: 'three'}\n", "value='three' is a str"),
    ("name: t\nnotebookz: []\n", "unknown keys"),
    ("name: t\nnotebooks:\n  - notebook: zz\n", "no notebook zz.ipynb"),
])
def test_spec_errors_name_the_problem(tmp_path, nbdir, body, message):
    with pytest.raises(ValueError, match=message):
        runspec.load_spec(write_spec(tmp_path, body))


def test_only_and_from_select_stages(tmp_path, nbdir):
    s = runspec.load_spec(write_spec(tmp_path, "notebooks:\n  - notebook: a_ok\n    foreach: {name: [p, q]}\n"
                                         "  - notebook: b_fail\n"))
    names = [x.name for x in s.stages]
    assert names == ["a_ok[p]", "a_ok[q]", "b_fail"]
    assert [x.name for x in select_stages(s.stages, only=["a_ok[q]"])] == ["a_ok[q]"]
    assert [x.name for x in select_stages(s.stages, start="a_ok[q]")] == ["a_ok[q]", "b_fail"]
    assert [x.name for x in select_stages(s.stages, only=["a_ok"])] == ["a_ok[p]", "a_ok[q]"]
    with pytest.raises(ValueError, match="match no stage"):
        select_stages(s.stages, only=["zz"])


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_stops_papermill_and_kernel_and_lock_refuses_a_second_run(tmp_path, nbdir, stage_pids, sig, code):
    run, fig = tmp_path / "run", tmp_path / "fig"
    s = write_spec(tmp_path, "name: t\nnotebooks:\n  - notebook: e_pids\n    timeout: 100\n")
    runner = start_cli(nbdir, s, "--run-dir", run, "--figures-dir", fig)
    try:
        kernel, child = stage_pids(run, runner)
        # a second run on the same folder refuses at once, naming the holder
        quick = tmp_path / "quick.yaml"
        quick.write_text("name: t\nnotebooks:\n  - notebook: a_ok\n")
        second = start_cli(nbdir, quick, "--run-dir", run, "--figures-dir", fig)
        out, err = second.communicate(timeout=60)
        assert second.returncode == 75 and f"pid {runner.pid}" in err, err
        assert not (run / "out_a.txt").exists()
        runner.send_signal(sig)
        out, err = runner.communicate(timeout=60)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert runner.returncode == code, err
    assert not alive(kernel), "the kernel outlived the runner"
    assert not alive(child), "a process the kernel started outlived the runner"
    m = json.loads((run / "manifest.json").read_text())
    assert m["status"] == "interrupted" and m["ended"]
    assert m["stages"][0]["status"] == "interrupted"
    assert signal.Signals(sig).name in m["stages"][0]["error"]["message"]
    assert not (run / "run.lock").exists()
    assert "interrupted" in err and signal.Signals(sig).name in err


def test_what_a_runner_killed_with_sigkill_leaves_is_taken_over(tmp_path, nbdir, capsys):
    """Its lock file (naming a dead pid) and a manifest with a stage still `running`."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.lock").write_text(json.dumps({"pid": dead.pid, "host": "here", "started": "earlier"}))
    s = write_spec(tmp_path, "name: t\nnotebooks:\n  - notebook: a_ok\n    foreach: {name: [p, q]}\n")
    stages = [{"name": n, "notebook": "a_ok.ipynb", "fingerprint": "x", "status": st}
              for n, st in (("a_ok[p]", "running"), ("a_ok[q]", "not run"))]
    (run / "manifest.json").write_text(json.dumps({"run": "t", "status": "running", "stages": stages}))
    m = run_spec(s, only=["a_ok[q]"], run_dir=run, figures_dir=tmp_path / "fig")
    assert [x["status"] for x in m["stages"]] == ["interrupted", "ok"] and m["status"] == "ok"
    assert f"pid {dead.pid}" in capsys.readouterr().err
    assert not (run / "run.lock").exists()


def test_unreadable_previous_manifest_reruns_everything(tmp_path, nbdir, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text('{"run": "t", "stages": [{"na')
    s = write_spec(tmp_path, "name: t\nnotebooks:\n  - notebook: a_ok\n")
    m = run_spec(s, run_dir=run, figures_dir=tmp_path / "fig")
    assert m["stages"][0]["status"] == "ok"
    assert "manifest.json is unreadable" in capsys.readouterr().err
    assert json.loads((run / "manifest.json").read_text())["status"] == "ok"


def test_lock_held_in_this_process_refuses(tmp_path, nbdir):
    from pneumoloc.runs.lock import RunLocked, run_lock

    run = tmp_path / "run"
    run.mkdir()
    s = write_spec(tmp_path, "name: t\nnotebooks:\n  - notebook: a_ok\n")
    with run_lock(run):
        with pytest.raises(RunLocked, match=f"pid {os.getpid()}"):
            run_spec(s, run_dir=run, figures_dir=tmp_path / "fig")
    assert not (run / "out_a.txt").exists() and not (run / "run.lock").exists()


@pytest.mark.parametrize("text", ['{\n "cells": [\n  {\n   "cell_type": "co', "", "{}", "[]", '{"cells": 3}'])
def test_first_error_copes_with_unreadable_notebooks(tmp_path, text):
    nb = tmp_path / "half.ipynb"
    nb.write_text(text)
    assert first_error(nb) is None


def test_half_written_output_notebook_is_reexecuted(tmp_path, nbdir):
    s = write_spec(tmp_path, "name: t\nnotebooks:\n  - notebook: a_ok\n")
    run = tmp_path / "run"
    run_spec(s, run_dir=run, figures_dir=tmp_path / "fig")
    out = run / "a_ok.ipynb"
    out.write_text(out.read_text()[: len(out.read_text()) // 2])  # a kill in the middle of papermill's write
    (run / "out_a.txt").unlink()
    m = run_spec(s, run_dir=run, figures_dir=tmp_path / "fig")
    assert m["stages"][0]["status"] == "ok"
    assert (run / "out_a.txt").read_text() == "2"
    json.loads(out.read_text())


def test_failure_with_a_half_written_notebook_is_reported(tmp_path, nbdir, monkeypatch):
    """papermill killed while writing: the stage fails with a message instead of the runner crashing."""
    from pneumoloc.runs import stage as runs

    s = write_spec(tmp_path, "name: t\nnotebooks:\n  - notebook: d_die\n")
    real_popen = subprocess.Popen

    def popen_then_truncate(cmd, **kw):
        if "papermill" not in cmd:
            return real_popen(cmd, **kw)
        output = cmd[cmd.index("papermill") + 2]
        return real_popen([sys.executable, "-c", "import sys, pathlib; pathlib.Path(sys.argv[1]).write_text('{\"cel');"
                           "sys.exit(1)", output], **kw)

    monkeypatch.setattr(runs.subprocess, "Popen", popen_then_truncate)
    with pytest.raises(RunFailed, match="unreadable"):
        run_spec(s, run_dir=tmp_path / "run", figures_dir=tmp_path / "fig")
    m = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert m["stages"][0]["status"] == "failed" and "unreadable" in m["stages"][0]["error"]["message"]


def test_stop_signals_are_recorded_not_raised_and_handlers_restored():
    import threading

    from pneumoloc.runs.stage import stop_signals

    before = signal.getsignal(signal.SIGTERM)
    with stop_signals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)  # a second signal while stopping changes nothing
        time.sleep(0.05)
        assert stop.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before
    errors = []

    def in_thread():  # signal.signal() raises ValueError outside the main thread
        try:
            with stop_signals() as stop:
                assert stop.signum is None
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    t = threading.Thread(target=in_thread)
    t.start()
    t.join()
    assert not errors
