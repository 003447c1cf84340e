"""Recipes: which settings make one, their ids and lines, and the rule for naming a best model."""
from __future__ import annotations

import json
from dataclasses import fields

import pandas as pd
import pytest

from pneumoloc.environment import RunPaths
from pneumoloc.training import recipe as R
from pneumoloc.training.config import TrainConfig


def test_recipe_keys_are_train_config_fields_and_leave_out_run_settings():
    names = {f.name for f in fields(TrainConfig)}
    assert set(R.RECIPE_KEYS) <= names
    assert {"seed", "device", "amp", "channels_last", "eval_batch_size", "backbone"} == names - set(R.RECIPE_KEYS)


def test_recipe_ids_and_lines():
    train = TrainConfig.from_dict({"loss": "bce", "epochs": 10, "image_size": 96, "scheduler": "cosine"}).as_dict()
    same = {**train, "seed": 7, "device": "cuda", "backbone": "vit_b_16"}  # not recipe keys
    assert R.recipe_id({"train": train}) == R.recipe_id({"train": same}) and R.recipe_id({"train": train}).startswith("r-")
    assert R.recipe_id({"train": {**train, "lr": 0.003}}) != R.recipe_id({"train": train})
    assert R.recipe_line({"train": train}) == ("bce loss, adamw lr 0.001, cosine, 10 epochs at 96 px, all images, "
                                               "from scratch")
    assert R.recipe_line({"train": train, "recipe_difference": "needs 15 epochs"}).endswith("(declared: needs 15 epochs)")
    assert R.recipe_id({"recipe": "published checkpoint", "train": {}}) == R.PUBLISHED
    assert R.recipe_id({}) == R.recipe_line({}) == R.NOT_RECORDED
    assert R.recipe_changes(train, {"epochs": 15, "seed": 3, "lr": 0.001}) == ["epochs"]


def _run(tmp_path, models: dict[str, tuple[dict, float | None]]) -> RunPaths:
    run = RunPaths(root=tmp_path, figures=tmp_path / "fig")
    for name, (train, auc) in models.items():
        d = run.model_dir(name)
        d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps({"train": train}))
        (d / "metrics.json").write_text(json.dumps({} if auc is None else {"best_val_roc_auc": auc}))
    return run


def test_selection_skips_undertrained_and_other_recipe_models(tmp_path):
    base = TrainConfig().as_dict()
    run = _run(tmp_path, {"resnet18": (base, 0.97), "mobilenet_v2": (base, 0.79), "densenet121": (base, 0.90),
                          "vit_b_16": ({**base, "epochs": 15}, 0.99), "resnet50": (base, None)})
    table = R.model_recipes(run, ["resnet18", "mobilenet_v2", "densenet121", "vit_b_16", "resnet50"])
    assert table["undertrained"].to_dict() == {"resnet18": False, "mobilenet_v2": True, "densenet121": False,
                                               "vit_b_16": False, "resnet50": True}
    pick = R.selection_pool(table)
    assert pick.pool == ["resnet18", "densenet121"] and pick.claim
    assert set(pick.excluded) == {"mobilenet_v2", "vit_b_16", "resnet50"}
    assert "recipe" in pick.excluded["vit_b_16"] and "undertrained" in pick.excluded["mobilenet_v2"]
    assert R.selection_pool(table, compare_recipes=True).pool == ["resnet18", "densenet121", "vit_b_16"]


def test_selection_without_a_trained_model_or_with_a_recipe_tie(tmp_path):
    table = pd.DataFrame({"recipe": ["r-a", "r-b"], "val_roc_auc": [0.6, 0.7], "undertrained": [True, True]},
                         index=["a", "b"])
    pick = R.selection_pool(table)
    assert pick.pool == ["a", "b"] and not pick.claim and "no best-model claim" in pick.message
    tied = table.assign(undertrained=False)
    with pytest.raises(ValueError, match="compare_recipes = True"):
        R.selection_pool(tied)
    assert R.selection_pool(tied, compare_recipes=True).pool == ["a", "b"]


def test_an_imported_model_has_the_published_recipe():
    from pneumoloc.training.imported import IMPORTED_RECIPE

    assert R.PUBLISHED == IMPORTED_RECIPE
    assert R.recipe_line({"recipe": IMPORTED_RECIPE, "train": {}}) == "published checkpoint"
