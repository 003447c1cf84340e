"""Notebook 01 runs headlessly on real-layout fixtures by changing only its parameters.

Two fixtures run by default (Kermany: JPEGs, Kaggle duplicate, a truncated file;
RSNA: DICOMs with several boxes); set ``PNEUMOLOC_ALL_READER_NOTEBOOKS=1`` to run
notebook 01 on every reader's fixture (NIH, CheXpert, MIMIC too; ~1 min each here).
"""
from __future__ import annotations

import os

import pandas as pd
import pytest
from fixtures.kermany import FILES, make_kermany
from fixtures.registry import FIXTURES

from pneumoloc.data.splits import validate_split
from pneumoloc.environment import NOTEBOOKS_DIR

pytestmark = [pytest.mark.notebooks, pytest.mark.xdist_group("notebooks")]

NOTEBOOK = NOTEBOOKS_DIR / "01_data_audit_and_patient_split.ipynb"
ALL = os.environ.get("PNEUMOLOC_ALL_READER_NOTEBOOKS") == "1"

# dataset -> (fixture builder, reader_options, extra notebook parameters)
CASES = {
    "kermany": (lambda root: make_kermany(root, truncated=True), {"max_skipped_fraction": 0.1},
                {"real_metadata_audit": True}),
    "rsna": (FIXTURES["rsna"], {"not_normal": "keep"}, {"real_metadata_audit": False}),
    "nih": (FIXTURES["nih"], {"official_split": True}, {"real_metadata_audit": False}),
    "chexpert": (FIXTURES["chexpert"], {"uncertain": "ignore"}, {"real_metadata_audit": False}),
    "mimic": (FIXTURES["mimic"], {"frontal_only": False}, {"real_metadata_audit": False}),
}
DEFAULT = ("kermany", "rsna")


def _execute(tmp_path, dataset):
    import papermill as pm

    make, options, extra = CASES[dataset]
    root = make(tmp_path / "data")
    run_dir, figures = tmp_path / "run", tmp_path / "figures"
    pm.execute_notebook(
        str(NOTEBOOK), str(tmp_path / "01.ipynb"), kernel_name="python3", cwd=str(tmp_path),
        progress_bar=False, log_output=False,
        parameters={"dataset": dataset, "data_root": str(root), "reader_options": options,
                    "run_dir": str(run_dir), "figures_dir": str(figures), "seed": 1,
                    "ratios": [0.6, 0.2, 0.2], **extra})
    return run_dir, figures


@pytest.mark.parametrize("dataset", sorted(CASES))
def test_notebook_01_on_fixture(tmp_path, dataset):
    if dataset not in DEFAULT and not ALL:
        pytest.skip("set PNEUMOLOC_ALL_READER_NOTEBOOKS=1 to run notebook 01 on every reader fixture")
    run_dir, figures = _execute(tmp_path, dataset)
    images = pd.read_csv(run_dir / "data" / "images.csv", dtype={"image_id": str, "patient_id": str})
    validate_split(images)
    skipped = pd.read_csv(run_dir / "data" / "skipped.csv")
    pairs = pd.read_csv(run_dir / "data" / "near_duplicates.csv")
    assert {"image_id_a", "image_id_b", "crosses_split", "distance"} <= set(pairs.columns)
    assert set(pairs["image_id_a"]) | set(pairs["image_id_b"]) <= set(images["image_id"])
    names = ["01_split_counts", "01_split_leakage", "01_sample_grid"]
    if dataset == "kermany":
        assert len(images) == len(FILES) and len(skipped) == 1
        assert skipped["path"].iloc[0].endswith("person8_bacteria_14.jpeg")
        names += ["01_nih_real_leakage", "01_rsna_real_boxes"]
    else:
        assert skipped.empty
        assert not (figures / "01_nih_real_leakage.pdf").exists()
    if dataset == "rsna":
        assert len(pd.read_csv(run_dir / "data" / "boxes.csv")) > 0
    for name in names:
        assert (figures / f"{name}.pdf").exists() and (figures / f"{name}.png").exists()
