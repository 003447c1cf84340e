"""Every notebook executed headlessly, in order, on the tiny spec (papermill_runs/tiny.yaml).

One run, shared by the checks below: executing the pipeline is the expensive part.
"""
import json

import pandas as pd
import pytest

from pneumoloc.paths import RUNS_DIR
from pneumoloc.runs import run_spec
from pneumoloc.splits import validate_split

pytestmark = [pytest.mark.notebooks, pytest.mark.xdist_group("notebooks")]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    manifest = run_spec(RUNS_DIR / "tiny.yaml", run_dir=root / "run", figures_dir=root / "figures",
                        overrides={"data_root": str(root / "phantom")})
    return root, manifest


def test_every_stage_succeeds(tiny_run):
    root, manifest = tiny_run
    assert manifest["status"] == "ok"
    assert all(s["status"] == "ok" for s in manifest["stages"]), manifest["stages"]
    saved = json.loads((root / "run" / "manifest.json").read_text())
    assert saved["git_commit"] and saved["versions"]["papermill"]


def test_notebook_01_artifacts(tiny_run):
    root, _ = tiny_run
    images = pd.read_csv(root / "run" / "data" / "images.csv", dtype={"patient_id": str})
    validate_split(images)
    assert set(images["split"]) == {"train", "val", "test"}
    for name in ("01_split_counts", "01_split_leakage", "01_sample_grid", "01_box_statistics"):
        assert (root / "figures" / f"{name}.pdf").exists() and (root / "figures" / f"{name}.png").exists()
