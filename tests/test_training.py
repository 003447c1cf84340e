"""The training loop on a tiny run: determinism, resume equivalence, NaN stop, outputs, config checks."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from pneumoloc.checkpoints import load_checkpoint, load_model
from pneumoloc.training import (SAMPLERS, TrainConfig, epoch_order, predictions_table, prepare_data, train)

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


def test_corrupt_last_checkpoint_falls_back_to_best(runs):
    out = runs["root"] / "again"
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
