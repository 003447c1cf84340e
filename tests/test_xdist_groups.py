"""``make test`` runs ``-n 2 --dist loadgroup``: tests of one ``xdist_group`` (those sharing the
tiny run) must land on one worker, or each worker executes the tiny spec again."""
import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).parent
CONFTEST = "from xdist_groups import pytest_collection_modifyitems  # noqa: F401\n"
GROUPED = """import os, pathlib, pytest
@pytest.mark.xdist_group("g")
@pytest.mark.parametrize("i", range(6))
def test_grouped(i):
    pathlib.Path(os.environ["OUT"], f"w{i}").write_text(os.environ["PYTEST_XDIST_WORKER"])
"""


def test_a_group_runs_on_one_worker(tmp_path):
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_grouped.py").write_text(GROUPED)
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "OUT": str(out), "PYTHONPATH": str(TESTS)}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "loadgroup", "-p", "no:randomly",
                           "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    workers = {p.read_text() for p in out.iterdir()}
    assert len(list(out.iterdir())) == 6 and len(workers) == 1, workers
