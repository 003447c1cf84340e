"""Fixtures shared by several test modules."""
import pytest

from pneumoloc.environment import RUNS_DIR
from pneumoloc.runs.runner import run_spec
from xdist_groups import pytest_collection_modifyitems  # noqa: F401  (a hook: registered by name)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The tiny spec (papermill_runs/tiny.yaml) executed inline once per test session: every
    notebook, two backbones. Tests of the notebooks and the browser read it; the Slurm test compares its own run
    with it. Modules using it share the xdist group ``notebooks`` so that one worker runs it once."""
    root = tmp_path_factory.mktemp("tiny")
    manifest = run_spec(RUNS_DIR / "tiny.yaml", run_dir=root / "run", figures_dir=root / "figures",
                        overrides={"data_root": str(root / "phantom")})
    return root, manifest
