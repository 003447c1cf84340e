"""Every notebook executed headlessly, in order, on the tiny spec (papermill_runs/tiny.yaml).

One run (the session fixture ``tiny_run`` in conftest.py), shared by the checks below and by
tests/test_slurm.py: executing the pipeline is the expensive part.
"""
import json

import pandas as pd
import pytest

from pneumoloc.data.splits import validate_split

pytestmark = [pytest.mark.notebooks, pytest.mark.xdist_group("notebooks")]


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


def test_notebook_02_trains_each_backbone(tiny_run):
    root, manifest = tiny_run
    images = pd.read_csv(root / "run" / "data" / "images.csv", dtype={"image_id": str})
    for backbone in ("resnet18", "mobilenet_v3"):
        d = root / "run" / "models" / backbone
        for name in ("best.pt", "last.pt", "history.csv", "config.json", "metrics.json"):
            assert (d / name).exists(), f"{backbone}: {name} missing"
        pred = pd.read_csv(d / "predictions.csv", dtype={"image_id": str})
        expected = images[images["split"].isin(["val", "test"])]
        assert set(pred["image_id"]) == set(expected["image_id"])
        assert pred["prob"].between(0, 1).all()
        assert (root / "figures" / f"02_{backbone}_learning_curves.png").exists()


def test_notebook_03_stores_maps_once(tiny_run):
    from pneumoloc.explain.stored import list_maps, load_maps
    from pneumoloc.environment import RunPaths

    root, _ = tiny_run
    run = RunPaths(root=root / "run", figures=root / "figures")
    stored = list_maps(run)
    assert {"resnet18", "mobilenet_v3"} <= set(stored["model"])
    maps = load_maps(run, "resnet18", "gradcam")
    test_ids = pd.read_csv(root / "run" / "data" / "images.csv", dtype={"image_id": str}).query("split == 'test'")["image_id"]
    assert set(maps.image_ids) >= set(test_ids)
    assert maps.maps.min() >= 0 and maps.maps.max() <= 1
    val_ids = pd.read_csv(root / "run" / "data" / "images.csv", dtype={"image_id": str}).query("split == 'val'")["image_id"]
    assert set(val_ids) <= set(maps.image_ids), "val maps stored for notebook 04's threshold tuning"
    layer3 = load_maps(run, "resnet18", "gradcam@layer3")
    assert layer3.meta["target_layer"] == "backbone.layer3" and layer3.meta["feature_size"] == "4x4"
    assert maps.meta["feature_size"] == "2x2"  # layer4 of a 64-px input


def test_notebook_03_shows_the_browser_headless(tiny_run):
    root, _ = tiny_run
    nb = json.loads((root / "run" / "03_gradcam_gallery.ipynb").read_text())
    shown = [o for c in nb["cells"] if c["cell_type"] == "code" and "MapBrowser(" in "".join(c["source"])
             for o in c.get("outputs", [])]
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in shown)


def test_notebooks_04_and_05_write_tables(tiny_run):
    root, _ = tiny_run
    metrics = pd.read_csv(root / "run" / "localization" / "metrics.csv")
    assert {"lar", "hit", "iou@tuned"} <= set(metrics["metric"]), "thresholds tuned on the val maps"
    assert metrics["value"].notna().all()
    depth = metrics[(metrics["model"] == "resnet18") & metrics["method"].str.startswith("gradcam@")]
    assert {"gradcam@layer3", "gradcam@layer3+4"} <= set(depth["method"])
    assert set(depth["feature_size"]) == {"4x4", "4x4+2x2"}
    summary = pd.read_csv(root / "run" / "ensembles" / "summary.csv")
    assert {"resnet18", "mobilenet_v3"} <= set(summary["system"])
    faith = pd.read_csv(root / "run" / "localization" / "faithfulness.csv")  # notebook 04's faithfulness section
    assert {"gradcam", "random"} <= set(faith["method"]) and {"deletion_auc", "road_combined"} <= set(faith["metric"])


def test_map_jobs_run_at_once_and_the_gallery_stage_reuses_their_maps(tiny_run, tmp_path):
    """The tiny spec's 03 per-backbone map jobs under ``--executor local --workers 2``: both run
    at once, store maps of the inline run's checkpoints, and the plain 03 stage after them
    (gallery, sanity, browser) reuses those files instead of recomputing them."""
    import shutil
    from datetime import datetime

    from pneumoloc.environment import RUNS_DIR
    from pneumoloc.runs.runner import run_spec

    root, _ = tiny_run
    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    shutil.rmtree(run / "maps")
    m = run_spec(RUNS_DIR / "tiny.yaml", only=["03"], force=True, run_dir=run, figures_dir=tmp_path / "fig",
                 overrides={"data_root": str(root / "phantom")}, executor="local", workers=2)
    records = {r["name"]: r for r in m["stages"]}
    jobs = [records[f"03_gradcam_gallery[{b}]"] for b in ("resnet18", "mobilenet_v3")]
    assert [r["status"] for r in jobs] == ["ok", "ok"] and records["03_gradcam_gallery"]["status"] == "ok"
    (a0, a1), (b0, b1) = ((datetime.fromisoformat(r["started"]), datetime.fromisoformat(r["ended"])) for r in jobs)
    assert max(a0, b0) < min(a1, b1), "the two map jobs did not overlap"
    gallery_start = datetime.fromisoformat(records["03_gradcam_gallery"]["started"])
    assert gallery_start >= max(a1, b1), "the gallery stage started before the map jobs finished"
    files = sorted((run / "maps").glob("*/*.npz"))
    assert {f.parent.name for f in files} == {"resnet18", "mobilenet_v3"}
    written = {f: f.stat().st_mtime_ns for f in files}
    # manifest times are whole seconds, truncated
    assert all(t / 1e9 < max(a1, b1).timestamp() + 1 for t in written.values()), \
        "the gallery stage rewrote maps the jobs had stored"
    from pneumoloc.explain.stored import load_maps
    from pneumoloc.environment import RunPaths
    for backbone in ("resnet18", "mobilenet_v3"):
        ours = load_maps(RunPaths(root=run, figures=tmp_path / "fig"), backbone, "gradcam")
        inline = load_maps(RunPaths(root=root / "run", figures=root / "figures"), backbone, "gradcam")
        assert ours.meta["checkpoint_sha256"] == inline.meta["checkpoint_sha256"]
        assert ours.meta["parameters"] == inline.meta["parameters"]
        assert list(ours.image_ids) == list(inline.image_ids)
    assert (tmp_path / "fig" / "03_gallery_resnet18.png").exists()
