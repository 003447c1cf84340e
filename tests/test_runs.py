"""The papermill runner: manifests, failures, timeouts, dead kernels, skipping, selection."""
import json
import sys

import pytest

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from notebook_factory import write_notebook  # noqa: E402

from pneumoloc import runspec  # noqa: E402
from pneumoloc.runs import RunFailed, run_spec, select_stages  # noqa: E402

pytestmark = pytest.mark.xdist_group("runs")

PARAMS = 'run_dir = "x"  # run\nfigures_dir = ""  # figures\nvalue = 1  # a number\nname = "a"  # a name\n'


@pytest.fixture
def nbdir(tmp_path, monkeypatch):
    d = tmp_path / "notebooks"
    d.mkdir()
    monkeypatch.setattr(runspec, "NOTEBOOKS_DIR", d)
    # other work on the library must not change fingerprints mid-test
    monkeypatch.setattr(runspec, "library_hash", lambda: "fixed")
    write_notebook(d / "a_ok.ipynb", PARAMS, "import pathlib\npathlib.Path(run_dir, f'out_{name}.txt').write_text(str(value * 2))")
    write_notebook(d / "b_fail.ipynb", PARAMS, "x = 1", "raise RuntimeError('boom at value %d' % value)")
    write_notebook(d / "c_slow.ipynb", PARAMS, "import time\ntime.sleep(60)")
    write_notebook(d / "d_die.ipynb", PARAMS, "import os\nos._exit(1)")
    return d


def spec(tmp_path, body):
    p = tmp_path / "spec.yaml"
    p.write_text(body)
    return p


def test_runs_notebooks_and_writes_manifest(tmp_path, nbdir):
    s = spec(tmp_path, "name: t\nnotebooks:\n  - notebook: a_ok\n    foreach: {name: [p, q]}\n"
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
    s = spec(tmp_path, "name: t\nnotebooks:\n  - notebook: b_fail\n  - notebook: a_ok\n")
    with pytest.raises(RunFailed, match=r"b_fail.*code cell 3: RuntimeError: boom at value 1"):
        run_spec(s, run_dir=tmp_path / "run", figures_dir=tmp_path / "fig")
    m = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert m["status"] == "failed"
    assert [x["status"] for x in m["stages"]] == ["failed", "not run"]
    assert m["stages"][0]["error"]["ename"] == "RuntimeError"
    assert (tmp_path / "run" / "b_fail.ipynb").exists()


def test_timeout_and_dead_kernel(tmp_path, nbdir):
    s = spec(tmp_path, "name: t\nnotebooks:\n  - notebook: c_slow\n    timeout: 8\n")
    with pytest.raises(RunFailed, match="timeout"):
        run_spec(s, run_dir=tmp_path / "r1", figures_dir=tmp_path / "fig")
    assert json.loads((tmp_path / "r1" / "manifest.json").read_text())["stages"][0]["status"] == "timeout"
    s = spec(tmp_path, "name: t\nnotebooks:\n  - notebook: d_die\n")
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
        runspec.load_spec(spec(tmp_path, body))


def test_only_and_from_select_stages(tmp_path, nbdir):
    s = runspec.load_spec(spec(tmp_path, "notebooks:\n  - notebook: a_ok\n    foreach: {name: [p, q]}\n"
                                         "  - notebook: b_fail\n"))
    names = [x.name for x in s.stages]
    assert names == ["a_ok[p]", "a_ok[q]", "b_fail"]
    assert [x.name for x in select_stages(s.stages, only=["a_ok[q]"])] == ["a_ok[q]"]
    assert [x.name for x in select_stages(s.stages, start="a_ok[q]")] == ["a_ok[q]", "b_fail"]
    assert [x.name for x in select_stages(s.stages, only=["a_ok"])] == ["a_ok[p]", "a_ok[q]"]
    with pytest.raises(ValueError, match="match no stage"):
        select_stages(s.stages, only=["zz"])
