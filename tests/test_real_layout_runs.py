"""Every real dataset layout through notebooks 01 -> 05, headlessly, through the runner.

Each case builds a tiny copy of a public dataset's file layout (``tests/fixtures``), writes a
run spec into the test's temporary folder and executes it inline like ``pneumoloc run``:

* Kermany: JPEG folders, binary, Grad-CAM, LAR from the classical lung masks;
* RSNA: 1024 x 1024 DICOMs and boxes in that frame, classical lung masks, box metrics;
* NIH: 1024 x 1024 PNGs and the real Pneumonia boxes, box metrics;
* CheXpert: multilabel (14 findings, U-Ones), one map per finding (``target: findings``),
  WILDCAT heads on both backbones and their native maps.

Two small backbones per run (notebook 05 combines at least two), 64 px (a 2 x 2 layer4 map; at 32 px
it is 1 x 1 and every Grad-CAM map is constant, hence all zero after min-max), one epoch. NIH stops
after notebook 04 with one backbone: its own paths are the reader and the ChestX-ray8 protocol of
notebook 04; notebooks 02, 03 and 05 on a binary boxed dataset with classical lungs are RSNA's run.
Each run and its checks are one test, so ``make test`` (``-n 2``) spreads the four runs over the
workers without relying on xdist groups; select them with ``-m real_layout`` or one with ``-k kermany``.
"""
from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pytest
import yaml
from fixtures.chexpert import make_chexpert
from fixtures.kermany import make_kermany
from fixtures.nih import make_nih
from fixtures.rsna import make_rsna, pick_patients

from pneumoloc.data.readers.base import CHEXPERT_FINDINGS
from pneumoloc.data.xrv_assets import load_nih_table, xrv_data_file
from pneumoloc.environment import RunPaths
from pneumoloc.runs.runner import run_spec

BACKBONES = ("resnet18", "mobilenet_v3")


def _nih_patients() -> list[str]:
    """Four patients with a Pneumonia box and four without pneumonia, each with 1-3 images.

    Both strata hold four patients, so a 50/25/25 patient split puts both classes in val and test.
    """
    table = load_nih_table()
    n = table["Patient ID"].value_counts()
    with gzip.open(xrv_data_file("BBox_List_2017.csv.gz"), "rt") as f:
        boxed = {line.split(",")[0] for line in f if ",Pneumonia," in line}
    small = set(n.index[n <= 3])
    pos = [p for p in table.loc[table["Image Index"].isin(boxed), "Patient ID"].unique() if p in small][:4]
    clean = ~table["Finding Labels"].str.contains("Pneumonia").groupby(table["Patient ID"]).any()
    neg = [p for p in n.index[(n >= 1) & (n <= 3)] if clean[p]][:4]
    return pos + neg


@dataclass
class Case:
    """One dataset's tiny run: how to build its folder and what the notebooks are told."""

    build: Callable[[Path], Path]  # writes the fixture under a folder, returns the reader's root
    reader_options: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)  # notebook 02 parameters for every backbone
    audit: dict[str, Any] = field(default_factory=dict)  # notebook 01 parameters
    maps: dict[str, Any] = field(default_factory=dict)  # notebook 03 parameters
    scoring: dict[str, Any] = field(default_factory=dict)  # notebook 04 parameters
    map_method: str = "gradcam"  # stored maps notebook 05 combines
    boxed: bool = False  # the dataset has boxes: notebook 04 scores them
    backbones: tuple[str, ...] = BACKBONES  # notebook 05 runs when there are at least two
    findings: tuple[str, ...] = ()  # multilabel: one stored map per finding


CASES = {
    # the Kaggle zip's nested duplicate: the near-duplicate scan runs here; the randomization test too
    "kermany": Case(build=lambda root: make_kermany(root, size=64), audit={"near_duplicate_distance": 4},
                    maps={"methods": ["gradcam"], "sanity_n_images": 2}),
    "rsna": Case(
        # 4 Normal + 4 "Not Normal" (dropped) negatives, 7 positives with 1-4 boxes each
        build=lambda root: make_rsna(root, pick_patients(n_negative=8, box_counts=(1, 1, 2, 3, 4, 1, 2)),
                                     size=1024),
        maps={"methods": ["gradcam", "gradcam++"]}, scoring={"faithfulness_n_images": 2}, boxed=True),
    "nih": Case(build=lambda root: make_nih(root, _nih_patients(), size=1024),
                reader_options={"official_split": True}, maps={"methods": ["gradcam"]}, boxed=True,
                backbones=("resnet18",)),
    "chexpert": Case(
        build=lambda root: make_chexpert(root, n_patients=8, n_pneumonia=3),
        reader_options={"uncertain": "ones"},
        train={"task": "multilabel", "loss": "bce", "head": "wildcat",
               "head_options": {"maps": 2, "k": 0.2, "alpha": 0.7}},
        # 14 findings x 2 backbones: native maps only, to stay short
        maps={"methods": ["wildcat"], "target": "findings"},
        map_method="wildcat@Pneumonia",
        findings=tuple(CHEXPERT_FINDINGS)),
}


def _spec(name: str, case: Case, data_root: Path) -> dict[str, Any]:
    """A run spec like papermill_runs/tiny.yaml, sized so one run takes well under a minute."""
    backbones = list(case.backbones)
    notebooks = [
        {"notebook": "01_data_audit_and_patient_split",
         "parameters": {"dataset": name, "data_root": str(data_root), "reader_options": case.reader_options,
                        "ratios": [0.5, 0.25, 0.25], "n_samples": 2, "real_metadata_audit": False,
                        "near_duplicate_distance": -1, **case.audit}},
        {"notebook": "02_train_backbone", "foreach": {"backbone": backbones},
         "parameters": {"image_size": 64, "epochs": 1, "batch_size": 8, **case.train}},
        {"notebook": "03_gradcam_gallery",
         "parameters": {"backbones": backbones, "map_size": 16, "layer_variants": {}, "n_gallery_rows": 1,
                        "sanity_n_images": 0, "sanity_steps": 2, "show_browser": False, **case.maps}},
        {"notebook": "04_localization_metrics",
         "parameters": {"n_failures": 1, "faithfulness_n_images": 0, "faithfulness_steps": 4, **case.scoring}},
    ]
    if len(backbones) > 1:
        notebooks.append({"notebook": "05_ensemble_analysis",
                          "parameters": {"latency_batches": 1, "n_cases": 2, "map_method": case.map_method}})
    return {"name": name, "timeout": 600, "parameters": {"seed": 0, "device": "cpu", "n_boot": 20},
            "notebooks": notebooks}


pytestmark = [pytest.mark.real_layout, pytest.mark.slow]


@pytest.mark.parametrize("name", list(CASES))
def test_real_layout_run(name, tmp_path):
    """The case's fixture written, its spec executed inline, then every notebook's outcome checked."""
    case = CASES[name]
    data_root = case.build(tmp_path / "data")
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(yaml.safe_dump(_spec(name, case, data_root), sort_keys=False))
    run = RunPaths(root=tmp_path / "run", figures=tmp_path / "figures")
    manifest = run_spec(spec, run_dir=run.root, figures_dir=run.figures)
    for check in (check_every_stage_ok, check_split_holds_both_classes, check_predictions_and_metrics,
                  check_maps_cover_val_and_test, check_localization_table):
        check((name, run, manifest))
    if len(case.backbones) > 1:
        check_ensembles_summary((name, run, manifest))


def _images(run: RunPaths) -> pd.DataFrame:
    return pd.read_csv(run.root / "data" / "images.csv", dtype={"image_id": str, "patient_id": str})


def check_every_stage_ok(done):
    name, run, manifest = done
    n = len(CASES[name].backbones)
    assert manifest["status"] == "ok"
    assert [s["status"] for s in manifest["stages"]] == ["ok"] * (3 + n + (n > 1)), manifest["stages"]
    assert (run.root / ("05_ensemble_analysis.ipynb" if n > 1 else "04_localization_metrics.ipynb")).exists()


def check_split_holds_both_classes(done):
    _, run, _ = done
    images = _images(run)
    for split in ("train", "val", "test"):
        assert set(images.loc[images["split"] == split, "label"]) == {0, 1}, split


def check_predictions_and_metrics(done):
    name, run, _ = done
    images = _images(run)
    expected = set(images.loc[images["split"].isin(["val", "test"]), "image_id"])
    for backbone in CASES[name].backbones:
        pred = pd.read_csv(run.model_predictions(backbone), dtype={"image_id": str})
        assert set(pred["image_id"]) == expected
        assert pred["prob"].between(0, 1).all()
        for finding in CASES[name].findings:
            assert pred[f"prob_{finding}"].between(0, 1).all(), finding
            assert pred[f"label_{finding}"].isin([0, 1]).all(), finding  # U-Ones: -1 became 1
        if CASES[name].findings:  # the binary view of a multilabel model is its Pneumonia output
            np.testing.assert_array_equal(pred["prob"], pred["prob_Pneumonia"])
        metrics = json.loads(run.model_metrics(backbone).read_text())
        assert metrics["best_epoch"] >= 1


def check_maps_cover_val_and_test(done):
    from pneumoloc.explain.stored import list_maps, load_maps

    name, run, _ = done
    case = CASES[name]
    images = _images(run)
    expected = set(images.loc[images["split"].isin(["val", "test"]), "image_id"])
    stored = list_maps(run)
    methods = [f"{m}@{f}" for m in case.maps["methods"] for f in case.findings] or case.maps["methods"]
    for backbone in case.backbones:
        mine = set(stored.loc[stored["model"] == backbone, "method"])
        assert set(methods) <= mine, (backbone, sorted(mine))
        maps = load_maps(run, backbone, methods[0])
        assert set(maps.image_ids) == expected
        assert np.isfinite(maps.maps).all() and maps.maps.min() >= 0 and maps.maps.max() <= 1


def check_localization_table(done):
    """LAR in [0, 1] for every model (or listed as undefined: all its maps are zero, a dead CAM
    after one epoch); box metrics for the datasets with boxes."""
    name, run, _ = done
    metrics = pd.read_csv(run.localization / "metrics.csv")
    metrics = metrics[(metrics["variant"] == "maps") & metrics["model"].isin(CASES[name].backbones)]
    undefined_file = run.localization / "undefined.csv"
    undefined = pd.read_csv(undefined_file) if undefined_file.stat().st_size > 1 else pd.DataFrame()
    lar = metrics[metrics["metric"] == "lar"]
    assert len(lar) and lar["value"].between(0, 1).all()
    assert set(lar["lung_source"]) == {"classical"}  # no fixture ships lung masks: the classical fallback
    for backbone in CASES[name].backbones:
        assert backbone in set(lar["model"]) or backbone in set(undefined.get("model", [])), backbone
    if CASES[name].boxed:
        for metric in ("hit", "energy", "auprc"):
            rows = metrics[metrics["metric"] == metric]
            assert len(rows) and rows["value"].between(0, 1).all(), metric
        assert (metrics["metric"] == "pointwise_map").any()
    if name == "nih":  # the ChestX-ray8 protocol (Wang et al. 2017) on NIH's own boxes
        cx8 = pd.read_csv(run.localization / "chestxray8.csv")
        assert set(CASES[name].backbones) <= set(cx8["model"]) and set(cx8["finding"]) == {"Pneumonia"}
        assert cx8["value"].between(0, 1).all()


def check_ensembles_summary(done):
    _, run, _ = done
    summary = pd.read_csv(run.ensembles / "summary.csv")
    assert set(BACKBONES) <= set(summary["system"])
    assert (run.figures / "05_summary_table.png").exists()
