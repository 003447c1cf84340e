"""The recipe rule of run specs: a foreach entry's overrides may change a recipe key only when
the entry declares why (``recipe_differences``); the reason reaches the notebook."""
from __future__ import annotations

import pytest
from notebook_factory import notebook_dir, write_spec

from pneumoloc.runs import spec as runspec

PARAMS = ('run_dir = "x"  # run\nfigures_dir = ""  # figures\nbackbone = "a"  # model\nepochs = 4  # epochs\n'
          'lr = 0.001  # learning rate\nseed = 0  # seed\nrecipe_difference = ""  # declared reason\n')
BASE = ("name: t\nnotebooks:\n  - notebook: train\n    foreach: {backbone: [resnet18, vit_b_16]}\n"
        "    parameters: {epochs: 4}\n")


@pytest.fixture
def nbdir(tmp_path, monkeypatch):
    return notebook_dir(tmp_path, monkeypatch, PARAMS, {"train": ("x = 1",)})


def test_undeclared_recipe_change_is_refused(tmp_path, nbdir):
    body = BASE + "    overrides: {vit_b_16: {epochs: 15, lr: 0.003}}\n"
    with pytest.raises(ValueError, match=r"spec\.yaml.*vit_b_16.*\['epochs', 'lr'\].*recipe_differences"):
        runspec.load_spec(write_spec(tmp_path, body))


def test_declared_recipe_change_is_accepted_and_passed_to_the_notebook(tmp_path, nbdir):
    reason = "ViT-Ti/16 from scratch needs 15 epochs to leave chance"
    body = (BASE + "    overrides: {vit_b_16: {epochs: 15}}\n"
            f"    recipe_differences: {{vit_b_16: \"{reason}\"}}\n")
    stages = {s.name: s for s in runspec.load_spec(write_spec(tmp_path, body)).stages}
    assert stages["train[vit_b_16]"].parameters["recipe_difference"] == reason
    assert stages["train[vit_b_16]"].parameters["epochs"] == 15
    assert "recipe_difference" not in stages["train[resnet18]"].parameters


def test_overrides_outside_the_recipe_and_equal_values_need_no_declaration(tmp_path, nbdir):
    body = BASE + "    overrides: {vit_b_16: {seed: 3, epochs: 4}}\n"
    assert len(runspec.load_spec(write_spec(tmp_path, body)).stages) == 2


@pytest.mark.parametrize("declared, match", [
    ("{mobilenet: why}", r"recipe_differences.*\['mobilenet'\].*not in foreach"),
    ("{resnet18: why}", r"recipe_differences.*resnet18.*change no recipe key"),
    ("{vit_b_16: ''}", r"recipe_differences.*vit_b_16.*reason"),
])
def test_declarations_must_match_a_real_difference(tmp_path, nbdir, declared, match):
    body = BASE + f"    overrides: {{vit_b_16: {{epochs: 15}}}}\n    recipe_differences: {declared}\n"
    with pytest.raises(ValueError, match=match):
        runspec.load_spec(write_spec(tmp_path, body))


def test_tracked_specs_load_and_the_demo_trains_one_recipe():
    """Every tracked spec loads under the rule, and the demo trains all seven backbones under one
    recipe: its 02 entry overrides nothing and declares no difference."""
    import yaml

    from pneumoloc.environment import RUNS_DIR

    for path in sorted(RUNS_DIR.glob("*.yaml")):
        runspec.load_spec(path)
    demo = yaml.safe_load((RUNS_DIR / "demo.yaml").read_text())
    train = [e for e in demo["notebooks"] if e["notebook"] == "02_train_backbone"]
    assert len(train) == 1 and len(train[0]["foreach"]["backbone"]) == 7
    assert not train[0].get("overrides") and not train[0].get("recipe_differences")
    assert "compare_recipes" not in demo.get("parameters", {})
