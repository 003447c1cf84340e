"""What a model learned under: its *recipe*, the training settings that change what it learns.

Two models compare architectures only when they share a recipe; otherwise a table ranks the
recipes. The recipe keys are listed once here (:data:`RECIPE_KEYS`): input size, length of
training and data, optimizer and schedule, loss, sampler, augmentation, initialisation and head.
The seed, device, mixed precision, memory layout and evaluation batch are not recipe keys (they
change the run, not the method: seeds are compared as variance).

A model trained by notebook 02 stores its ``TrainConfig`` as ``config.json["train"]``, and, when
the run spec declares why its recipe differs (``recipe_differences`` of a ``foreach`` entry,
:mod:`pneumoloc.runs.spec`), that reason as ``config.json["recipe_difference"]``. An imported
model (:mod:`pneumoloc.training.imported`) has the recipe ``"published checkpoint"``.

:func:`model_recipes` gathers, per model of a run, the recipe id and line, the declared reason,
the validation ROC-AUC and the ``undertrained`` flag; :func:`selection_pool` applies the rule
every "best model" claim follows (notebooks 04 and 05, :func:`pneumoloc.ensembles.summary.fit_systems`):

* ``undertrained`` models (validation ROC-AUC below ``undertrained_below``, default 0.80) are
  left out. Validation, not test, decides: a rule that removes models from a selection must not
  look at the split the selection is judged on.
* among the rest, a best model is named only within one recipe: the recipe shared by most of
  them (a tie is an error naming the recipes); models of another recipe are set aside with a
  message, unless ``compare_recipes=True``.
* when every model is undertrained, all are kept and the message says that no best-model claim
  can be made.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Sequence

import pandas as pd

__all__ = ["RECIPE_KEYS", "PUBLISHED", "NOT_RECORDED", "UNDERTRAINED_BELOW", "recipe_of", "recipe_id",
           "recipe_line", "recipe_changes", "model_recipes", "Selection", "selection_pool"]

# TrainConfig fields that change what a model learns (pneumoloc.training.config.TrainConfig).
RECIPE_KEYS = ("task", "image_size", "epochs", "max_train_images", "batch_size", "optimizer", "lr",
               "weight_decay", "scheduler", "warmup_epochs", "plateau_factor", "plateau_patience", "loss",
               "focal_gamma", "focal_alpha", "sampler", "patience", "augment", "pretrained", "weights", "head",
               "head_options")
PUBLISHED = "published checkpoint"  # the recipe of an imported model (training.imported stores it)
NOT_RECORDED = "recipe not recorded"  # a model folder without config.json or its train dict
UNDERTRAINED_BELOW = 0.80  # validation ROC-AUC below which a model is marked undertrained


def recipe_of(config: dict) -> dict[str, Any]:
    """The recipe keys of a ``config.json`` (or of a bare ``TrainConfig.as_dict()``); ``{"recipe":
    "published checkpoint"}`` for an imported model, ``{}`` when nothing was recorded."""
    if config.get("recipe"):
        return {"recipe": config["recipe"]}
    train = config["train"] if "train" in config else config
    return {k: train[k] for k in RECIPE_KEYS if k in train}


def recipe_id(config: dict) -> str:
    """A short name of the recipe: ``"published checkpoint"``, ``"recipe not recorded"``, or
    ``"r-"`` and 6 hex digits of the SHA-256 of its keys (equal recipes, equal ids)."""
    recipe = recipe_of(config)
    if not recipe:
        return NOT_RECORDED
    if "recipe" in recipe:
        return str(recipe["recipe"])
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()
    return f"r-{digest[:6]}"


def recipe_line(config: dict) -> str:
    """One line describing how a model was trained, e.g. ``"bce loss, adamw lr 0.003, cosine, 10
    epochs at 96 px, all images, from scratch"``; the declared reason follows when the spec gave one."""
    recipe = recipe_of(config)
    if not recipe:
        return NOT_RECORDED
    if "recipe" in recipe:
        return str(recipe["recipe"])
    t = recipe
    init = "pretrained" if t.get("pretrained") or t.get("weights") else "from scratch"
    images = f"{t['max_train_images']} images" if t.get("max_train_images") else "all images"
    line = (f"{t.get('loss', '?')} loss, {t.get('optimizer', '?')} lr {t.get('lr', '?')}, {t.get('scheduler', '?')}, "
            f"{t.get('epochs', '?')} epochs at {t.get('image_size', '?')} px, {images}, {init}")
    reason = config.get("recipe_difference")
    return f"{line} (declared: {reason})" if reason else line


def recipe_changes(base: dict, other: dict) -> list[str]:
    """Recipe keys whose value differs between two parameter or config dicts (keys absent from
    ``other`` are not changes: it may be a partial override)."""
    a, b = recipe_of(base), recipe_of(other)
    return sorted(k for k in b if k in RECIPE_KEYS and a.get(k) != b[k])


def _val_auc(metrics: dict) -> float:
    value = metrics.get("best_val_roc_auc")
    return float(value) if isinstance(value, (int, float)) else float("nan")


def model_recipes(run, models: Sequence[str], undertrained_below: float = UNDERTRAINED_BELOW) -> pd.DataFrame:
    """One row per model (index): ``recipe`` (id), ``recipe_line``, ``recipe_difference`` (the
    spec's declared reason, '' if none), ``val_roc_auc`` (notebook 02's ``metrics.json``) and
    ``undertrained`` (validation ROC-AUC below ``undertrained_below``; a missing AUC counts as
    undertrained, since nothing shows the model learned)."""
    from ..storage import load_json

    rows = []
    for model in models:
        folder = run.model_dir(model)
        config = load_json(folder / "config.json") if (folder / "config.json").exists() else {}
        metrics = load_json(folder / "metrics.json") if (folder / "metrics.json").exists() else {}
        auc = _val_auc(metrics)
        rows.append({"model": model, "recipe": recipe_id(config), "recipe_line": recipe_line(config),
                     "recipe_difference": config.get("recipe_difference", ""), "val_roc_auc": auc,
                     "undertrained": not auc >= undertrained_below})
    return pd.DataFrame(rows, columns=["model", "recipe", "recipe_line", "recipe_difference", "val_roc_auc",
                                       "undertrained"]).set_index("model")


@dataclass
class Selection:
    """Which models a best-model claim may choose from, and why the others may not.

    Attributes:
        pool: the eligible models, in the order given.
        excluded: model -> reason it is left out (``undertrained ...`` or ``recipe ...``).
        claim: False when every model is undertrained: the pool then holds all and names no best.
        message: one paragraph saying the above, for the notebook's output.
    """

    pool: list[str]
    excluded: dict[str, str]
    claim: bool
    message: str


def selection_pool(recipes: pd.DataFrame, compare_recipes: bool = False) -> Selection:
    """The models a "best model" may be chosen among (module docstring), from :func:`model_recipes`.

    Raises:
        ValueError: the trained models split evenly between recipes and ``compare_recipes`` is
            False: no recipe is the run's own, so the message asks to choose ``backbones`` or to
            set ``compare_recipes = True``.
    """
    models = list(recipes.index)
    under = recipes["undertrained"].astype(bool)
    trained = [m for m in models if not under[m]]
    excluded = {m: f"undertrained (validation ROC-AUC {recipes.loc[m, 'val_roc_auc']:.3f})" for m in models if under[m]}
    if not trained:
        aucs = ", ".join(f"{m} {recipes.loc[m, 'val_roc_auc']:.3f}" for m in models)
        return Selection(models, {}, False, f"every model is undertrained (validation ROC-AUC {aucs}): no "
                         "best-model claim; the reference below is named for comparison only")
    counts = recipes.loc[trained, "recipe"].value_counts()
    if len(counts) > 1 and not compare_recipes:
        if counts.iloc[0] == counts.iloc[1]:
            tied = {r: [m for m in trained if recipes.loc[m, "recipe"] == r] for r in counts.index[counts == counts.iloc[0]]}
            raise ValueError(f"the trained models split evenly between recipes {tied}: no best model can be named "
                             "across different recipes; list the models of one recipe in the notebook parameter "
                             "backbones, or set compare_recipes = True to compare recipes knowingly")
        main = counts.index[0]
        excluded.update({m: f"recipe {recipes.loc[m, 'recipe']} differs from the run's {main}"
                         for m in trained if recipes.loc[m, "recipe"] != main})
        trained = [m for m in trained if recipes.loc[m, "recipe"] == main]
    left_out = "; ".join(f"{m}: {why}" for m, why in excluded.items()) or "none"
    scope = "across recipes (compare_recipes = True)" if len(counts) > 1 and compare_recipes else "within one recipe"
    return Selection(trained, excluded, True, f"best model chosen {scope} among {trained}; left out: {left_out}")
