"""pneumoloc browse: finding the run, the Voila command, the shipped page notebook."""
import json
import subprocess
import sys

import pytest

from pneumoloc.runs.browse import APP_NOTEBOOK, RUN_ENV, find_run, voila_command


def test_find_run_takes_a_path_and_names_what_is_missing(tmp_path):
    (tmp_path / "run" / "maps").mkdir(parents=True)
    assert find_run(str(tmp_path / "run")) == (tmp_path / "run").resolve()
    with pytest.raises(FileNotFoundError, match="notebook 03"):
        find_run(str(tmp_path))


def test_voila_serves_the_shipped_notebook_on_this_machine_only():
    cmd = voila_command(8123)
    assert cmd[1:3] == ["-m", "voila"] and str(APP_NOTEBOOK) in cmd
    assert "--Voila.ip=127.0.0.1" in cmd and "--port=8123" in cmd and "--no-browser" in cmd


def test_the_page_notebook_is_clean_and_reads_the_run_from_the_environment():
    nb = json.loads(APP_NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c["outputs"] and c["execution_count"] is None for c in code)
    assert any("RUN_ENV" in "".join(c["source"]) for c in code) and RUN_ENV == "PNEUMOLOC_BROWSE_RUN"
    assert not any("def " in "".join(c["source"]) or "class " in "".join(c["source"]) for c in code)


def test_cli_browse_reports_a_missing_run(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pneumoloc.cli", "browse", str(tmp_path / "nope")],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "not a run folder" in out.stderr
