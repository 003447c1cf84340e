"""The training loop on a tiny run: determinism, resume equivalence, NaN stop, outputs, config checks."""
import json
import math
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from pneumoloc.models.checkpoints import load_checkpoint, load_model
from pneumoloc.training.batches import epoch_order, predictions_table, prepare_data
from pneumoloc.training.config import SAMPLERS, TrainConfig
from pneumoloc.training.loop import train

# timm's 0.4M-parameter test ResNet keeps the loop tests fast; the recipe is the same for resnet18
TINY = dict(backbone="test_resnet", image_size=32, epochs=2, batch_size=8, eval_batch_size=8)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """16 images (10 train, 3 val, 3 test); positives carry a bright square ("opacity")."""
    folder = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(16):
        lab = int(i % 2 == 1 or i == 14)
        img = rng.normal(100, 20, (40, 48))
        if lab:
            img[8:24, 10:26] += 90
        path = folder / f"{i}.png"
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(path)
        split = "train" if i < 10 else "val" if i < 13 else "test"
        rows.append({"image_id": f"im{i}", "patient_id": f"p{i // 2}", "path": str(path), "label": lab,
                     "width": 48, "height": 40, "split": split, "A": float(lab), "B": [0.0, 1.0, np.nan][i % 3]})
    return pd.DataFrame(rows), folder / "cache"


def _data(images, **over):
    df, cache = images
    cfg = TrainConfig.from_dict({**TINY, **over})
    return cfg, prepare_data(df, cfg, findings=["A", "B"], cache_dir=cache, progress=False)


COLS = ["train_loss", "val_loss", "val_roc_auc", "lr"]


@pytest.fixture(scope="module")
def runs(images, tmp_path_factory):
    """One recipe trained three ways: uninterrupted, again, and interrupted after epoch 1 then resumed."""
    root = tmp_path_factory.mktemp("runs")
    cfg, data = _data(images, scheduler="cosine", sampler="weighted")
    full = train(cfg, data, root / "full", progress=False)
    again = train(cfg, data, root / "again", progress=False)

    def crash(epoch, row):
        if epoch == 0:
            raise KeyboardInterrupt("simulated interruption after epoch 1")

    with pytest.raises(KeyboardInterrupt):
        train(cfg, data, root / "cut", progress=False, on_epoch_end=crash)
    cut_epoch = load_checkpoint(root / "cut" / "last.pt")["epoch"]
    resumed = train(cfg, data, root / "cut", resume=True, progress=False)
    return {"cfg": cfg, "data": data, "root": root, "full": full, "again": again, "resumed": resumed,
            "cut_epoch": cut_epoch}


def test_same_seed_twice_gives_identical_history_and_weights(runs):
    a, b = runs["full"], runs["again"]
    pd.testing.assert_frame_equal(a.history[COLS], b.history[COLS])
    for (k, v), w in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(v, w), k
    out = runs["root"] / "full"
    assert (out / "best.pt").exists() and (out / "last.pt").exists()
    assert len(pd.read_csv(out / "history.csv")) == 2


def test_resume_after_interruption_equals_uninterrupted_run(runs):
    assert runs["cut_epoch"] == 1
    full, resumed = runs["full"], runs["resumed"]
    pd.testing.assert_frame_equal(full.history[COLS], resumed.history[COLS])
    data = runs["data"]
    np.testing.assert_array_equal(predictions_table(full.model, data)["prob"].to_numpy(),
                                  predictions_table(resumed.model, data)["prob"].to_numpy())


def test_resume_of_a_finished_run_changes_nothing_and_other_options_are_refused(runs):
    cfg, data, out = runs["cfg"], runs["data"], runs["root"] / "again"
    again = train(cfg, data, out, resume=True, progress=False)
    assert again.stopped == "already_finished"
    pd.testing.assert_frame_equal(runs["again"].history, again.history)
    cfg2 = TrainConfig.from_dict({**cfg.as_dict(), "lr": 0.01})
    with pytest.raises(ValueError, match=r"different options \['lr'\]"):
        train(cfg2, data, out, resume=True, progress=False)


def test_corrupt_last_checkpoint_falls_back_to_best(runs, tmp_path):
    out = tmp_path / "again"
    shutil.copytree(runs["root"] / "again", out)  # other tests read the shared folder, in any order
    last = out / "last.pt"
    last.write_bytes(last.read_bytes()[:100])  # truncated after its checksum was recorded
    with pytest.warns(UserWarning, match="without optimizer state"):
        res = train(runs["cfg"], runs["data"], out, resume=True, progress=False)
    assert len(res.history) >= 1


def test_best_checkpoint_loads_as_a_model_that_reproduces_the_predictions(runs):
    best = runs["root"] / "full" / "best.pt"
    model = load_model(best)
    a = predictions_table(runs["full"].model, runs["data"])["prob"].to_numpy()
    b = predictions_table(model, runs["data"])["prob"].to_numpy()
    np.testing.assert_allclose(a, b, rtol=1e-6)
    assert load_checkpoint(best)["train_config"] == runs["cfg"].as_dict()


def test_nan_loss_stops_with_a_clear_message(images, tmp_path):
    cfg, data = _data(images, lr=1e30, loss="bce", optimizer="adam")
    with pytest.raises(FloatingPointError, match="loss is nan.*Lower lr"):
        train(cfg, data, tmp_path / "nan", progress=False)


def test_multilabel_task_masks_nan_and_writes_per_finding_predictions(images, tmp_path):
    cfg, data = _data(images, task="multilabel", loss="bce")
    assert data.targets.shape == (16, 2) and np.isnan(data.targets[:, 1]).any()
    res = train(cfg, data, tmp_path / "ml", progress=False)
    assert math.isfinite(res.history["train_loss"].iloc[-1])
    pred = predictions_table(res.model, data)
    assert {"label_A", "prob_A", "label_B", "prob_B"} <= set(pred.columns)
    assert set(pred["split"]) == {"val", "test"} and len(pred) == 6


def test_max_train_images_and_weighted_sampler(images, tmp_path):
    cfg, data = _data(images, max_train_images=4, sampler="weighted")
    assert len(data.indices("train")) == 4 and len(data.indices("val")) == 3
    labels = data.table["label"].to_numpy()
    draws = np.concatenate([epoch_order(data, cfg, e) for e in range(200)])
    share = labels[draws].mean()
    assert abs(share - 0.5) < 0.05  # classes drawn equally often
    assert set(SAMPLERS) == {"none", "weighted"}


@pytest.mark.parametrize("bad, match", [
    ({"epoch": 3}, "unknown training option"), ({"epochs": "3"}, "must be int"),
    ({"lr": True}, "must be float"), ({"optimizer": "sgd"}, "choose one of"),
    ({"scheduler": "step"}, "choose one of"), ({"loss": "hinge"}, "choose one of"),
    ({"task": "segmentation"}, "choose one of"), ({"batch_size": 0}, ">= 1"),
])
def test_config_rejects_unknown_keys_and_bad_values(bad, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig.from_dict(bad)


def test_missing_split_column_is_a_clear_error(images):
    df, cache = images
    with pytest.raises(ValueError, match="notebook 01"):
        prepare_data(df.drop(columns="split"), TrainConfig.from_dict(TINY), cache_dir=cache)


# -- interruptions at every kind of instant ----------------------------------------------

DRIVER = Path(__file__).with_name("kill_resume_driver.py")


class Killed(BaseException):
    """Stands for a kill at an exact instant (BaseException: no handler in the library catches it)."""


@pytest.fixture(scope="module")
def moving_best(tmp_path_factory):
    """The kill test's recipe and data: val AUC rises and falls, so best.pt moves and lags last.pt."""
    from kill_resume_driver import RECIPE, make_images

    root = tmp_path_factory.mktemp("moving")
    cfg = TrainConfig.from_dict(RECIPE)
    data = prepare_data(make_images(root / "images"), cfg, cache_dir=root / "cache", progress=False)
    full = train(cfg, data, root / "full", progress=False)
    assert full.best_epoch < len(full.history), "the recipe must end on epochs that do not improve"
    return cfg, data, root, full


def _crash_at(monkeypatch, name: str, epoch: int, when: str) -> None:
    """Raise :class:`Killed` just before or after the rename of ``name`` during ``epoch`` (1-based)."""
    real = os.replace

    def replace(src, dst):
        hit = Path(dst).name == name and load_epoch(src) == epoch
        if hit and when == "before":
            raise Killed(f"killed before renaming {name} of epoch {epoch}")
        real(src, dst)
        if hit and when == "after":
            raise Killed(f"killed after renaming {name} of epoch {epoch}")

    def load_epoch(src):
        if name == "history.csv":
            return len(pd.read_csv(src))
        from pneumoloc.storage import load_torch
        return load_torch(src)["epoch"]
    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize("name, epoch, when", [
    ("last.pt", 1, "after"),       # before any best.pt exists
    ("last.pt", 2, "before"),      # an improving epoch: best.pt may not run ahead of last.pt
    ("best.pt", 2, "before"),      # last.pt says epoch 2 is best, best.pt still holds epoch 1
    ("best.pt", 2, "after"),
    ("history.csv", 5, "before"),  # the final epoch: both checkpoints written, history.csv stale
])
def test_crash_at_a_write_then_resume_equals_uninterrupted_run(moving_best, tmp_path, monkeypatch, name, epoch, when):
    cfg, data, root, full = moving_best
    out = tmp_path / "cut"
    _crash_at(monkeypatch, name, epoch, when)
    try:
        train(cfg, data, out, progress=False)
    except Killed:
        pass
    monkeypatch.undo()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a resume without optimizer state warns: that would be a loss
        resumed = train(cfg, data, out, resume=True, progress=False)
    pd.testing.assert_frame_equal(full.history[["epoch"] + COLS], resumed.history[["epoch"] + COLS])
    pd.testing.assert_frame_equal(pd.read_csv(root / "full" / "history.csv")[["epoch"] + COLS],
                                  pd.read_csv(out / "history.csv")[["epoch"] + COLS])
    assert resumed.best_epoch == full.best_epoch
    best, ref = load_checkpoint(out / "best.pt"), load_checkpoint(root / "full" / "best.pt")
    assert best["epoch"] == ref["epoch"] == full.best_epoch
    for k, v in ref["model_state"].items():
        assert torch.equal(best["model_state"][k], v), k


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="the driver forks one child per training")
def test_kill_9_then_resume_equals_uninterrupted_run(tmp_path):
    """SIGKILL at 20 seeded instants (just after each of the run's atomic writes: last.pt and
    history.csv per epoch, best.pt whenever it moves; inside 2 drawn writes; the rest drawn over the
    whole run, one of them killed again while resuming); each resumed run ends with the uninterrupted
    run's history, history.csv and best.pt/last.pt weights, bitwise."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(DRIVER.parent)}
    proc = subprocess.run([sys.executable, str(DRIVER), str(tmp_path), "20", "0"], capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    failed = [t for t in report["trials"] if not t["equal"]]
    assert not failed, json.dumps(failed, indent=1)[:4000] + proc.stderr[-2000:]
    kills = [k for t in report["trials"] for k in t["after_kills"]]
    names = [name for _, name in report["reference"]["writes"]]
    epochs = len(report["reference"]["history"])
    assert len(report["trials"]) == 20 and names.count("last.pt") == names.count("history.csv") == epochs
    assert names.count("best.pt") >= 2, "best.pt never moved: no kill falls between last.pt and best.pt"
    assert any(k["temp_files"] for k in kills), "no kill landed inside a write"


def test_resume_on_another_device_setting_keeps_the_recorded_best(moving_best, tmp_path, monkeypatch):
    """The device is not part of the recipe: best.pt of an earlier epoch stays valid when resuming elsewhere."""
    cfg, data, root, full = moving_best
    out = tmp_path / "cut"
    _crash_at(monkeypatch, "last.pt", 3, "after")  # best.pt holds epoch 2, last.pt epoch 3
    with pytest.raises(Killed):
        train(cfg, data, out, progress=False)
    monkeypatch.undo()
    elsewhere = TrainConfig.from_dict({**cfg.as_dict(), "device": "cpu"})
    resumed = train(elsewhere, data, out, resume=True, progress=False)
    pd.testing.assert_frame_equal(full.history[["epoch"] + COLS], resumed.history[["epoch"] + COLS])
    assert load_checkpoint(out / "best.pt")["epoch"] == full.best_epoch


def test_lost_best_checkpoint_is_a_clear_error(moving_best, tmp_path, monkeypatch):
    cfg, data, root, full = moving_best
    out = tmp_path / "cut"
    _crash_at(monkeypatch, "last.pt", 3, "after")
    with pytest.raises(Killed):
        train(cfg, data, out, progress=False)
    monkeypatch.undo()
    (out / "best.pt").write_bytes(b"damaged after the fact")
    with pytest.raises(RuntimeError, match=r"best.pt should hold epoch 2 .*resume=False"):
        train(cfg, data, out, resume=True, progress=False)
