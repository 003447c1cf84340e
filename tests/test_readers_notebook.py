"""Notebook 01 runs headlessly on real-layout fixtures by changing only its parameters."""
from __future__ import annotations

import pandas as pd
import pytest
from fixtures.kermany import FILES, make_kermany
from fixtures.rsna import make_rsna

from pneumoloc.paths import NOTEBOOKS_DIR
from pneumoloc.splits import validate_split

pytestmark = [pytest.mark.notebooks, pytest.mark.xdist_group("notebooks")]

NOTEBOOK = NOTEBOOKS_DIR / "01_data_audit_and_patient_split.ipynb"

CASES = {
    # Kaggle copy with the nested duplicate and a truncated JPEG among good ones
    "kermany": (lambda root: make_kermany(root, truncated=True), {"max_skipped_fraction": 0.1}),
    # DICOMs with several boxes per image; third class kept as a finding
    "rsna": (lambda root: make_rsna(root, size=64), {"not_normal": "keep"}),
}


def _execute(tmp_path, dataset):
    import papermill as pm

    make, options = CASES[dataset]
    root = make(tmp_path / "data")
    run_dir, figures = tmp_path / "run", tmp_path / "figures"
    pm.execute_notebook(
        str(NOTEBOOK), str(tmp_path / "01.ipynb"), kernel_name="python3", cwd=str(tmp_path),
        progress_bar=False, log_output=False,
        parameters={"dataset": dataset, "data_root": str(root), "reader_options": options,
                    "run_dir": str(run_dir), "figures_dir": str(figures), "seed": 1,
                    "ratios": [0.6, 0.2, 0.2]})
    return run_dir, figures


@pytest.mark.parametrize("dataset", sorted(CASES))
def test_notebook_01_on_fixture(tmp_path, dataset):
    run_dir, figures = _execute(tmp_path, dataset)
    images = pd.read_csv(run_dir / "data" / "images.csv", dtype={"image_id": str, "patient_id": str})
    validate_split(images)
    skipped = pd.read_csv(run_dir / "data" / "skipped.csv")
    if dataset == "kermany":
        assert len(images) == len(FILES) and len(skipped) == 1
        assert skipped["path"].iloc[0].endswith("person8_bacteria_14.jpeg")
    else:
        assert len(pd.read_csv(run_dir / "data" / "boxes.csv")) > 0 and skipped.empty
    for name in ("01_split_counts", "01_split_leakage", "01_sample_grid"):
        assert (figures / f"{name}.pdf").exists() and (figures / f"{name}.png").exists()
