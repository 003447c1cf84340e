"""Predictions and metrics carry the SHA-256 of the best.pt that made them; readers refuse stale ones.

The stale files are written by hand here (not through the writers under test), so every reader
is checked against the stored format itself: a ``checkpoint_sha256`` column in
``predictions.csv`` and a ``checkpoint_sha256`` key in ``metrics.json``.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from pneumoloc.ensembles import report as ensemble_report
from pneumoloc.environment import RunPaths
from pneumoloc.localize import tables as localization_tables
from pneumoloc.models.outputs import (DIGEST_KEY, StaleArtifactError, checkpoint_digest, load_metrics,
                                      load_predictions, save_metrics, save_predictions)
from pneumoloc.plots import gallery
from pneumoloc.storage import save_json, save_table, write_bytes

OLD, NEW = b"weights of epoch 3", b"weights of epoch 5"
OLD_SHA, NEW_SHA = hashlib.sha256(OLD).hexdigest(), hashlib.sha256(NEW).hexdigest()
STALE = r"predictions.csv of {m} was made by checkpoint {old}… but models/{m}/best.pt is {new}…: rerun 02_train_backbone\[{m}\]"


def _run(tmp_path) -> RunPaths:
    return RunPaths(root=tmp_path / "run", figures=tmp_path / "fig")


def _predictions(n: int = 20, seed: int = 0) -> pd.DataFrame:
    label = np.r_[0, 1, np.random.default_rng(0).integers(0, 2, n - 2)]  # the same truth for every model
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"image_id": [f"img{i:02d}" for i in range(n)], "patient_id": [f"p{i // 2}" for i in range(n)],
                         "split": ["val", "test"] * (n // 2), "label": label,
                         "prob": np.clip(0.4 * label + 0.6 * rng.random(n), 0, 1)})


def _model(run: RunPaths, name: str, checkpoint: bytes | None, stamp: str | None, seed: int = 0) -> pd.DataFrame:
    """A model folder as notebook 02 leaves it: best.pt (stand-in bytes) and a stamped predictions.csv."""
    if checkpoint is not None:
        write_bytes(run.model_dir(name) / "best.pt", checkpoint)
    pred = _predictions(seed=seed)
    save_table(run.model_dir(name) / "predictions.csv", pred if stamp is None else pred.assign(checkpoint_sha256=stamp))
    return pred


# -- readers of notebooks 03, 04 and 05 refuse predictions of another checkpoint ------------------

def test_ensemble_members_from_an_old_checkpoint_are_refused(tmp_path):
    run = _run(tmp_path)
    _model(run, "m1", NEW, NEW_SHA)
    _model(run, "m2", NEW, OLD_SHA, seed=1)  # m2 was retrained after its predictions were written
    with pytest.raises(StaleArtifactError, match=STALE.format(m="m2", old=OLD_SHA[:12], new=NEW_SHA[:12])):
        ensemble_report.load_predictions(run, ["m1", "m2"])


def test_ensemble_members_of_the_current_checkpoint_load(tmp_path):
    run = _run(tmp_path)
    p1 = _model(run, "m1", OLD, OLD_SHA)
    _model(run, "m2", NEW, NEW_SHA, seed=1)
    ps = ensemble_report.load_predictions(run, ["m1", "m2"])
    val = p1[p1["split"] == "val"].set_index("image_id")
    np.testing.assert_array_equal(ps.frames["val"]["m1"], val.loc[ps.image_ids("val"), "prob"])
    assert ps.checkpoints == {"m1": OLD_SHA, "m2": NEW_SHA}  # notebook 05 stores them in ensembles.json


def test_gallery_refuses_predictions_of_an_old_checkpoint(tmp_path):
    run = _run(tmp_path)
    _model(run, "resnet18", NEW, OLD_SHA)
    with pytest.raises(StaleArtifactError, match=STALE.format(m="resnet18", old=OLD_SHA[:12], new=NEW_SHA[:12])):
        gallery.load_predictions(run, "resnet18", "test")


def test_classifier_auc_refuses_metrics_of_an_old_checkpoint(tmp_path):
    run = _run(tmp_path)
    _model(run, "resnet18", NEW, NEW_SHA)
    save_json(run.model_dir("resnet18") / "metrics.json",
              {"operating_points": {"default": {"roc_auc": 0.9}}, "checkpoint_sha256": OLD_SHA})
    with pytest.raises(StaleArtifactError, match=r"metrics.json of resnet18 was made by checkpoint "
                                                 rf"{OLD_SHA[:12]}.*rerun 02_train_backbone\[resnet18\]"):
        localization_tables.classifier_auc(run, "resnet18")
    save_json(run.model_dir("resnet18") / "metrics.json",
              {"operating_points": {"default": {"roc_auc": 0.9}}, "checkpoint_sha256": NEW_SHA})
    assert localization_tables.classifier_auc(run, "resnet18") == 0.9


def test_classifier_auc_refuses_predictions_of_an_old_checkpoint(tmp_path):
    run = _run(tmp_path)
    _model(run, "resnet18", NEW, OLD_SHA)  # no metrics.json: the AUC comes from predictions.csv
    with pytest.raises(StaleArtifactError, match=STALE.format(m="resnet18", old=OLD_SHA[:12], new=NEW_SHA[:12])):
        localization_tables.classifier_auc(run, "resnet18")


def test_localization_scoring_refuses_predictions_of_an_old_checkpoint(tmp_path):
    from pneumoloc.localize.report import score_run
    from pneumoloc.explain.stored import read_maps, save_maps
    from test_localize_report import _synthetic_run  # a run in the stored-maps format

    run, _, _ = _synthetic_run(tmp_path, with_val_maps=False)

    pred = pd.read_csv(run.model_dir("good") / "predictions.csv", dtype={"image_id": str, "patient_id": str})
    write_bytes(run.model_dir("good") / "best.pt", NEW)
    for npz in (run.maps / "good").glob("*.npz"):  # maps of the current best.pt: only the predictions are stale
        stored = read_maps(npz)
        save_maps(npz, stored.maps, stored.image_ids, {**stored.meta, "checkpoint_sha256": NEW_SHA})
    save_table(run.model_dir("good") / "predictions.csv", pred.assign(checkpoint_sha256=OLD_SHA))
    with pytest.raises(StaleArtifactError, match=STALE.format(m="good", old=OLD_SHA[:12], new=NEW_SHA[:12])):
        score_run(run, models=["good"], methods=["gradcam"], n_boot=2, baselines=False, progress=False)


# -- the rules: which combinations of stamp and best.pt load -----------------------------------

def test_unstamped_predictions_beside_a_checkpoint_are_refused(tmp_path):
    run = _run(tmp_path)
    _model(run, "resnet18", NEW, None)
    with pytest.raises(StaleArtifactError, match=r"records no checkpoint.*rerun 02_train_backbone\[resnet18\]"):
        ensemble_report.load_predictions(run, ["resnet18"])


def test_stamped_predictions_whose_checkpoint_is_gone_are_refused(tmp_path):
    run = _run(tmp_path)
    _model(run, "resnet18", None, OLD_SHA)
    with pytest.raises(StaleArtifactError, match=r"models/resnet18/best.pt does not exist.*rerun 02_train_backbone"):
        load_predictions(run, "resnet18")


def test_predictions_without_any_checkpoint_load_as_given(tmp_path):
    run = _run(tmp_path)
    pred = _model(run, "external", None, None)  # e.g. another system's probabilities, no best.pt
    pd.testing.assert_frame_equal(load_predictions(run, "external"), pred)


def test_mixed_stamps_are_refused(tmp_path):
    run = _run(tmp_path)
    _model(run, "resnet18", NEW, NEW_SHA)
    path = run.model_dir("resnet18") / "predictions.csv"
    pred = pd.read_csv(path)
    pred.loc[0, DIGEST_KEY] = OLD_SHA  # rows from two checkpoints pasted together
    save_table(path, pred)
    with pytest.raises(StaleArtifactError, match=r"2 checkpoint digests"):
        load_predictions(run, "resnet18")


# -- the writers of notebook 02 ------------------------------------------------------------

def test_writers_stamp_the_current_best_checkpoint(tmp_path):
    run = _run(tmp_path)
    write_bytes(run.model_dir("resnet18") / "best.pt", OLD)
    pred = _predictions()
    save_predictions(run, "resnet18", pred)
    save_metrics(run, "resnet18", {"best_epoch": 3})
    stored = pd.read_csv(run.model_dir("resnet18") / "predictions.csv")
    assert (stored[DIGEST_KEY] == OLD_SHA).all() and checkpoint_digest(run, "resnet18") == OLD_SHA
    assert load_metrics(run, "resnet18") == {"best_epoch": 3, DIGEST_KEY: OLD_SHA}
    pd.testing.assert_frame_equal(load_predictions(run, "resnet18").drop(columns=DIGEST_KEY), pred)
    write_bytes(run.model_dir("resnet18") / "best.pt", NEW)  # retrained: both artifacts are now stale
    with pytest.raises(StaleArtifactError, match="predictions.csv of resnet18"):
        load_predictions(run, "resnet18")
    with pytest.raises(StaleArtifactError, match="metrics.json of resnet18"):
        load_metrics(run, "resnet18")


def test_writers_need_the_checkpoint(tmp_path):
    run = _run(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"best.pt does not exist.*notebook 02"):
        save_predictions(run, "resnet18", _predictions())
    with pytest.raises(FileNotFoundError, match=r"best.pt does not exist"):
        save_metrics(run, "resnet18", {})
