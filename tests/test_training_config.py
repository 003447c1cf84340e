"""The training recipe built from a notebook's parameters."""
from __future__ import annotations

import pytest

from pneumoloc.runs.params import declared_parameters
from pneumoloc.training.config import TrainConfig


def test_from_params_takes_the_recipe_keys_of_notebook_02():
    params = {n: p.default for n, p in declared_parameters("02_train_backbone").items()}
    cfg = TrainConfig.from_params({**params, "epochs": 3})
    assert cfg.epochs == 3 and cfg.backbone == params["backbone"] and not hasattr(cfg, "n_boot")


def test_from_params_still_refuses_ill_typed_options():
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig.from_params({"run_dir": "x", "epochs": "3"})
